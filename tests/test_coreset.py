"""adbench.components.coreset against a literal, slow float64 reference of PatchCore's greedy coreset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adbench.components import coreset
from adbench.components.coreset import greedy_coreset, greedy_coreset_with_stats, project


def brute_force_greedy_coreset(
    features: torch.Tensor, percentage: float, seed: int = 0, projection_dim: int = 128, n_starts: int = 10
) -> torch.Tensor:
    """The official ApproximateGreedyCoresetSampler, literally, in float64 with a full [N, N] matrix.

    features: [N, D] -> selected indices int64 [int(N * percentage)].
    """
    x = features.double()
    if features.shape[1] != projection_dim:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mapper = torch.nn.Linear(features.shape[1], projection_dim, bias=False)
        x = x @ mapper.weight.detach().double().T
    dist = torch.cdist(x, x)  # float64: the expansion's rounding is far below float32 ties
    n = len(features)
    starts = np.random.default_rng(seed).choice(n, min(n_starts, n), replace=False)
    anchor = dist[:, starts].mean(1)
    selected = []
    for _ in range(int(n * percentage)):
        i = int(torch.argmax(anchor))
        selected.append(i)
        anchor = torch.minimum(anchor, dist[:, i])
    return torch.tensor(selected, dtype=torch.long)


def greedy_gaps(
    features: torch.Tensor, indices: torch.Tensor, seed: int = 0, n_starts: int = 10
) -> torch.Tensor:
    """For a [N, 128] feature set, (max anchor - anchor of the selected point) at every step -> [n].

    Anchors follow the greedy definition in float64; a valid greedy sequence has all gaps ~ 0,
    whatever its tie-breaking.
    """
    x = features.double()
    starts = np.random.default_rng(seed).choice(len(x), n_starts, replace=False)
    anchor = torch.cdist(x, x[starts]).mean(1)
    dist = torch.cdist(x[indices], x)
    gaps = []
    for step, i in enumerate(indices.tolist()):
        gaps.append(anchor.max() - anchor[i])
        anchor = torch.minimum(anchor, dist[step])
    return torch.stack(gaps)


def covering_radius(features: torch.Tensor, indices: torch.Tensor) -> float:
    """max over points of the distance to the nearest selected point (float64)."""
    x = features.double()
    return float(torch.cdist(x, x[indices]).amin(1).max())


def clustered(n: int, dim: int, n_clusters: int, seed: int) -> torch.Tensor:
    """Unit Gaussian clusters around N(0, 16 I) centres: [n, dim] float32.

    The clusters are well separated, yet the centres are not so far from the origin that the float32
    expansion's cancellation makes near-ties likely.
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 4
    labels = torch.randint(0, n_clusters, (n,), generator=g)
    return centres[labels] + torch.randn(n, dim, generator=g)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small pool, small blocks and cheap tile calls, so that small inputs take many lookahead rounds
    and pruned blocks are really skipped."""
    monkeypatch.setattr(coreset, "_N_CANDIDATES", 128)
    monkeypatch.setattr(coreset, "_BLOCK_SIZE", 16)
    monkeypatch.setattr(coreset, "_CALL_COST", 256)


def test_project_is_default_linear_under_seed() -> None:
    feats = torch.randn(50, 64)
    torch.manual_seed(5)
    expected = torch.nn.Linear(64, 128, bias=False)(feats)
    torch.testing.assert_close(project(feats, seed=5, dim=128), expected)


def test_project_identity_and_rng_state() -> None:
    feats = torch.randn(20, 128)
    assert project(feats, seed=3).data_ptr() == feats.data_ptr()
    other = torch.randn(20, 64)
    state = torch.get_rng_state()
    project(other, seed=3)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    ("n", "dim", "percentage", "seed"),
    [(1000, 128, 0.1, 0), (1500, 128, 0.25, 1), (800, 64, 0.2, 2), (1200, 200, 0.1, 3), (300, 128, 0.5, 4)],
)
def test_matches_reference(small_blocks: None, n: int, dim: int, percentage: float, seed: int) -> None:
    feats = torch.randn(n, dim, generator=torch.Generator().manual_seed(100 + seed))
    got, stats = greedy_coreset_with_stats(feats, percentage, seed=seed)
    expected = brute_force_greedy_coreset(feats, percentage, seed=seed)
    assert got.dtype == torch.long and got.shape == (int(n * percentage),)
    assert got.tolist() == expected.tolist()
    assert stats.rounds > 1


def test_matches_reference_default_constants() -> None:
    feats = torch.randn(1000, 96, generator=torch.Generator().manual_seed(7))
    expected = brute_force_greedy_coreset(feats, 0.1, seed=7)
    assert greedy_coreset(feats, 0.1, seed=7).tolist() == expected.tolist()


def assert_greedy_up_to_ties(features: torch.Tensor, got: torch.Tensor, percentage: float, seed: int) -> None:
    """``got`` is a greedy coreset of ``features`` up to float32 ties: every step's pick is a maximum
    anchor within float32 resolution, and the covering radius is the float64 reference's. Clustered
    data has such near-ties (anchors 17.1035617 vs 17.1035749 at step 147 on one CPU), where the
    float32 selection may pick the other point than the reference and the sequences part."""
    expected = brute_force_greedy_coreset(features, percentage, seed=seed)
    assert got.shape == expected.shape
    assert greedy_gaps(features, got, seed=seed).max() <= 1e-6 * covering_radius(features, got[:1])
    assert covering_radius(features, got) == pytest.approx(covering_radius(features, expected), rel=1e-6)


def test_clustered_pruning_is_exact(small_blocks: None) -> None:
    feats = clustered(2000, 128, n_clusters=40, seed=0)
    got, stats = greedy_coreset_with_stats(feats, 0.15, seed=0)
    assert_greedy_up_to_ties(feats, got, 0.15, seed=0)
    assert stats.skipped_fraction > 0.5
    assert stats.work_fraction < 0.5


def test_greedy_property_and_covering_radius(small_blocks: None) -> None:
    feats = clustered(1500, 128, n_clusters=25, seed=1)
    assert_greedy_up_to_ties(feats, greedy_coreset(feats, 0.1, seed=1), 0.1, seed=1)


def test_full_and_invalid_percentage() -> None:
    feats = torch.randn(100, 32)
    assert torch.equal(greedy_coreset(feats, 1.0), torch.arange(100))
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            greedy_coreset(feats, bad)
    assert greedy_coreset(feats, 0.005).shape == (0,)


def test_seed_determinism(small_blocks: None) -> None:
    feats = torch.randn(600, 128)
    first = greedy_coreset(feats, 0.1, seed=11, progress=True)
    assert torch.equal(first, greedy_coreset(feats, 0.1, seed=11))
    assert not torch.equal(first, greedy_coreset(feats, 0.1, seed=12))
    assert len(set(first.tolist())) == len(first)


def test_restores_thread_count() -> None:
    threads = torch.get_num_threads()
    greedy_coreset(torch.randn(300, 128), 0.1)
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference(small_blocks: None) -> None:
    feats = torch.randn(3000, 256, generator=torch.Generator().manual_seed(9))
    got, stats = greedy_coreset_with_stats(feats.cuda(), 0.1, seed=9)
    assert got.device.type == "cuda" and stats.rounds > 1
    assert got.cpu().tolist() == brute_force_greedy_coreset(feats, 0.1, seed=9).tolist()


def test_patchcore_reweighted_score_is_eq7_on_squared_distances():
    """Paper eq. 7 written out per image: m* = the patch of highest score, n* its nearest bank entry,
    N_b = the b bank entries nearest to n*; w = 1 − exp‖m* − n*‖ / Σ_{n ∈ N_b} exp‖m* − n‖ on Euclidean
    distances, score = w · ‖m* − n*‖², in the squared unit of the maps and the default score."""
    from adbench.methods.patchcore import PatchCore

    gen = torch.Generator().manual_seed(0)
    method = PatchCore(target_dim=4, reweight_neighbours=3)
    method.memory_bank = torch.randn(20, 4, generator=gen)
    emb = torch.randn(2, 3, 3, 4, generator=gen)
    flat = emb.reshape(2, 9, 4)
    patch_scores = torch.cdist(flat, method.memory_bank).min(dim=2).values.square().reshape(2, 3, 3)
    expected = []
    for b in range(2):
        worst = flat[b, patch_scores[b].reshape(-1).argmax()]
        to_bank = torch.linalg.vector_norm(method.memory_bank - worst, dim=1)
        nearest = method.memory_bank[to_bank.argmin()]
        support = torch.linalg.vector_norm(method.memory_bank - nearest, dim=1).argsort()[:3]
        weight = 1 - torch.exp(to_bank.min()) / torch.exp(to_bank[support]).sum()
        expected.append(weight * to_bank.min() ** 2)
    scores = method._reweighted_scores(emb, patch_scores)
    torch.testing.assert_close(scores, torch.stack(expected), rtol=1e-5, atol=1e-6)
