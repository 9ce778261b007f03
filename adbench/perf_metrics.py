"""Benchmark of :mod:`adbench.metrics` on one core: ``python -m adbench.perf_metrics``.

Times :func:`adbench.metrics.aupro` and the full :func:`adbench.metrics.evaluate` (image and pixel
metrics) on random anomaly maps [N, S, S] with rectangular defects in half of the images, with
the BLAS/OpenMP thread pools of numpy, scipy and torch limited to one thread. Prints seconds; it
is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from adbench.metrics import aupro, evaluate


def make_inputs(
    n: int, size: int, dtype: type, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random test set: (image_scores float [n], image_labels int [n], maps [n, size, size] of
    ``dtype``, masks bool [n, size, size]). The first half of the images hold 1-3 rectangular
    defects of 3-40 pixels a side, scored 0.5 higher on average than the normal pixels."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    side = min(40, size // 2)
    for i in range(n // 2):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - side, 2)
            h, w = rng.integers(3, side + 1, 2)
            masks[i, y : y + h, x : x + w] = True
    maps = (rng.random(masks.shape) + 0.5 * masks).astype(dtype)
    return maps.max(axis=(1, 2)).astype(np.float64), masks.any(axis=(1, 2)).astype(int), maps, masks


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(best, median) wall-clock seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options, run the timings and print one line per (dtype, measurement)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of test images")
    parser.add_argument("--size", type=int, default=256, help="map side in pixels")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    args = parser.parse_args(argv)
    with threadpool_limits(limits=1):
        pools = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()) or "none"
        print(f"thread pools: {pools}; {args.n} maps {args.size}x{args.size}; best/median of {args.repeat}")
        # float64 maps that float32 cannot represent exactly take the slower float64 ranking.
        for dtype in (np.float32, np.float64):
            scores, labels, maps, masks = make_inputs(args.n, args.size, dtype)
            if dtype is np.float64:
                maps += np.random.default_rng(1).random(maps.shape) * 1e-6
            runs = {
                "aupro": partial(aupro, maps, masks),
                "evaluate (image + pixel)": partial(evaluate, scores, labels, maps, masks),
            }
            for name, fn in runs.items():
                best, median = best_time(fn, args.repeat)
                print(f"{np.dtype(dtype).name:8s} {name:26s} {best:7.3f} s  (median {median:.3f} s)")


if __name__ == "__main__":
    main()
