"""Benchmark of :mod:`adbench.metrics` on one core: ``python -m adbench.perf.metrics``.

Times :func:`adbench.metrics.aupro` and the full :func:`adbench.metrics.evaluate` (image and pixel
metrics) on random anomaly maps [N, S, S] with rectangular defects in half of the images, with
the BLAS/OpenMP thread pools of numpy, scipy and torch limited to one thread, against the
previous implementation: the pixel metrics from one sort of all pixels (:func:`pro_curve`,
``_pixel_counts``; its regions are now labelled in the images with defects only, as in the fast
path). Prints seconds, the ratio and the largest difference of a value; it is a benchmark, not a
test.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from adbench.metrics import (
    IMAGE_KEYS,
    PIXEL_KEYS,
    _auroc,
    _average_precision,
    _f1_max,
    _finite,
    _normalised_area,
    _pixel_counts,
    _pro_points,
    aupro,
    evaluate,
    pro_curve,
)
from adbench.perf import benchmark

# anomalib's AUPRO on 100 float32 maps of 256 x 256, one core: quoted from issue 26 (measured by an
# earlier session on this kind of machine), not re-measured; anomalib is no dependency.
ANOMALIB_AUPRO_S = 1.4


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


def full_sort_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """AUPRO of maps [N, H, W] and masks bool [N, H, W] from :func:`pro_curve`, one sort of all pixels."""
    return _normalised_area(*pro_curve(maps, masks), limit)


def full_sort_evaluate(
    scores: np.ndarray, labels: np.ndarray, maps: np.ndarray, masks: np.ndarray, aupro_limit: float = 0.3
) -> dict[str, float]:
    """:func:`evaluate` (inputs as there) with the pixel metrics from one sort of all pixels."""
    results = evaluate(scores, labels)
    tps, fps, pro = _pixel_counts(_finite("anomaly_maps", maps, ndim=3), masks)
    results["pixel_auroc"] = _auroc(tps, fps)
    results["pixel_ap"] = _average_precision(tps, fps)
    results["pixel_f1max"] = _f1_max(tps, fps)
    results["pixel_aupro"] = _normalised_area(*_pro_points(fps, pro), aupro_limit)
    results["mad"] = float(np.mean([results[key] for key in IMAGE_KEYS + PIXEL_KEYS]))
    return results


def largest_difference(a: float | dict[str, float], b: float | dict[str, float]) -> float:
    """max |a - b| over the values of two results of one kind (floats, or dicts with the same keys)."""
    pairs = [(a[key], b[key]) for key in a] if isinstance(a, dict) and isinstance(b, dict) else [(a, b)]
    return max(abs(x - y) for x, y in pairs)


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(best, median) wall-clock seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


@benchmark("metrics")
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
            runs = {  # name: (previous implementation, fast path)
                "aupro": (partial(full_sort_aupro, maps, masks), partial(aupro, maps, masks)),
                "evaluate (image + pixel)": (
                    partial(full_sort_evaluate, scores, labels, maps, masks),
                    partial(evaluate, scores, labels, maps, masks),
                ),
            }
            for name, (previous, fast) in runs.items():
                difference = largest_difference(previous(), fast())
                (best_previous, median_previous), (best, median) = (
                    best_time(fn, args.repeat) for fn in (previous, fast)
                )
                print(
                    f"{np.dtype(dtype).name:8s} {name:26s} full sort {best_previous:6.3f} s (median "
                    f"{median_previous:.3f}), fast {best:6.3f} s (median {median:.3f}): "
                    f"{best_previous / best:4.1f}x, values differ by {difference:.1e}"
                )
                if name == "aupro" and dtype is np.float32 and (args.n, args.size) == (100, 256):
                    print(f"{'':35s}anomalib AUPRO {ANOMALIB_AUPRO_S} s (quoted, not re-measured): "
                          f"{ANOMALIB_AUPRO_S / best:4.1f}x")


if __name__ == "__main__":
    main()
