"""Tests of adbench.metrics against literal reference implementations and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from adbench.metrics import (
    AUPIMO_FPR_BOUNDS,
    IMAGE_KEYS,
    PIXEL_KEYS,
    _auroc,
    _average_precision,
    _f1_max,
    _normalised_area,
    _pixel_counts,
    _pixel_curve,
    aupimo,
    aupro,
    auroc,
    average_precision,
    evaluate,
    f1_max,
    pro_curve,
)

EIGHT = np.ones((3, 3), dtype=bool)
FOUR = ndimage.generate_binary_structure(2, 1)


def reference_pro_curve(
    maps: np.ndarray, masks: np.ndarray, structure: np.ndarray = EIGHT
) -> tuple[list[float], list[float]]:
    """Literal PRO curve: one point per distinct threshold, computed with boolean masks."""
    regions = []  # one bool [N, H, W] mask per connected component of one image's mask
    for i, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=structure)
        for r in range(1, n + 1):
            region = np.zeros(masks.shape, dtype=bool)
            region[i] = labelled == r
            regions.append(region)
    stacked = np.stack(regions)  # [K, N, H, W]
    ok = ~masks
    fprs, pros = [0.0], [0.0]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        fprs.append((pred & ok).sum() / ok.sum())
        overlaps = (pred & stacked).sum(axis=(1, 2, 3)) / stacked.sum(axis=(1, 2, 3))
        pros.append(float(np.mean(overlaps)))
    return [*fprs, 1.0], [*pros, 1.0]


def reference_area(x: list[float], y: list[float], limit: float) -> float:
    """Literal normalised area: trapezoids up to ``limit``, y interpolated at the limit, / limit."""
    area = 0.0
    for i in range(1, len(x)):
        if x[i] <= limit:
            area += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2
            continue
        if x[i - 1] < limit:
            y_limit = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])
            area += (limit - x[i - 1]) * (y_limit + y[i - 1]) / 2
        break
    return area / limit


def reference_aupro(
    maps: np.ndarray, masks: np.ndarray, limit: float = 0.3, structure: np.ndarray = EIGHT
) -> float:
    """Literal AUPRO of maps [N, H, W] and masks bool [N, H, W] with regions under ``structure``."""
    return reference_area(*reference_pro_curve(maps, masks, structure), limit)


def reference_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """Literal F1-max: every distinct threshold, score >= t positive, 0 where P + R = 0."""
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & (labels == 1))
        p = tp / pred.sum()
        r = tp / np.sum(labels == 1)
        best = max(best, 2 * p * r / (p + r) if p + r > 0 else 0.0)
    return best


def random_pixels(seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """4 maps of 12x12 (maps [4, 12, 12], masks bool [4, 12, 12]); image 3 is normal.

    Masks mix a rectangle with scattered pixels (many touch only diagonally). ``kind`` picks the
    scores: "quantised32"/"quantised64" (many ties, negative values), "continuous64", or
    "subulp64" (quantised plus steps of 1e-12, distinct float64 values that round to one float32).
    """
    rng = np.random.default_rng(seed)
    masks = rng.random((4, 12, 12)) > 0.85
    masks[0, 2:6, 3:8] = True
    masks[3] = False
    if kind == "continuous64":
        maps = rng.random(masks.shape) + 0.4 * masks
    else:
        levels = rng.integers(0, 12, masks.shape) + 4 * masks
        maps = (levels / 8 - 0.5).astype(np.float32 if kind == "quantised32" else np.float64)
        if kind == "subulp64":
            maps += rng.integers(0, 3, masks.shape) * 1e-12
    return maps, masks


def random_images(seed: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """200 image scores with ties (float [200]) and labels (int [200]) correlated with them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = (np.round(rng.normal(size=200) + labels, 1)).astype(dtype)
    return scores, labels


KINDS = ["quantised32", "quantised64", "continuous64", "subulp64"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_pro_curve_and_aupro_match_reference(seed: int, kind: str) -> None:
    maps, masks = random_pixels(seed, kind)
    fpr, pro = pro_curve(maps, masks)
    ref_fpr, ref_pro = reference_pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pro, ref_pro, rtol=0, atol=1e-12)
    for limit in (0.3, 0.05, 1.0):
        assert aupro(maps, masks, limit) == pytest.approx(reference_area(ref_fpr, ref_pro, limit), abs=1e-9)


