"""``make perf``: benchmarks that print numbers (never a test).

Each module of this package registers its section with ``@benchmark("<name>")`` on its ``main``;
``python -m adbench.perf`` runs every registered section in name order, ``python -m adbench.perf
patchcore coreset`` only those. Shared helpers for the sections live here.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from adbench.config import compose
from adbench.data import Category, iterate_batches
from adbench.devices import resolve_device, synchronize
from adbench.method import Context, Method
from adbench.runner import (
    PeakMemory,
    build_context,
    build_method,
    fit_method,
    load_categories,
    predict_category,
)


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall-clock seconds of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def backbone_floor_ms(ctx: Context, category: Category, repeat: int = 2) -> float:
    """Backbone-only forward time per test image (ms): the floor any feature method is compared to."""
    assert ctx.features is not None
    images = torch.cat([b.images for b in iterate_batches(category.test, ctx.transform, ctx.batch_size)])
    backbone = ctx.features.backbone

    def forward() -> None:
        with torch.no_grad():
            for start in range(0, len(images), ctx.batch_size):
                backbone(images[start : start + ctx.batch_size].to(ctx.device))
        synchronize(ctx.device)

    return 1000 * timed(forward, repeat) / len(images)


def report(name: str, values: dict[str, float | str]) -> None:
    """Print one benchmark line: ``name  key=value ...``."""
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
    print(f"{name:<28s} " + "  ".join(parts), flush=True)


@dataclass
class Bench:
    """One method set up on one category for a benchmark (see :func:`prepare`)."""

    cfg: DictConfig
    category: Category
    device: torch.device
    method: Method
    ctx: Context
    floor_ms: float


def prepare(method_name: str, overrides: list[str], category: str = "brick") -> Bench:
    """``method_name`` built for the toy ``category`` (``overrides`` on top), with its context and
    the backbone floor (ms per test image)."""
    cfg = compose([f"method={method_name}", "data=toy", f"data.category={category}", "progress=false",
                   *overrides])
    (cat,) = load_categories(cfg)
    device = resolve_device(cfg.device)
    method = build_method(cfg).to(device)
    ctx = build_context(cfg, method, cat, device)
    return Bench(cfg, cat, device, method, ctx, backbone_floor_ms(ctx, cat))


def fit_and_predict(bench: Bench) -> tuple[float, dict[str, Any], float]:
    """Fit, then predict the test images, under :class:`PeakMemory` → (fit seconds, predictions as
    :func:`adbench.runner.predict_category` returns them, peak RSS in MB)."""
    with PeakMemory(bench.device) as memory:
        fit_s = fit_method(bench.method, bench.ctx)
        out = predict_category(bench.method, bench.ctx)
    return fit_s, out, memory.peak_rss_mb


BENCHMARKS: dict[str, Callable[[], object]] = {}


def benchmark(name: str) -> Callable[[Callable[[], object]], Callable[[], object]]:
    """Decorator: register a section's ``main`` as the benchmark ``name`` of ``make perf``."""

    def wrap(fn: Callable[[], object]) -> Callable[[], object]:
        if name in BENCHMARKS and BENCHMARKS[name] is not fn:
            raise ValueError(f"benchmark {name!r} is registered twice")
        BENCHMARKS[name] = fn
        return fn

    return wrap


def main(argv: list[str] | None = None) -> int:
    for module in pkgutil.iter_modules(__path__):  # each section module registers itself
        importlib.import_module(f"{__name__}.{module.name}")
    wanted = set(argv if argv is not None else sys.argv[1:])
    unknown = wanted - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; registered: {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    print(f"adbench perf — torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"cuda={torch.cuda.is_available()}", flush=True)
    for name in sorted(wanted or BENCHMARKS):
        print(f"\n== {name}", flush=True)
        saved_argv, sys.argv = sys.argv, [name]  # sections parse their own (empty) arguments
        try:
            BENCHMARKS[name]()
        finally:
            sys.argv = saved_argv
    return 0
