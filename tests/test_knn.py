"""Exact kNN: the torch search (used on GPUs without faiss-gpu) against faiss and a float64 literal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adbench.components.knn import FlatL2Index, torch_search


def data(seed: int = 0, n: int = 500, q: int = 300, d: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator) * 3 + 1, torch.randn(q, d, generator=generator) * 3 + 1


def test_torch_search_matches_faiss_and_a_float64_literal():
    bank, queries = data()
    dist, idx = torch_search(bank, queries, k=3)
    ref_dist, ref_idx = FlatL2Index(bank).search(queries, 3)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist, ref_dist, rtol=1e-5, atol=1e-3)
    exact = torch.cdist(queries.double(), bank.double()).square()
    literal = exact.sort(dim=1).values[:, :3]
    np.testing.assert_allclose(dist.double().numpy(), literal.numpy(), rtol=1e-5, atol=1e-3)
    assert (dist[:, :-1] <= dist[:, 1:]).all() and (dist >= 0).all()


def test_blocks_do_not_change_the_result():
    bank, queries = data(1)
    whole = torch_search(bank, queries, k=2)
    blocked = torch_search(bank, queries, k=2, block_bytes=4 * len(bank) * 7)  # 7 query rows a block
    assert torch.equal(whole[1], blocked[1])  # same neighbours; a block size may round differently
    torch.testing.assert_close(whole[0], blocked[0], rtol=1e-5, atol=1e-4)


def test_index_backends_agree_and_unknown_backend_is_named():
    bank, queries = data(2)
    faiss_index, torch_index = FlatL2Index(bank), FlatL2Index(bank, backend="torch")
    assert (faiss_index.backend, torch_index.backend) == ("faiss-cpu", "torch")
    assert torch.equal(faiss_index.search(queries, 1)[1], torch_index.search(queries, 1)[1])
    with pytest.raises(ValueError, match="kNN backend 'annoy'"):
        FlatL2Index(bank, backend="annoy")


def clustered(seed: int, n: int = 800, q: int = 400, d: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Bank and queries around 12 cluster centres on a low-dimensional subspace plus small isotropic
    noise (the shape of CNN patch features: a concentrated spectrum and near neighbours)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(8, d, generator=g)
    centres = torch.randn(12, 8, generator=g) @ basis * 2
    def draw(m: int) -> torch.Tensor:
        which = torch.randint(0, 12, (m,), generator=g)
        spread = torch.randn(m, 8, generator=g) @ basis * 0.3
        return centres[which] + spread + 0.1 * torch.randn(m, d, generator=g)
    return draw(n), draw(q)


@pytest.mark.parametrize(("make", "rank", "k"),
                         [(data, 8, 1), (data, 32, 3), (clustered, 8, 1), (clustered, 16, 4)])
def test_two_stage_search_is_exact(make, rank, k):
    """Same neighbours as the exhaustive float64 literal (up to exact ties) and distances to 1e-5,
    whatever stage settles a query; every query is counted once."""
    from adbench.components.knn import TwoStageL2Index

    bank, queries = make(3)
    index = TwoStageL2Index(bank, rank=rank, candidates=4, wide=16)
    dist, idx = index.search(queries, k)
    exact = torch.cdist(queries.double(), bank.double()).square()
    literal, literal_idx = exact.sort(dim=1)
    np.testing.assert_allclose(dist.double().numpy(), literal[:, :k].numpy(), rtol=1e-5, atol=1e-4)
    same = idx == literal_idx[:, :k]
    tied = torch.isclose(exact.gather(1, idx), literal[:, :k], rtol=1e-6, atol=0)
    assert (same | tied).all()
    stats = index.stats
    assert stats["queries"] == len(queries) == stats["first"] + stats["wide"] + stats["exhaustive"]
    assert FlatL2Index(bank, backend="two-stage").search(queries, k)[1].shape == (len(queries), k)


def test_two_stage_bound_never_exceeds_the_distance():
    """The reduced vectors' distance is a lower bound of the true squared distance."""
    from adbench.components.knn import TwoStageL2Index

    bank, queries = clustered(4)
    index = TwoStageL2Index(bank, rank=6)
    bound = torch.cdist(index._reduce(queries).double(), index._reduce(bank).double()).square()
    true = torch.cdist(queries.double(), bank.double()).square()
    assert (bound <= true * (1 + 1e-5) + 1e-4).all()
    assert (bound > 0.5 * true).float().mean() > 0.5  # and not a trivial one