def test_aupro_perfect_map_is_one() -> None:
    _, masks = random_pixels(0, "quantised32")
    assert aupro(masks.astype(np.float32), masks) == pytest.approx(1.0, abs=1e-12)
    result = evaluate(masks.max(axis=(1, 2)).astype(float), masks.any(axis=(1, 2)), masks * 2.0, masks)
    assert all(value == pytest.approx(1.0, abs=1e-12) for value in result.values())


def test_aupro_hand_computed() -> None:
    # Region A = {(0, 0)} (1 pixel), region B = {(2, 2), (2, 3)} (2 pixels), 9 OK pixels.
    masks = np.zeros((1, 3, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 2, 2] = masks[0, 2, 3] = True
    maps = np.zeros((1, 3, 4))
    maps[0][~masks[0]] = [0.95, 0.2, 0.19, 0.18, 0.17, 0.16, 0.15, 0.14, 0.13]
    maps[0, 0, 0], maps[0, 2, 2], maps[0, 2, 3] = 0.8, 0.9, 0.3
    # FPR 1/9 at PRO 0, 0.25 (half of B), 0.75 (+ A), 1 (+ rest of B); then PRO 1 to FPR 1:
    # area up to 0.3 = (0.3 - 1/9) * 1, divided by 0.3.
    assert aupro(maps, masks) == pytest.approx(17 / 27, abs=1e-12)
    np.testing.assert_allclose(pro_curve(maps, masks)[1][:5], [0, 0, 0.25, 0.75, 1])

    # A defect pixel tied with an OK pixel: the curve jumps diagonally from (0, 0) to (1/3, 1).
    tied = np.array([[[0.5, 0.5, 0.2, 0.1]]])
    one = np.array([[[True, False, False, False]]])
    assert aupro(tied, one) == pytest.approx(0.5 * 0.9 * 0.3 / 0.3, abs=1e-12)  # PRO(0.3) = 0.9
    assert aupro(tied, one, limit=1 / 3) == pytest.approx(0.5, abs=1e-12)  # limit on a point
    assert aupro(tied, one, limit=1.0) == pytest.approx(1 / 6 + 2 / 3, abs=1e-12)


def test_aupro_uses_8_connectivity() -> None:
    # (0, 0)-(0, 1) touch by an edge, (1, 2) only diagonally: one region under 8-connectivity.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 0, 1] = masks[0, 1, 2] = True
    maps = np.zeros((1, 4, 4))
    maps[0][~masks[0]] = np.linspace(0.1, 0.9, 13)
    maps[0, 1, 2] = 1.0  # found first; the other two defect pixels last
    # 8-connected: one region of 3, PRO 1/3 over all FPR < 1. 4-connected: regions of 2 and 1, PRO 1/2.
    assert aupro(maps, masks) == pytest.approx(1 / 3, abs=1e-12)
    assert reference_aupro(maps, masks) == pytest.approx(1 / 3, abs=1e-12)
    assert reference_aupro(maps, masks, structure=FOUR) == pytest.approx(1 / 2, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_aupro_invariant_under_monotone_transform(kind: str) -> None:
    maps, masks = random_pixels(5, kind)
    expected = aupro(maps, masks)
    assert aupro(np.exp(3 * maps) - 2, masks) == pytest.approx(expected, abs=1e-12)
    assert aupro(maps.astype(np.float64) ** 3 * 7 + 1, masks) == pytest.approx(expected, abs=1e-12)
    assert aupro(maps.astype(np.float64) * 1e300, masks) == pytest.approx(expected, abs=1e-12)  # > float32


# The fast path (the normal scores sorted alone, only those above the FPR-limit threshold for
# aupro) against the previous implementation, one sort of all pixels (pro_curve / _pixel_counts).


def full_sort_aupro(maps: np.ndarray, masks: np.ndarray, limit: float) -> float:
    """AUPRO from :func:`pro_curve`, one point per distinct score of all pixels."""
    return _normalised_area(*pro_curve(maps, masks), limit)


def tied_pixels(
    seed: int, n_levels: int, shape: tuple[int, int, int] = (6, 16, 16)
) -> tuple[np.ndarray, np.ndarray]:
    """Maps float32 [N, H, W] of n_levels + 1 distinct scores (heavy ties between normal and defect
    pixels at every level) and masks bool [N, H, W]: a rectangle plus scattered pixels in the first
    half of the images, the second half normal."""
    rng = np.random.default_rng(seed)
    n, height, width = shape
    masks = rng.random(shape) > 0.9
    masks[: n // 2, height // 4 : height // 2, width // 4 : 3 * width // 4] = True
    masks[n // 2 :] = False
    levels = rng.integers(0, n_levels, shape) + masks * rng.integers(0, 2, shape)
    return (levels / n_levels).astype(np.float32), masks


def curve_fprs(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The distinct FPRs of the full curve (float64 [M], in (0, 1]): limits that fall on a point."""
    fpr = pro_curve(maps, masks)[0]
    return np.unique(fpr[fpr > 0])


@pytest.mark.parametrize("n_levels", [1, 2, 4, 9])
@pytest.mark.parametrize("seed", range(3))
def test_fast_aupro_equals_full_sort_under_heavy_ties(seed: int, n_levels: int) -> None:
    maps, masks = tied_pixels(seed, n_levels)
    limits = [*np.linspace(0.01, 1, 23), *curve_fprs(maps, masks)]  # between points and on them
    for limit in limits:
        assert aupro(maps, masks, limit) == pytest.approx(full_sort_aupro(maps, masks, limit), abs=1e-12)
    for limit in (0.3, 1.0):
        assert aupro(maps, masks, limit) == pytest.approx(reference_aupro(maps, masks, limit), abs=1e-9)
    assert aupro(maps.astype(np.float64), masks) == aupro(maps, masks)  # float32-exact float64
    assert aupro(np.round(maps * n_levels).astype(np.int64), masks) == aupro(maps, masks)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_aupro_equals_full_sort_on_larger_maps(dtype: type) -> None:
    # 40 maps of 48 x 48: the threshold partition and the binary searches work on ~75k normal pixels.
    maps, masks = tied_pixels(7, 50, (40, 48, 48))
    fine = maps.astype(dtype) + np.random.default_rng(0).random(maps.shape).astype(dtype) * 1e-3
    for scored in (maps, fine):
        fpr, pro = pro_curve(scored, masks)
        for limit in [0.3, 0.05, 0.001, 1.0, *np.unique(fpr[fpr > 0])[::397]]:
            assert aupro(scored, masks, limit) == pytest.approx(_normalised_area(fpr, pro, limit), abs=1e-12)


@pytest.mark.parametrize("kind", ["quantised32", "subulp64"])
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_pixel_curve_is_the_full_curve_at_its_bends(kind: str, limit: float) -> None:
    maps, masks = tied_pixels(3, 5) if kind == "quantised32" else random_pixels(2, kind)
    tps, fps, pro, n_normal = _pixel_curve(maps, masks, limit)
    full_tps, full_fps, full_pro = _pixel_counts(maps, masks)
    full = {(t, f): p for t, f, p in zip(full_tps.tolist(), full_fps.tolist(), full_pro.tolist())}
    for t, f, p in zip(tps.tolist(), fps.tolist(), pro.tolist()):  # every point is a point of the full curve
        assert full[t, f] == pytest.approx(p, abs=1e-15)
    assert n_normal == np.count_nonzero(~masks)
    assert np.all(np.diff(tps) >= 0) and np.all(np.diff(fps) >= 0)
    if limit < 1:  # the curve stops at its first point past the limit
        assert fps[-1] / n_normal > limit >= np.append(0, fps)[-2] / n_normal
    else:
        assert (tps[-1], fps[-1]) == (np.count_nonzero(masks), n_normal)


def test_fast_aupro_all_tied_maps() -> None:
    # One threshold: the curve jumps from (0, 0) to (1, 1), so AUPRO(limit) = limit / 2.
    _, masks = tied_pixels(0, 3)
    n_defect = np.count_nonzero(masks)
    for maps in (np.full(masks.shape, 0.25, dtype=np.float32), np.full(masks.shape, -3.0)):
        for limit in (0.3, 0.05, 1.0):
            assert aupro(maps, masks, limit) == pytest.approx(limit / 2, abs=1e-12)
        result = evaluate(maps.max(axis=(1, 2)) + np.arange(6), masks.any(axis=(1, 2)), maps, masks)
        assert result["pixel_auroc"] == 0.5
        assert result["pixel_ap"] == pytest.approx(n_defect / masks.size, abs=1e-12)
        assert result["pixel_f1max"] == pytest.approx(2 * n_defect / (masks.size + n_defect), abs=1e-12)
        assert result["pixel_aupro"] == pytest.approx(0.15, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_aupro_one_region(dtype: type) -> None:
    rng = np.random.default_rng(4)
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[1, 2:5, 3:7] = True
    maps = (rng.random(masks.shape) + 0.3 * masks).astype(dtype)
    unchanged = maps.copy()
    for limit in (0.3, 0.05, 1.0):
        assert np.array_equal(maps, unchanged)  # the partition and sort work on a copy
        expected = reference_aupro(maps, masks, limit)
        assert aupro(maps, masks, limit) == pytest.approx(expected, abs=1e-9)
        assert aupro(maps, masks, limit) == pytest.approx(full_sort_aupro(maps, masks, limit), abs=1e-12)


@pytest.mark.parametrize("data", ["quantised32", "subulp64", "continuous64", "tied"])
def test_evaluate_pixel_metrics_equal_full_sort(data: str) -> None:
    maps, masks = tied_pixels(5, 3) if data == "tied" else random_pixels(3, data)
    labels = masks.any(axis=(1, 2))
    result = evaluate(maps.max(axis=(1, 2)) + labels, labels, maps, masks, aupro_limit=0.2)
    tps, fps, _ = _pixel_counts(maps, masks)
    assert result["pixel_auroc"] == _auroc(tps, fps)  # exact integer area either way
    assert result["pixel_f1max"] == _f1_max(tps, fps)
    assert result["pixel_ap"] == pytest.approx(_average_precision(tps, fps), abs=1e-12)
    assert result["pixel_aupro"] == pytest.approx(full_sort_aupro(maps, masks, 0.2), abs=1e-12)
    assert result["pixel_aupro"] == pytest.approx(reference_aupro(maps, masks, 0.2), abs=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_image_metrics_match_sklearn_and_literal_loop(seed: int, dtype: type) -> None:
    scores, labels = random_images(seed, dtype)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    precision, recall, _ = precision_recall_curve(labels, scores)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    assert f1_max(scores, labels) == pytest.approx(f1.max(), abs=1e-12)
    assert f1_max(scores, labels) == pytest.approx(reference_f1_max(scores, labels), abs=1e-12)
    rng = np.random.default_rng(seed)
    for noise in (rng.random(200) * 1e-3, rng.integers(0, 3, 200) * 1e-12):  # not float32-exact
        fine = scores.astype(np.float64) + noise
        assert auroc(fine, labels) == pytest.approx(roc_auc_score(labels, fine), abs=1e-12)
        assert average_precision(fine, labels) == pytest.approx(
            average_precision_score(labels, fine), abs=1e-12
        )
        assert f1_max(fine, labels) == pytest.approx(reference_f1_max(fine, labels), abs=1e-12)


def test_special_values() -> None:
    assert auroc(np.array([-0.0, 0.0], dtype=np.float32), np.array([0, 1])) == 0.5  # one tie
    assert auroc(np.array([-0.0, 0.0, -0.1]), np.array([0, 1, 0])) == 0.75
    huge = np.array([1e300, 2e300, -1e300, -2e300, 1e-310, 3.0, 3.0 + 1e-15])  # beyond float32
    labels = np.array([1, 0, 1, 0, 0, 1, 0])
    assert auroc(huge, labels) == pytest.approx(roc_auc_score(labels, huge), abs=1e-12)
    assert auroc(np.array([1, 5, 3, 3], dtype=np.int64), np.array([0, 1, 1, 0])) == 0.875


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_pools_all_pixels(kind: str) -> None:
    maps, masks = random_pixels(1, kind)
    scores, labels = maps.max(axis=(1, 2)), np.array([1, 1, 1, 0])
    result = evaluate(scores, labels, maps, masks)
    assert set(result) == {*IMAGE_KEYS, *PIXEL_KEYS, "mad"}
    assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert result["pixel_ap"] == pytest.approx(
        average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12
    )
    assert result["pixel_f1max"] == pytest.approx(reference_f1_max(maps.ravel(), masks.ravel()), abs=1e-12)
    assert result["pixel_aupro"] == pytest.approx(reference_aupro(maps, masks), abs=1e-9)
    assert result["mad"] == pytest.approx(np.mean([result[k] for k in (*IMAGE_KEYS, *PIXEL_KEYS)]))
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in result.values())
    assert evaluate(scores, labels, maps, masks, aupro_limit=0.05)["pixel_aupro"] == pytest.approx(
        aupro(maps, masks, limit=0.05), abs=1e-12
    )


def test_evaluate_without_masks_has_no_pixel_keys() -> None:
    scores, labels = random_images(0, np.float64)
    maps = np.random.default_rng(0).random((200, 4, 4))
    for result in (evaluate(scores, labels), evaluate(scores, labels, maps)):
        assert set(result) == set(IMAGE_KEYS)
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in result.values())


def test_nonfinite_inputs_raise() -> None:
    maps, masks = random_pixels(0, "continuous64")
    scores, labels = maps.max(axis=(1, 2)), np.array([1, 1, 1, 0])
    with pytest.raises(ValueError, match=r"image_scores contains 1 non-finite values \(1 NaN, 0 inf\)"):
        evaluate(np.where(np.arange(4) == 2, np.nan, scores), labels)
    bad = maps.copy()
    bad[0, 0, :2] = [np.inf, -np.inf]
    with pytest.raises(ValueError, match=r"anomaly_maps contains 2 non-finite values \(0 NaN, 2 inf\)"):
        evaluate(scores, labels, bad, masks)
    with pytest.raises(ValueError, match="maps contains 2 non-finite"):
        aupro(bad, masks)
    with pytest.raises(ValueError, match="scores contains 1 non-finite"):
        auroc(np.array([0.1, np.nan]), np.array([0, 1]))


def test_invalid_labels_shapes_and_masks_raise() -> None:
    maps, masks = random_pixels(0, "continuous64")
    scores, labels = maps.max(axis=(1, 2)), np.array([1, 1, 1, 0])
    with pytest.raises(ValueError, match="only one class"):
        evaluate(scores, np.ones(4, dtype=int))
    with pytest.raises(ValueError, match="only one class"):
        auroc(scores, np.zeros(4))
    with pytest.raises(ValueError, match="0 and 1"):
        auroc(scores, np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="shape"):
        evaluate(scores, labels[:3])
    with pytest.raises(ValueError, match="shape"):
        evaluate(scores, labels, maps, masks[:, :-1])
    with pytest.raises(ValueError, match="holds 3 maps but image_scores 4"):
        evaluate(scores, labels, maps[:3], masks[:3])
    with pytest.raises(ValueError, match="dimensions"):
        evaluate(scores, labels, maps[0], masks[0])
    with pytest.raises(ValueError, match="no defect pixels"):
        evaluate(scores, labels, maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="no defect pixels"):
        aupro(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="normal pixels"):
        aupro(maps, np.ones_like(masks))
    with pytest.raises(ValueError, match="without anomaly_maps"):
        evaluate(scores, labels, None, masks)
    with pytest.raises(ValueError, match="limit"):
        aupro(maps, masks, limit=0.0)
    with pytest.raises(ValueError, match="limit"):
        evaluate(scores, labels, maps, masks, aupro_limit=1.5)


def reference_aupimo(
    maps: np.ndarray, masks: np.ndarray, thresholds: np.ndarray, fpr_bounds: tuple[float, float]
) -> np.ndarray:
    """anomalib's AUPIMO procedure, literally, on the given ascending thresholds (float [K]).

    Per threshold: shared FPR = mean over normal images of their fraction of pixels >= t, TPR of
    image i = fraction of its defect pixels >= t. Each bound goes to the first threshold whose
    shared FPR is nearest; trapezoids on ln FPR in between; / ln(upper / lower); clip to [0, 1].
    """
    normal = ~masks.any(axis=(1, 2))
    n_defect = masks.sum(axis=(1, 2))
    shared_fpr, tprs = [], []
    for t in thresholds:
        predicted = maps >= t
        shared_fpr.append(predicted[normal].mean(axis=(1, 2)).mean())
        with np.errstate(invalid="ignore"):
            tprs.append((predicted & masks).sum(axis=(1, 2)) / n_defect)
    fpr, tpr = np.array(shared_fpr), np.array(tprs).T  # [K], [N, K]
    lower, upper = fpr_bounds
    first, last = int(np.argmin(np.abs(fpr - upper))), int(np.argmin(np.abs(fpr - lower)))
    x, y = np.log(fpr[first : last + 1][::-1]), tpr[:, first : last + 1][:, ::-1]
    area = np.sum((x[1:] - x[:-1]) * (y[:, 1:] + y[:, :-1]) / 2, axis=1)
    return np.clip(area / np.log(upper / lower), 0, 1)


def normal_range_thresholds(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Every distinct score of ``maps`` between the normal images' min and max (anomalib's range)."""
    normal_scores = maps[~masks.any(axis=(1, 2))]
    scores = np.unique(maps)
    return scores[(scores >= normal_scores.min()) & (scores <= normal_scores.max())]


def random_aupimo_case(seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """6 maps of 16x16 (maps [6, 16, 16], masks bool [6, 16, 16]); images 0-2 are normal (768 pixels).

    ``kind``: "quantised32" (400 levels, ties), "continuous64" or "subulp64" (quantised plus steps
    of 1e-12 that float32 cannot tell apart). Defect pixels score higher on average.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((6, 16, 16), dtype=bool)
    masks[3:] = rng.random((3, 16, 16)) > 0.8
    masks[3, 4:9, 2:12] = True
    if kind == "continuous64":
        return rng.random(masks.shape) + 0.3 * masks, masks
    levels = rng.integers(0, 400, masks.shape) + 120 * masks
    maps = (levels / 64 - 2).astype(np.float32 if kind == "quantised32" else np.float64)
    if kind == "subulp64":
        maps += rng.integers(0, 3, masks.shape) * 1e-12
    return maps, masks


def ranked_pair(shape: tuple[int, int], defect_scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """maps float64 [2, H, W], masks bool [2, H, W]: image 0 is normal, its H*W pixels score
    0 .. H*W - 1 (shuffled, so the k-th highest scores H*W - k); image 1 has one defect pixel per
    entry of ``defect_scores`` and its other pixels score -5."""
    size = shape[0] * shape[1]
    maps = np.full((2, size), -5.0)
    maps[0] = np.random.default_rng(0).permutation(size)
    masks = np.zeros((2, size), dtype=bool)
    masks[1, : len(defect_scores)] = True
    maps[1, : len(defect_scores)] = defect_scores
    return maps.reshape(2, *shape), masks.reshape(2, *shape)


@pytest.mark.parametrize("kind", ["quantised32", "continuous64", "subulp64"])
@pytest.mark.parametrize("seed", range(3))
def test_aupimo_matches_literal_anomalib_procedure(seed: int, kind: str) -> None:
    maps, masks = random_aupimo_case(seed, kind)
    thresholds = normal_range_thresholds(maps, masks)
    for bounds in ((1e-2, 1e-1), (1.5e-2, 0.45), (0.05, 1.0)):  # x 768 normal pixels: only 1 is whole
        result = aupimo(maps, masks, bounds)
        assert np.isnan(result[:3]).all() and np.isfinite(result[3:]).all()
        np.testing.assert_allclose(result, reference_aupimo(maps, masks, thresholds, bounds), atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_aupimo_equals_anomalib_linspace_grid_that_separates_all_scores(seed: int) -> None:
    # Integer scores; anomalib's grid from the normal min to max with step 1/8 holds every score and
    # points between them, so its binned AUPIMO is the exact one.
    rng = np.random.default_rng(seed)
    masks = np.zeros((5, 20, 20), dtype=bool)
    masks[2:, 5:12, 6:15] = True
    maps = np.minimum(rng.geometric(0.08, masks.shape) + 6 * masks, 90).astype(np.float32)
    normal_scores = maps[:2]
    low, high = float(normal_scores.min()), float(normal_scores.max())
    grid = np.linspace(low, high, int(8 * (high - low)) + 1)
    assert set(np.unique(maps[(maps >= low) & (maps <= high)])) <= set(grid)
    for bounds in ((1e-2, 1e-1), (5e-3, 0.3)):
        np.testing.assert_allclose(
            aupimo(maps, masks, bounds), reference_aupimo(maps, masks, grid, bounds), atol=1e-12
        )


def test_aupimo_reproduces_anomalibs_decade_example() -> None:
    # anomalib's test_aupimo_values case on 1e5 instead of 1e6 pixels: the normal image has 1, 9, 90,
    # 900, 9000, 90000 pixels at scores 6 .. 1, so the shared FPR is 1e-5 .. 1 at thresholds 6 .. 1.
    # Image 1: the same map, every pixel a defect (TPR = FPR); image 2: its 10% highest pixels
    # (TPR = min(10 FPR, 1)). One trapezoid per decade, each decade one unit of ln FPR / ln 10.
    scores = np.ones(100_000)
    for top in (10_000, 1000, 100, 10, 1):
        scores[:top] += 1
    maps = np.broadcast_to(scores.reshape(250, 400), (3, 250, 400))
    masks = np.zeros((3, 100_000), dtype=bool)
    masks[1], masks[2, :10_000] = True, True
    masks = masks.reshape(3, 250, 400)
    expected = {
        (1e-5, 1e-4): [(1e-5 + 1e-4) / 2, (1e-4 + 1e-3) / 2],
        (1e-3, 1e-1): [(1e-3 + 2e-2 + 1e-1) / 4, (1e-2 + 2e-1 + 1) / 4],
        (1e-1, 1.0): [(1e-1 + 1) / 2, 1.0],
    }
    for bounds, values in expected.items():
        for scaled in (maps, 10 * maps):
            result = aupimo(scaled, masks, bounds)
            assert np.isnan(result[0])
            np.testing.assert_allclose(result[1:], values, rtol=1e-10)  # 1e5 summed weights


def test_aupimo_hand_computed() -> None:
    # 1e5 normal pixels with distinct scores: FPR 1e-5 .. 1e-4 = the 1 .. 10 highest normal pixels.
    shape, top = (250, 400), 100_000.0
    assert AUPIMO_FPR_BOUNDS == (1e-5, 1e-4)
    assert aupimo(*ranked_pair(shape, [top, top + 1]))[1] == pytest.approx(1.0, abs=1e-12)  # perfect
    assert aupimo(*ranked_pair(shape, [-1.0, -2.0]))[1] == 0.0  # below every normal pixel
    assert aupimo(*ranked_pair(shape, [top, -1, -1, -1]))[1] == pytest.approx(0.25, abs=1e-12)  # flat
    # Above the 9th highest normal pixel (score top - 9), the second defect pixel has TPR 0.5 up to
    # FPR 9e-5; tied with the 10th it joins only at FPR 1e-4, so the last step [ln 9, ln 10] is a
    # trapezoid from 0.5 to 1; strictly between the 9th and 10th it already counts at FPR 9e-5.
    ln10 = np.log(10)
    tied = (0.5 * np.log(9) + 0.75 * np.log(10 / 9)) / ln10
    assert aupimo(*ranked_pair(shape, [top, top - 10]))[1] == pytest.approx(tied, abs=1e-12)
    between = (0.5 * np.log(9) + 1.0 * np.log(10 / 9)) / ln10
    assert aupimo(*ranked_pair(shape, [top, top - 9.5]))[1] == pytest.approx(between, abs=1e-12)
    assert aupimo(*ranked_pair(shape, [top, top - 11]))[1] == pytest.approx(0.5, abs=1e-12)


def test_aupimo_moves_bounds_to_nearest_reachable_fpr() -> None:
    # 160000 normal pixels: 1e-5 is 1.6 pixels, moved to 2; 1e-4 is 16 (no interpolation), so a flat
    # TPR of 0.25 spans ln 8 of the nominal ln 10. With 140000 pixels (1.4 -> 1, 14): ln 14 > ln 10,
    # a perfect map clips to 1.
    flat = [1e6, -1, -1, -1]
    assert aupimo(*ranked_pair((400, 400), flat))[1] == pytest.approx(0.25 * np.log(8) / np.log(10))
    assert aupimo(*ranked_pair((350, 400), flat))[1] == pytest.approx(0.25 * np.log(14) / np.log(10))
    assert aupimo(*ranked_pair((350, 400), [1e6]))[1] == 1.0


def test_aupimo_bound_halfway_between_two_fprs_takes_the_larger() -> None:
    # 8 normal pixels: reachable FPRs 1/8, 3/8, 1. The upper bound 1/4 is exactly halfway between
    # 1/8 and 3/8; anomalib's argmin over ascending thresholds takes 3/8. The defect pixel ties with
    # the two 5s: TPR 0 at FPR 1/8, 1 at 3/8, one trapezoid of ln 3 / 2, divided by ln 2.
    maps = np.array([[[9, 5, 5, 1, 1, 1, 1, 1]], [[5, 0, 0, 0, 0, 0, 0, 0]]], dtype=np.float32)
    masks = np.zeros_like(maps, dtype=bool)
    masks[1, 0, 0] = True
    result = aupimo(maps, masks, (1 / 8, 1 / 4))
    assert result[1] == pytest.approx(np.log(3) / 2 / np.log(2), abs=1e-12)
    thresholds = normal_range_thresholds(maps, masks)
    np.testing.assert_allclose(result, reference_aupimo(maps, masks, thresholds, (1 / 8, 1 / 4)))


def test_aupimo_invariances() -> None:
    maps, masks = random_aupimo_case(7, "continuous64")
    bounds = (1e-2, 1e-1)
    expected = aupimo(maps, masks, bounds)
    np.testing.assert_allclose(aupimo(np.exp(3 * maps) - 2, masks, bounds), expected, atol=1e-12)
    order = np.array([4, 0, 5, 2, 3, 1])
    np.testing.assert_allclose(aupimo(maps[order], masks[order], bounds), expected[order], atol=1e-12)
    unused = maps.copy()  # non-defect pixels of anomalous images enter neither axis
    unused[3:][~masks[3:]] = np.random.default_rng(1).random(np.count_nonzero(~masks[3:])) * 9
    np.testing.assert_allclose(aupimo(unused, masks.astype(np.uint8), bounds), expected, atol=1e-12)
    assert np.isnan(aupimo(maps[:3], masks[:3], bounds)).all()  # no anomalous image: all NaN


def test_aupimo_invalid_inputs_raise() -> None:
    maps, masks = random_aupimo_case(0, "continuous64")
    bounds = (1e-2, 1e-1)
    with pytest.raises(ValueError, match="all 3 masks hold defect pixels"):
        aupimo(maps[3:], masks[3:], bounds)
    with pytest.raises(ValueError, match="shape"):
        aupimo(maps, masks[:, :-1], bounds)
    with pytest.raises(ValueError, match="dimensions"):
        aupimo(maps[0], masks[0], bounds)
    with pytest.raises(ValueError, match="0 and 1"):
        aupimo(maps, masks * 2, bounds)
    bad = maps.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"maps contains 1 non-finite values \(1 NaN"):
        aupimo(bad, masks, bounds)
    for wrong in ((0.0, 0.1), (0.1, 0.1), (0.1, 1.5), (0.2, 0.1), (0.1,), (np.nan, 0.1)):
        with pytest.raises(ValueError, match="fpr_bounds must be"):
            aupimo(maps, masks, wrong)
    # 768 normal pixels: the default lower bound 1e-5 would need 100000.
    with pytest.raises(ValueError, match="needs at least 100000 untied normal pixels"):
        aupimo(maps, masks)
    with pytest.raises(ValueError, match="lower FPR bound"):  # 99999 normal pixels
        aupimo(*ranked_pair((99_999, 1), [1e6]))
    tied_top = ranked_pair((250, 400), [1e6])[0]
    tied_top[0, 0, :2] = 1e5  # two normal pixels share the top score: smallest FPR 2e-5
    with pytest.raises(ValueError, match="2 of their 100000 pixels at the top score"):
        aupimo(tied_top, ranked_pair((250, 400), [1e6])[1])
    # Normal scores 9, 8 and eight 1s: reachable FPRs 0.1, 0.2, 1; 0.25 and 0.5 are both nearest 0.2.
    two = np.zeros((2, 1, 10))
    two[0, 0] = [9, 8, 1, 1, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"fall on the one shared FPR 0\.2"):
        aupimo(two, two == 0, (0.25, 0.5))
