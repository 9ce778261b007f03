"""Feature cache, PaDiM and CFlow on a toy category, next to the backbone floor.

``main()`` (run by ``make perf``): extraction time per image with a cold cache, a warm memory tier
and a warm disk tier (a fresh process); PaDiM fit / inference; CFlow (CPU preset, one sub-epoch)
seconds per sub-epoch and inference. ``python -c "from adbench.perf.features import padim_memory;
padim_memory()"`` measures PaDiM's peak RSS for a 200-image category at 224 px with 550 channels
(WRN-50-2 layers 1-3; random weights suffice for memory and time).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch

from adbench.config import compose
from adbench.devices import resolve_device
from adbench.features import FeatureExtractor, memory_tier
from adbench.perf import backbone_floor_ms, benchmark, fit_and_predict, prepare, report
from adbench.runner import (
    PeakMemory,
    build_context,
    build_method,
    fit_method,
    load_categories,
)


def _extract_all(features: FeatureExtractor, ctx, category) -> float:
    """Seconds to get the features of every train and test image of ``category``."""
    from adbench.data import iterate_batches

    start = time.perf_counter()
    for samples in (category.train, category.test):
        for batch in iterate_batches(samples, ctx.transform, ctx.batch_size):
            features(batch)
    return time.perf_counter() - start


def cache_tiers(category: str = "brick") -> None:
    """Cold vs warm (memory, disk) extraction per image, PatchCore/PaDiM/CFlow layer union."""
    cache_dir = Path(tempfile.mkdtemp(prefix="adbench-perf-cache-"))
    try:
        cfg = compose(["method=padim", "data=toy", f"data.category={category}", "progress=false",
                       f"cache.dir={cache_dir}"])
        (cat,) = load_categories(cfg)
        device = resolve_device(cfg.device)
        method = build_method(cfg)
        ctx = build_context(cfg, method, cat, device)
        n = len(cat.train) + len(cat.test)
        floor = backbone_floor_ms(ctx, cat)
        memory_tier(device, float(cfg.cache.max_gb)).clear()
        cold = _extract_all(ctx.features, ctx, cat)
        warm_memory = _extract_all(ctx.features, ctx, cat)
        memory_tier(device, float(cfg.cache.max_gb)).clear()
        fresh = build_context(cfg, method, cat, device).features
        warm_disk = _extract_all(fresh, ctx, cat)
        disk_mb = sum(p.stat().st_size for p in cache_dir.rglob("*.feat")) / 2**20
        report(f"cache toy/{category} {cfg.method.image.crop}px", {
            "images": n, "backbone_floor_ms_per_img(padim layers)": floor,
            "cold_ms_per_img(layer1-4 + disk write)": 1000 * cold / n,
            "warm_memory_ms_per_img": 1000 * warm_memory / n, "warm_disk_ms_per_img": 1000 * warm_disk / n,
            "disk_mb": disk_mb, "disk_hits": fresh.stats.disk_hits,
        })
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def method_timings(method_name: str, overrides: list[str], category: str = "brick") -> None:
    """Fit and inference of one method with warm features, next to the backbone floor."""
    bench = prepare(method_name, overrides, category)
    cfg, cat, floor = bench.cfg, bench.category, bench.floor_ms
    _extract_all(bench.ctx.features, bench.ctx, cat)  # warm: the fit below reads cached features
    fit_s, out, peak_rss_mb = fit_and_predict(bench)
    infer_ms = 1000 * out["infer_s"] / len(cat.test)
    values: dict[str, float | str] = {"n_train": len(cat.train), "backbone_floor_ms_per_img": floor,
                                      "fit_s": fit_s}
    params = cfg.method.params
    if "sub_epochs" in params:
        values["s_per_sub_epoch"] = fit_s / (params.meta_epochs * params.sub_epochs)
    values.update({"infer_ms_per_img(cached feats)": infer_ms, "infer_vs_floor": infer_ms / floor,
                   "peak_rss_mb": peak_rss_mb})
    report(f"{method_name} toy/{category} {' '.join(overrides)}".strip(), values)


def padim_memory(n_images: int = 200, channels: int = 550) -> None:
    """Peak RSS of PaDiM's fit on ``n_images`` training images at 256 → 224 with WRN-50-2 layers
    1-3 (1792 channels, ``channels`` kept), random backbone weights, a synthetic folder category."""
    import numpy as np
    from PIL import Image

    root = Path(tempfile.mkdtemp(prefix="adbench-perf-padim-"))
    try:
        rng = np.random.default_rng(0)
        for split, folder, count in (("train", "good", n_images), ("test", "good", 4), ("test", "bad", 4)):
            path = root / "synthetic" / split / folder
            path.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path / f"{i:03d}.png")
        cfg = compose(["method=padim", "data=folder", f"data.root={root}", "data.category=synthetic",
                       "backbone=wide_resnet50_2", "backbone.weights=random", "backbone.hub=false",
                       f"method.params.n_features={channels}", "progress=false", "cache.enabled=false"])
        (cat,) = load_categories(cfg)
        device = resolve_device(cfg.device)
        method = build_method(cfg).to(device)
        ctx = build_context(cfg, method, cat, device)
        with PeakMemory(device) as memory:
            fit_s = fit_method(method, ctx)
        report(f"padim memory {n_images} imgs 224px d={channels}", {
            "fit_s": fit_s, "peak_rss_mb": memory.peak_rss_mb, "peak_gpu_mb": memory.peak_gpu_mb,
            "model_mb": (method.precision.numel() + method.mean.numel()) * 4 / 2**20,
            "threads": torch.get_num_threads(),
        })
    finally:
        shutil.rmtree(root, ignore_errors=True)


@benchmark("features")
def main() -> None:
    cache_tiers()
    method_timings("padim", [])
    method_timings("cflow_cpu", ["method.params.meta_epochs=1", "method.params.sub_epochs=1"])
