"""Tests of adbench.metrics against literal reference implementations and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from adbench.metrics import (
    IMAGE_KEYS,
    PIXEL_KEYS,
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
