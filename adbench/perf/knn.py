"""kNN backends on PatchCore's real 1024-d embeddings of toy categories: exhaustive faiss against the
certified two-stage search (speed-up, how many queries each stage settled, exactness)."""

from __future__ import annotations

import tempfile

import torch

from adbench.components.knn import FlatL2Index, TwoStageL2Index
from adbench.data import iterate_batches
from adbench.perf import benchmark, prepare, report, timed


def compare(category: str) -> None:
    """Exhaustive faiss and the two-stage search (rank 128 and 256) on one category's test patches."""
    bench = prepare("patchcore", [f"cache.dir={tempfile.mkdtemp(prefix='adbench-perf-cache-')}"], category)
    method, ctx = bench.method, bench.ctx
    method.train()
    method.fit(ctx)
    method.eval()
    with torch.no_grad():
        queries = torch.cat([method.embed(b, ctx).reshape(-1, method.target_dim)
                             for b in iterate_batches(bench.category.test, ctx.transform, batch_size=8)])
    bank = method.memory_bank
    exhaustive = FlatL2Index(bank)
    exhaustive_s = timed(lambda: exhaustive.search(queries, 1), repeat=2)
    ref_dist, ref_idx = exhaustive.search(queries, 1)
    for rank in (128, 256):
        index = TwoStageL2Index(bank, rank=rank)
        two_stage_s = timed(lambda index=index: index.search(queries, 1), repeat=2)
        dist, idx = index.search(queries, 1)
        relative = ((dist - ref_dist).abs() / ref_dist.clamp_min(1e-12)).max().item()
        n = index.stats["queries"]
        report(f"knn toy/{category} bank {len(bank)} x {bank.shape[1]}, rank {rank}", {
            "queries": len(queries), "exhaustive_s": exhaustive_s, "two_stage_s": two_stage_s,
            "speedup": exhaustive_s / two_stage_s, "settled_first": index.stats["first"] / n,
            "settled_wide": index.stats["wide"] / n, "settled_exhaustive": index.stats["exhaustive"] / n,
            "same_neighbour": (idx == ref_idx).float().mean().item(), "max_rel_distance_diff": relative,
        })


@benchmark("knn")
def main(categories: tuple[str, ...] = ("brick", "grass")) -> None:
    for category in categories:
        compare(category)
