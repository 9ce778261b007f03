"""GLASS on a toy category (``method=glass_cpu``): training step and inference time vs the backbone floor.

Prints the backbone-only forward time per image (the floor), the GLASS training step time (one
batch of 8: live backbone on the LAS images, 21 discriminator calls of Global Anomaly Synthesis,
the LAS focal loss and both optimiser steps) and the share of it spent on anomaly synthesis
(Perlin masks, textures, augmentations), inference ms per image from cached features and with
the backbone, and peak RSS. ``epochs`` is cut to 1 here: a benchmark, not a training run.
"""

from __future__ import annotations

import tempfile

from adbench.perf import benchmark, fit_and_predict, prepare, report
from adbench.runner import predict_category


@benchmark("glass")
def main(category: str = "brick", method: str = "glass_cpu") -> None:
    cache_dir = tempfile.mkdtemp(prefix="adbench-perf-cache-")  # a cold disk tier
    bench = prepare(method, ["method.params.epochs=1", f"cache.dir={cache_dir}"], category)
    fit_s, out, peak_rss_mb = fit_and_predict(bench)
    model, floor, params = bench.method, bench.floor_ms, bench.cfg.method.params
    n_test = len(bench.category.test)
    first = 1000 * out["infer_s"] / n_test  # extracts the test features and fills the cache
    warm = 1000 * predict_category(model, bench.ctx)["infer_s"] / n_test
    bench.ctx.features.enabled = False  # cache off: the backbone runs for every test image
    cold = 1000 * predict_category(model, bench.ctx)["infer_s"] / n_test
    steps = int(model.timings["steps"])
    report(f"{method} toy/{category}", {
        "resolution": int(bench.cfg.method.image.crop), "dims": f"{params.target_dim}/{params.dsc_hidden}",
        "backbone_floor_ms_per_img": floor, "train_step_ms": model.timings["step_ms"],
        "synthesis_ms_per_step": 1000 * model.timings["synthesis_s"] / max(steps, 1),
        "step_vs_floor(8 img)": model.timings["step_ms"] / (8 * floor), "fit_s(1 epoch)": fit_s,
        "peak_rss_mb": peak_rss_mb,
    })
    report(f"{method} toy/{category} infer", {
        "ms_per_img(cache off)": cold, "vs_floor": cold / floor, "ms_per_img(cached feats)": warm,
        "ms_per_img(first pass, fills cache)": first,
    })
