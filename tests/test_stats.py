"""Tests of adbench.stats against a literal bootstrap (resampled arrays scored by adbench.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from adbench import stats
from adbench.metrics import IMAGE_KEYS, PIXEL_KEYS, evaluate
from adbench.stats import (
    bootstrap,
    ci_settings,
    image_replicates,
    percentile_interval,
    pixel_replicates,
    stratified_weights,
)


def literal_bootstrap(
    weights: np.ndarray, scores: np.ndarray, labels: np.ndarray, maps: np.ndarray | None = None,
    masks: np.ndarray | None = None, aupro_limit: float = 0.3,
) -> dict[str, np.ndarray]:
    """metric -> [B]: each resample built as arrays (image i repeated weights[b, i] times, in a
    shuffled order) and scored by adbench.metrics.evaluate."""
    rng = np.random.default_rng(99)
    rows = []
    for row in weights:
        drawn = rng.permutation(np.repeat(np.arange(row.size), row))
        pixels = (None, None) if masks is None else (maps[drawn], masks[drawn])
        rows.append(evaluate(scores[drawn], labels[drawn], *pixels, aupro_limit=aupro_limit))
    return {key: np.array([r[key] for r in rows]) for key in rows[0]}


def tied_test_set(seed: int, n_good: int = 5, n_bad: int = 4, side: int = 8, decimals: int = 1,
                  dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(scores [N], labels [N], maps [N, side, side], masks [N, side, side]): defective images
    first, each with random blobs (several 8-connected regions) and a defect at (0, 0); scores
    rounded to ``decimals`` so many pixels (defect and normal) and image scores tie."""
    rng = np.random.default_rng(seed)
    n = n_good + n_bad
    masks = np.zeros((n, side, side), dtype=bool)
    masks[:n_bad] = rng.random((n_bad, side, side)) < 0.2
    masks[:n_bad, 0, 0] = True
    maps = np.round(rng.random(masks.shape) + 0.4 * masks, decimals).astype(dtype)
    labels = (np.arange(n) < n_bad).astype(int)
    scores = np.round(maps.mean(axis=(1, 2)) + 0.1 * rng.normal(size=n), 2)
    return scores, labels, maps, masks


def test_stratified_weights_keep_class_counts_and_are_seeded() -> None:
    labels = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 0])
    weights = stratified_weights(labels, 500)
    assert weights.dtype == np.int32 and weights.shape == (500, 10)
    assert np.all(weights[:, labels == 1].sum(axis=1) == 3)
    assert np.all(weights[:, labels == 0].sum(axis=1) == 7)
    assert np.array_equal(weights, stratified_weights(labels, 500))
    assert np.array_equal(weights[:40], stratified_weights(labels, 40))  # a prefix of a longer run
    assert not np.array_equal(weights, stratified_weights(labels, 500, seed=1))
    # each image is drawn once per resample on average, with the multinomial variance 1 - 1/n_class
    assert np.allclose(weights.mean(axis=0), 1, atol=0.15)
    assert np.allclose(weights[:, labels == 0].var(axis=0), 1 - 1 / 7, atol=0.2)


def test_image_replicates_equal_a_literal_bootstrap() -> None:
    scores, labels, _, _ = tied_test_set(0, n_good=12, n_bad=8)
    scores = np.round(scores, 1)  # many tied image scores
    weights = stratified_weights(labels, 60, seed=3)
    weights[0] = np.where(labels == 1, 2 * (np.arange(labels.size) % 2), 0) + (labels == 0)  # zeros, odd
    fast = image_replicates(scores, labels, weights)
    slow = literal_bootstrap(weights, scores, labels)
    assert set(fast) == set(IMAGE_KEYS)
    for key in IMAGE_KEYS:
        np.testing.assert_allclose(fast[key], slow[key], rtol=0, atol=1e-9, err_msg=key)
    assert np.ptp(fast["image_auroc"]) > 0.1  # the resamples differ


