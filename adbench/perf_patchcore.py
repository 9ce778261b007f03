"""PatchCore on a toy category: backbone floor, fit, coreset, inference, peak RSS."""

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


def main(category: str = "brick") -> None:
    cache_dir = tempfile.mkdtemp(prefix="adbench-perf-cache-")  # a cold disk tier
    cfg = compose(["method=patchcore", "data=toy", f"data.category={category}", "progress=false",
                   f"cache.dir={cache_dir}"])
    (cat,) = load_categories(cfg)
    device = resolve_device(cfg.device)
    method = build_method(cfg).to(device)
    ctx = build_context(cfg, method, cat, device)
    floor = backbone_floor_ms(ctx, cat)
    ctx.features.memory.clear()
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        method.fit(ctx)
        fit_s = time.perf_counter() - start
        cold = predict_category(method, ctx)
    cold_ms = 1000 * cold["infer_s"] / len(cat.test)
    warm_ms = 1000 * predict_category(method, ctx)["infer_s"] / len(cat.test)
    report(f"patchcore toy/{category}", {
        "n_train": len(cat.train), "bank": int(method.memory_bank.shape[0]),
        "backbone_floor_ms_per_img": floor, "fit_s": fit_s, "coreset_s": method.timings["coreset_s"],
        "infer_ms_per_img": cold_ms, "infer_vs_floor": cold_ms / floor,
        "infer_ms_per_img_cached_feats": warm_ms, "peak_rss_mb": memory.peak_rss_mb,
    })
