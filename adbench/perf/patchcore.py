"""PatchCore on a toy category: backbone floor, fit, coreset, inference, peak RSS, kNN backend."""

from __future__ import annotations

import tempfile

from adbench.perf import benchmark, fit_and_predict, prepare, report
from adbench.runner import predict_category


@benchmark("patchcore")
def main(category: str = "brick") -> None:
    cache_dir = tempfile.mkdtemp(prefix="adbench-perf-cache-")  # a cold disk tier
    bench = prepare("patchcore", [f"cache.dir={cache_dir}"], category)
    bench.ctx.features.memory.clear()
    fit_s, cold, peak_rss_mb = fit_and_predict(bench)
    method, ctx, cat, floor = bench.method, bench.ctx, bench.category, bench.floor_ms
    cold_ms = 1000 * cold["infer_s"] / len(cat.test)
    warm_ms = 1000 * predict_category(method, ctx)["infer_s"] / len(cat.test)
    report(f"patchcore toy/{category}", {
        "n_train": len(cat.train), "bank": int(method.memory_bank.shape[0]),
        "backbone_floor_ms_per_img": floor, "fit_s": fit_s, "coreset_s": method.timings["coreset_s"],
        "infer_ms_per_img": cold_ms, "infer_vs_floor": cold_ms / floor,
        "infer_ms_per_img_cached_feats": warm_ms, "peak_rss_mb": peak_rss_mb, "knn": method.info["knn"],
    })