@pytest.mark.parametrize(("seed", "decimals", "dtype", "limit"), [
    (0, 1, np.float64, 0.3), (1, 2, np.float64, 0.05), (2, 1, np.float32, 1.0), (3, 6, np.float32, 0.3),
])
@pytest.mark.parametrize("block_elements", [2**20, 64])
def test_pixel_replicates_equal_a_literal_bootstrap(
    seed: int, decimals: int, dtype: type, limit: float, block_elements: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ties inside defects, between defect and normal pixels, and FPR limits inside tie runs; small
    blocks carry the curves from block to block."""
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", block_elements)
    scores, labels, maps, masks = tied_test_set(seed, decimals=decimals, dtype=dtype)
    weights = stratified_weights(labels, 30, seed=seed)
    fast = pixel_replicates(maps, masks, weights, aupro_limit=limit)
    slow = literal_bootstrap(weights, scores, labels, maps, masks, aupro_limit=limit)
    assert set(fast) == set(PIXEL_KEYS)
    for key in PIXEL_KEYS:
        np.testing.assert_allclose(fast[key], slow[key], rtol=0, atol=1e-9, err_msg=key)
    assert np.ptp(fast["pixel_aupro"]) > 0.01


def test_pixel_replicates_count_a_region_drawn_twice_twice() -> None:
    """One image with a large well-found region, one with a small missed one: drawing the first
    twice makes its region 2 of 3, so AUPRO rises exactly as the literal resample says."""
    maps = np.zeros((3, 6, 6))
    masks = np.zeros((3, 6, 6), dtype=bool)
    masks[0, :3, :3], maps[0, :3, :3] = True, 1.0
    masks[1, 5, 5] = True
    maps[2] = np.linspace(0, 0.9, 36).reshape(6, 6)
    labels = np.array([1, 1, 0])
    weights = np.array([[1, 1, 1], [2, 1, 1], [1, 2, 1]])
    fast = pixel_replicates(maps, masks, weights)["pixel_aupro"]
    slow = literal_bootstrap(weights, maps.max(axis=(1, 2)), labels, maps, masks)["pixel_aupro"]
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    assert fast[1] > fast[0] > fast[2]


def test_bootstrap_shares_resamples_and_seed() -> None:
    scores, labels, maps, masks = tied_test_set(4, n_good=6, n_bad=5, decimals=2)
    result = bootstrap(scores, labels, maps, masks, n_boot=50, n_boot_pixel=20)
    assert (result.n_boot, result.n_boot_pixel, result.level) == (50, 20, 0.95)
    assert {len(v) for k, v in result.replicates.items() if k in IMAGE_KEYS} == {50}
    assert {len(v) for k, v in result.replicates.items() if k not in IMAGE_KEYS} == {20}
    slow = literal_bootstrap(stratified_weights(labels, 20), scores, labels, maps, masks)
    np.testing.assert_allclose(result.replicates["mad"], slow["mad"], atol=1e-9)
    np.testing.assert_allclose(result.replicates["image_auroc"][:20], slow["image_auroc"], atol=1e-9)
    intervals = result.intervals()
    assert set(intervals) == {f"{k}_{end}" for k in (*IMAGE_KEYS, *PIXEL_KEYS, "mad") for end in ("lo", "hi")}
    point = evaluate(scores, labels, maps, masks)
    for key in point:
        assert 0 <= intervals[f"{key}_lo"] <= intervals[f"{key}_hi"] <= 1
    again = bootstrap(scores, labels, maps, masks, n_boot=50, n_boot_pixel=20).intervals()
    assert again == intervals
    image_only = bootstrap(scores, labels, n_boot=50)
    assert image_only.n_boot_pixel is None and set(image_only.replicates) == set(IMAGE_KEYS)
    assert image_only.intervals() == {k: v for k, v in intervals.items() if k.startswith("image_")}


def test_percentile_interval_is_the_central_quantile_range() -> None:
    values = np.random.default_rng(0).permutation(np.arange(101) / 100)
    assert percentile_interval(values, 0.9) == pytest.approx((0.05, 0.95))
    assert percentile_interval(values) == pytest.approx((0.025, 0.975))
    with pytest.raises(ValueError, match=r"ci.level"):
        percentile_interval(values, 95)


def test_interval_covers_the_population_auroc() -> None:
    """Binormal scores (good N(0, 1), defective N(d, 1)) have the population AUROC Phi(d / sqrt 2);
    the 95 % interval of 200 simulated test sets (40 good, 30 defective) covers it in 90-99 % of them."""
    separation, n_sets = 1.0, 200
    truth = norm.cdf(separation / np.sqrt(2))
    labels = (np.arange(70) >= 40).astype(int)
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(n_sets):
        scores = rng.normal(size=labels.size) + separation * labels
        lo, hi = percentile_interval(bootstrap(scores, labels, n_boot=400).replicates["image_auroc"])
        covered += lo <= truth <= hi
    assert 0.90 <= covered / n_sets <= 0.99, covered


def test_undefined_replicates_and_bad_weights_raise() -> None:
    scores, labels, maps, masks = tied_test_set(5)
    no_defective = np.where(labels == 1, 0, 2)[None]
    with pytest.raises(ValueError, match="undefined in 1 of 1 resamples"):
        image_replicates(scores, labels, no_defective)
    masks[1:] = False  # image 1..3 are labelled defective but have empty masks
    draws_empty_masks = np.array([[0, 2, 1, 1, 1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="no defect pixel"):
        pixel_replicates(maps, masks, draws_empty_masks)
    with pytest.raises(ValueError, match=r"shape \[n_boot, 9\]"):
        image_replicates(scores, labels, np.ones((3, 8), dtype=int))
    with pytest.raises(ValueError, match="non-negative"):
        image_replicates(scores, labels, -np.ones((3, 9), dtype=int))
    with pytest.raises(ValueError, match=r"ci.n_boot"):
        stratified_weights(labels, 0)


def test_ci_settings_name_the_bad_key() -> None:
    assert ci_settings(None) == {"n_boot": 1000, "n_boot_pixel": 1000, "level": 0.95}
    assert ci_settings({"n_boot_pixel": 200}) == {"n_boot": 1000, "n_boot_pixel": 200, "level": 0.95}
    for bad, key in (({"nboot": 5}, r"ci\.nboot is no setting"), ({"n_boot": 10.5}, r"ci\.n_boot must"),
                     ({"n_boot_pixel": 0}, r"ci\.n_boot_pixel must be >= 1"), ({"level": 95}, r"ci\.level"),
                     ({"level": "high"}, r"ci\.level must be a number")):
        with pytest.raises(ValueError, match=key):
            ci_settings(bad)


def test_mean_replicates_is_the_weighted_mean_over_images_with_a_value():
    """pixel_aupimo's replicate b: the mean of the per-image values over the images resample b drew
    (with multiplicity), NaN images (normal ones) left out — written out with index lists."""
    from adbench.stats import mean_replicates

    rng = np.random.default_rng(5)
    labels = np.array([0] * 6 + [1] * 5)
    values = np.where(labels == 1, rng.random(11), np.nan)
    weights = stratified_weights(labels, 50, seed=3)
    literal = [np.mean([values[i] for i in np.repeat(np.arange(11), w) if labels[i]]) for w in weights]
    np.testing.assert_allclose(mean_replicates("x", values, weights), literal, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="x undefined"):
        mean_replicates("x", np.full(11, np.nan), weights)


def test_runner_records_aupimo_or_says_why_not():
    from adbench.runner import per_image_aupimo

    rng = np.random.default_rng(0)
    masks = np.zeros((4, 200, 200), dtype=bool)
    masks[2:, 50:80, 50:80] = True
    maps = rng.random(masks.shape) + masks
    record = {"run_id": "r"}
    values = per_image_aupimo(maps, masks, record)  # 2 normal images: 80,000 normal pixels < 10^5
    assert values is None and "aupimo_note" in record and "pixel_aupimo" not in record
    maps = np.concatenate([rng.random(maps.shape), maps])  # 4 more normal images: 240,000 normal pixels
    masks = np.concatenate([np.zeros_like(masks), masks])
    values = per_image_aupimo(maps, masks, record)
    assert np.isnan(values[:6]).all() and np.isfinite(values[6:]).all()
    assert record["pixel_aupimo"] == pytest.approx(np.mean(values[6:]))
