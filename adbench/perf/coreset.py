"""Benchmark of :mod:`adbench.components.coreset` (prints numbers; not a test).

``python -m adbench.perf.coreset`` times the greedy coreset of 100k x 1024 synthetic patch features at
10% and 1% on two data sets: ``clustered`` (a mixture of low-rank clusters of uneven size, like patch
features of one product category) and ``gaussian`` (i.i.d. noise: no structure, the worst case for
pruning). The naive loop (one [N, 128] matrix-vector product per selection) is timed on a few hundred
steps and extrapolated. Per run it prints seconds, steps/s, the speed-up, the work counters of
:class:`adbench.components.coreset.CoresetStats`, the process's peak RSS (getrusage) and how far the RSS grew
above its level before the run (sampled every 10 ms).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Sequence

import torch

from adbench.components.coreset import greedy_coreset_with_stats, project
from adbench.devices import synchronize
from adbench.perf import benchmark, report
from adbench.runner import PeakMemory


def synthetic_features(n: int, dim: int, kind: str, seed: int = 0) -> torch.Tensor:
    """Synthetic features float32 [n, dim]: ``gaussian`` or ``clustered`` (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(n, dim, generator=g)
    if kind != "clustered":
        raise ValueError(f"unknown data kind {kind!r}")
    n_clusters, rank = 64, 8
    weights = torch.rand(n_clusters, generator=g) ** 3  # uneven cluster sizes
    labels = torch.multinomial(weights, n, replacement=True, generator=g)
    out = torch.empty(n, dim)
    for c in range(n_clusters):
        rows = (labels == c).nonzero().squeeze(1)
        centre = torch.randn(dim, generator=g) * 2
        basis = torch.randn(rank, dim, generator=g) / rank**0.5
        noise = torch.randn(len(rows), dim, generator=g).mul_(0.3)
        out[rows] = noise.add_(centre).addmm_(torch.randn(len(rows), rank, generator=g), basis)
    return out


def naive_seconds_per_step(features: torch.Tensor, steps: int, seed: int = 0) -> float:
    """Seconds per selection of the naive loop (one matvec over all projected points), with the
    current threads or one thread, whichever is faster -> float."""
    x = project(features, seed)
    sq = x.square().sum(1)
    best = float("inf")
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        anchor = torch.full((len(x),), float("inf"), device=x.device)
        start = time.perf_counter()
        for _ in range(steps):
            i = int(torch.argmax(anchor))
            dist = torch.addmv(sq, x, x[i], alpha=-2).add_(sq[i]).clamp_(min=0)
            torch.minimum(anchor, dist, out=anchor)
        best = min(best, (time.perf_counter() - start) / steps)
        torch.set_num_threads(before)
    return best


@benchmark("coreset")
def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (none: the defaults), run the benchmark and print one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--percentages", type=float, nargs="+", default=[0.1, 0.01])
    parser.add_argument("--data", nargs="+", default=["clustered", "gaussian"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--naive-steps", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args([] if argv is None else argv)
    device = torch.device(args.device)
    print(f"coreset: torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    for kind in args.data:
        features = synthetic_features(args.n, args.dim, kind).to(device)
        naive = naive_seconds_per_step(features, args.naive_steps)
        for percentage in args.percentages:
            n_select = int(args.n * percentage)
            for _ in range(args.repeats):
                rss_before = PeakMemory.rss_mb()
                with PeakMemory(device) as memory:
                    wall, cpu = time.perf_counter(), time.process_time()
                    _, stats = greedy_coreset_with_stats(features, percentage)
                    synchronize(device)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                report(
                    f"{kind} {args.n}x{args.dim} {percentage:.0%}",
                    {
                        "s": wall,
                        "cpu_s": cpu,
                        "steps_per_s": n_select / wall,
                        "naive_s": naive * n_select,
                        "speedup": naive * n_select / wall,
                        "rounds": stats.rounds,
                        "blocks": stats.blocks,
                        "pairs_skipped": stats.skipped_fraction,
                        "distances_vs_naive": stats.work_fraction,
                        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                        "rss_growth_mb": memory.peak_rss_mb - rss_before,
                    },
                )


if __name__ == "__main__":
    main(sys.argv[1:])
