"""Benchmark of :mod:`adbench.stats` on one core: ``python -m adbench.perf.stats``.

Times the bootstrap intervals (resample weights, replicates, percentile intervals) of the image
metrics for ``--images`` binormal test scores, and of all metrics for ``--n`` random anomaly maps
of ``--size`` pixels a side (:func:`adbench.perf.metrics.make_inputs`: defects in half the images),
with the BLAS/OpenMP thread pools limited to one thread. For scale it also times one
:func:`adbench.metrics.evaluate` of the maps, the cost of one literal resample. Prints seconds;
it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from adbench.metrics import evaluate
from adbench.perf import benchmark
from adbench.perf.metrics import best_time, make_inputs
from adbench.stats import N_BOOT, N_BOOT_PIXEL, bootstrap


def binormal_scores(n: int, separation: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(scores float64 [n], labels int [n]): the first n // 2 images good with scores N(0, 1), the
    rest defective with scores N(separation, 1)."""
    labels = (np.arange(n) >= n // 2).astype(int)
    return np.random.default_rng(seed).normal(size=n) + separation * labels, labels


def show(name: str, seconds: tuple[float, float]) -> None:
    """Print one timing line: ``name``, best and median seconds."""
    print(f"{name:44s} {seconds[0]:7.3f} s  (median {seconds[1]:.3f} s)", flush=True)


@benchmark("stats")
def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options, run the timings and print one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="test images of the image-metric run")
    parser.add_argument("--n-boot", type=int, default=N_BOOT, help="image-metric resamples")
    parser.add_argument("--n", type=int, default=100, help="test images of the pixel-metric run")
    parser.add_argument("--size", type=int, default=256, help="map side in pixels")
    parser.add_argument("--n-boot-pixel", type=int, default=N_BOOT_PIXEL, help="pixel-metric resamples")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    args = parser.parse_args(argv)
    with threadpool_limits(limits=1):
        pools = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()) or "none"
        print(f"thread pools: {pools}; best/median of {args.repeat}")
        scores, labels = binormal_scores(args.images)
        image_run = partial(bootstrap, scores, labels, n_boot=args.n_boot)
        show(f"image CIs: {args.images} images, {args.n_boot} resamples",
             best_time(lambda: image_run().intervals(), args.repeat))
        scores, labels, maps, masks = make_inputs(args.n, args.size, np.float32)
        print(f"maps: {args.n} x {args.size}x{args.size} float32, {np.count_nonzero(labels)} defective, "
              f"{np.count_nonzero(masks)} defect pixels")
        one_resample = partial(evaluate, scores, labels, maps, masks)
        show("one evaluate (= one literal resample)", best_time(one_resample, args.repeat))
        pixel_run = partial(bootstrap, scores, labels, maps, masks, n_boot=args.n_boot,
                            n_boot_pixel=args.n_boot_pixel)
        show(f"all CIs, {args.n_boot_pixel} pixel resamples",
             best_time(lambda: pixel_run().intervals(), args.repeat))


if __name__ == "__main__":
    main()
