"""GLASS on a toy category (``method=glass_cpu``): training step and inference time vs the backbone floor.

Prints the backbone-only forward time per image (the floor), the GLASS training step time (one
batch of 8: live backbone on the LAS images, 21 discriminator calls of Global Anomaly Synthesis,
the LAS focal loss and both optimiser steps) and the share of it spent on anomaly synthesis
(Perlin masks, textures, augmentations), inference ms per image from cached features and with
the backbone, and peak RSS. ``epochs`` is cut to 1 here: a benchmark, not a training run.
"""

from __future__ import annotations

import tempfile
import time

from adbench.perf import backbone_floor_ms, compose, report
from adbench.runner import (
    PeakMemory,
    build_context,
    build_method,
    load_categories,
    predict_category,
    resolve_device,
)


def main(category: str = "brick", method: str = "glass_cpu") -> None:
    cache_dir = tempfile.mkdtemp(prefix="adbench-perf-cache-")  # a cold disk tier
    cfg = compose([f"method={method}", "data=toy", f"data.category={category}", "progress=false",
                   "method.params.epochs=1", f"cache.dir={cache_dir}"])
    (cat,) = load_categories(cfg)
    device = resolve_device(cfg.device)
    model = build_method(cfg).to(device)
    ctx = build_context(cfg, model, cat, device)
    floor = backbone_floor_ms(ctx, cat)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        model.train()
        model.fit(ctx)
        fit_s = time.perf_counter() - start
        model.eval()
        out = predict_category(model, ctx)
    infer_ms = 1000 * out["infer_s"] / len(cat.test)
    steps = int(model.timings["steps"])
    report(f"{method} toy/{category}", {
        "resolution": int(cfg.method.image.crop),
        "dims": f"{cfg.method.params.target_dim}/{cfg.method.params.dsc_hidden}",
        "backbone_floor_ms_per_img": floor, "train_step_ms": model.timings["step_ms"],
        "synthesis_ms_per_step": 1000 * model.timings["synthesis_s"] / max(steps, 1),
        "step_vs_floor(8 img)": model.timings["step_ms"] / (8 * floor), "fit_s(1 epoch)": fit_s,
        "infer_ms_per_img(cached feats)": infer_ms, "infer_vs_floor": infer_ms / floor,
        "peak_rss_mb": memory.peak_rss_mb,
    })
    ctx.features.memory.clear()
    ctx.features.disk = None  # no disk tier either: the backbone runs on every test image
    out = predict_category(model, ctx)
    cold = 1000 * out["infer_s"] / len(cat.test)
    report(f"{method} toy/{category} cold",
           {"infer_ms_per_img(backbone incl.)": cold, "infer_vs_floor": cold / floor})
