"""Exact kNN: the torch search (used on GPUs without faiss-gpu) against faiss and a float64 literal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adbench.knn import FlatL2Index, torch_search


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
