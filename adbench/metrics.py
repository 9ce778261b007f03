"""Anomaly-detection metrics: image/pixel AUROC, AP, F1-max, the MVTec AD AUPRO, ADer's mAD, AUPIMO.

Every metric is exact (no threshold binning) and vectorised. The scores are sorted once in
descending order; a run of tied scores is one threshold t (a sample is predicted anomalous when
its score >= t), and every curve is read off cumulative sums at the last element of each run.

Pixel metrics (:func:`evaluate`, :func:`aupro`) use that the pixel ROC and PRO curves bend only at
defect pixels: between two distinct defect scores only normal pixels join, so TPR and PRO stay
constant. The curves are therefore read at two points per distinct defect score s, all pixels
> s and all pixels >= s, with the normal-pixel counts found by binary search in the normal scores
sorted alone (a plain float sort, without payload, is the cost that dominates). AUROC and F1-max
are unchanged by dropping the horizontal points, AP and AU-PRO up to float rounding. :func:`aupro`
sorts only the normal scores >= t*, the highest normal score with more than a fraction ``limit``
of the normal pixels at or above it, selected by ``np.partition``; the curve then stops at t*, its
first point past the limit, which the interpolation at the limit needs. :func:`pro_curve` keeps one
point per distinct score, from one sort of all pixels.

Conventions: higher scores mean more anomalous; labels and masks are 1/True for anomalous; every
returned value is a fraction in [0, 1] (not percent).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "AUPIMO_FPR_BOUNDS",
    "IMAGE_KEYS",
    "PIXEL_KEYS",
    "aupimo",
    "aupro",
    "auroc",
    "average_precision",
    "evaluate",
    "f1_max",
    "pro_curve",
]

IMAGE_KEYS = ("image_auroc", "image_ap", "image_f1max")
PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro")
AUPIMO_FPR_BOUNDS = (1e-5, 1e-4)  # AUPIMO's shared-FPR integration range (anomalib's default)

# 8-connectivity inside each [H, W] slice of an [N, H, W] stack and no connection across images,
# so that one ndimage.label call numbers the regions of all images with distinct ids.
_STRUCTURE_8 = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_8[1] = True


def _finite(name: str, values: object, ndim: int | None = None) -> np.ndarray:
    """``values`` as a real array; raise ValueError on NaN/inf, a bad dtype or a wrong ``ndim``."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        n_bad = arr.size - np.count_nonzero(np.isfinite(arr))
        if n_bad:
            n_nan = np.count_nonzero(np.isnan(arr))
            raise ValueError(
                f"{name} contains {n_bad} non-finite values ({n_nan} NaN, {n_bad - n_nan} inf) out of "
                f"{arr.size}; fix the scores (e.g. a division by zero or an overflow) before evaluating"
            )
    return arr


def _binary(name: str, values: object, shape: tuple[int, ...], like: str) -> np.ndarray:
    """``values`` as a bool array of ``shape`` (the shape of ``like``); only 0/1 or bool allowed."""
    arr = np.asarray(values)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape} but {like} has shape {shape}; they must match")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf" or np.count_nonzero((arr == 0) | (arr == 1)) != arr.size:
        raise ValueError(f"{name} must be bool or hold only 0 and 1 (dtype {arr.dtype})")
    return arr != 0


def _both_classes(name: str, labels: np.ndarray) -> None:
    """Raise ValueError unless the bool array ``labels`` holds both True and False."""
    n_pos = np.count_nonzero(labels)
    if n_pos in (0, labels.size):
        which = "anomalous" if n_pos else "normal"
        raise ValueError(
            f"{name} contain only one class (all {labels.size} are {which}); AUROC, AP and F1-max "
            "need both normal and anomalous samples"
        )


def _descending_key(values: np.ndarray) -> np.ndarray:
    """uint32 [P] keys that increase as the float32 ``values`` [P] (no NaN) decrease; equal values,
    -0.0 and +0.0 included, get equal keys."""
    bits = (values + np.float32(0.0)).view(np.uint32)  # "+ 0" makes -0.0 into +0.0
    # Negative floats keep their bits (bigger magnitude, bigger bits); the others map to 0x7FFFFFFF - bits.
    return np.where(bits >= 0x80000000, bits, ~bits & np.uint32(0x7FFFFFFF))


def _run_ends(sorted_keys: np.ndarray) -> np.ndarray:
    """int64 [T]: the index of the last element of each run of equal values in ``sorted_keys`` [P]."""
    return np.append(np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]), sorted_keys.size - 1)


def _rank(scores: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort once by descending score.

    scores: finite real [P], P < 2**32; payload: non-negative integers < 2**32 [P] (labels or
    region ids). Returns (payload uint32 [P] in descending-score order, ends int64 [T]): ``ends``
    holds the index of the last element of each run of tied scores, one per distinct score,
    highest first. No metric depends on the order inside a run of tied scores.

    An argsort is avoided, being several times slower than sorting uint64 values: the sort key
    packs the float32 score key (high 32 bits) with the payload (low 32 bits). Scores that float32
    does not represent exactly are compared as float64: the low bits then carry the element index,
    and since rounding to float32 is monotone only runs of equal float32 keys can be out of
    float64 order; those few runs are re-sorted by their float64 values.
    """
    with np.errstate(over="ignore"):  # huge float64 scores round to inf, still a monotone rounding
        s32 = np.asarray(scores, dtype=np.float32)
    keys = _descending_key(s32).astype(np.uint64) << 32
    if scores.dtype == np.float32 or np.array_equal(s32, scores):
        keys |= payload.astype(np.uint64)
        keys.sort()
        return keys.astype(np.uint32), _run_ends(keys >> 32)  # astype keeps the low 32 bits
    keys |= np.arange(scores.size, dtype=np.uint64)
    keys.sort()
    order = keys.astype(np.uint32).astype(np.intp)  # intp indices gather several times faster
    ordered = np.asarray(scores, dtype=np.float64)[order]
    ascents = np.flatnonzero(ordered[1:] > ordered[:-1])
    if ascents.size:
        run = np.cumsum(np.append(0, (keys[1:] >> 32) != (keys[:-1] >> 32)))  # float32 key run id
        bad_run = np.zeros(run[-1] + 1, dtype=bool)
        bad_run[run[ascents]] = True
        fix = np.flatnonzero(bad_run[run])
        fixed = fix[np.lexsort((-ordered[fix], run[fix]))]
        order[fix], ordered[fix] = order[fixed], ordered[fixed]
    return payload[order].astype(np.uint32), _run_ends(ordered)


def _cumulative(sorted_payload: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tps, fps): int64 [T], positives (payload > 0) and negatives scored >= each distinct score."""
    tps = np.cumsum(sorted_payload != 0)[ends]
    return tps, ends + 1 - tps


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid-rule area under y(x) for sample points x [M] (non-decreasing) and y [M]."""
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1])) / 2)


def _auroc(tps: np.ndarray, fps: np.ndarray) -> float:
    """ROC AUC from the cumulative counts: trapezoids between tie groups (as sklearn), summed
    exactly in integers as sum_j (fps_j - fps_{j-1}) (tps_j + tps_{j-1}) / (2 #pos #neg)."""
    d_fps = np.diff(fps, prepend=0)
    twice_area = int(d_fps @ tps) + int(d_fps[1:] @ tps[:-1])
    return twice_area / (2 * int(tps[-1]) * int(fps[-1]))


def _average_precision(tps: np.ndarray, fps: np.ndarray) -> float:
    """Step-wise AP, sum over thresholds of (R_n - R_{n-1}) P_n, as sklearn."""
    return float(np.sum(np.diff(tps, prepend=0) * (tps / (tps + fps))) / tps[-1])


def _f1_max(tps: np.ndarray, fps: np.ndarray) -> float:
    """Max over thresholds of 2PR/(P+R) = 2 TP/(TP + FP + #positives); 0 where TP = 0."""
    return float(np.max(2 * tps / (tps + fps + tps[-1])))


def _counts(
    scores: object, labels: object, names: tuple[str, str] = ("scores", "labels")
) -> tuple[np.ndarray, np.ndarray]:
    """Validate scores/labels of the same shape (flattened) and return (tps, fps), int64 [T]."""
    score_arr = _finite(names[0], scores)
    label_arr = _binary(names[1], labels, score_arr.shape, names[0])
    _both_classes(names[1], label_arr)
    return _cumulative(*_rank(score_arr.ravel(), label_arr.ravel()))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC AUC; scores float and labels 0/1 or bool of the same shape (flattened)."""
    return _auroc(*_counts(scores, labels))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision as sklearn's ``average_precision_score``; inputs as :func:`auroc`."""
    return _average_precision(*_counts(scores, labels))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """Max F1 over all distinct score thresholds (score >= t is positive); inputs as :func:`auroc`."""
    return _f1_max(*_counts(scores, labels))


def _defect_regions(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected regions of the bool masks gt [N, H, W].

    Returns (region id of each defect pixel, int32 [D] in the order of ``gt[gt]``; PRO weights,
    float64 [R + 1]: 1 / (R x region size) for ids 1..R, 0 for id 0). Raises ValueError when gt
    holds no defect pixel or no normal pixel. Only images with defects are labelled.
    """
    with_defects = gt[gt.any(axis=(1, 2))]
    regions, n_regions = ndimage.label(with_defects, structure=_STRUCTURE_8)
    if n_regions == 0:
        raise ValueError(
            "masks contain no defect pixels, so pixel AUROC/AP/F1-max and AUPRO are undefined; "
            "pass masks=None for a category without pixel annotations"
        )
    defect_regions = regions[with_defects]
    if defect_regions.size == gt.size:
        raise ValueError("masks mark every pixel as defect; pixel metrics need normal pixels too")
    weights = np.zeros(n_regions + 1)
    weights[1:] = 1.0 / (n_regions * np.bincount(defect_regions, minlength=n_regions + 1)[1:])
    return defect_regions, weights


def _pixel_counts(maps: np.ndarray, masks: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort the pixels once and return (tps, fps, pro) at each distinct pixel score, highest first.

    maps: validated float [N, H, W]; masks: bool or 0/1 [N, H, W]. tps/fps: int64 [T], defect /
    normal pixels scored >= the score; pro: float64 [T], the mean over all 8-connected GT regions
    of the fraction of the region scored >= the score (clipped to <= 1).
    """
    gt = _binary("masks", masks, maps.shape, "anomaly_maps")
    defect_regions, weights = _defect_regions(gt)
    regions = np.zeros(gt.shape, dtype=np.uint32)
    regions[gt] = defect_regions
    sorted_regions, ends = _rank(maps.ravel(), regions.ravel())
    tps, fps = _cumulative(sorted_regions, ends)
    pro = np.cumsum(weights[sorted_regions])[ends]
    return tps, fps, np.minimum(pro, 1.0, out=pro)


def _pro_points(fps: np.ndarray, pro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) float64 [T + 2]: the curve of :func:`_pixel_counts` with (0, 0) and (1, 1) added."""
    fpr = np.concatenate([[0.0], fps / fps[-1], [1.0]])
    return fpr, np.concatenate([[0.0], pro, [1.0]])


def _check_limit(limit: float) -> None:
    """Raise ValueError unless the AUPRO FPR limit is in (0, 1]."""
    if not 0 < limit <= 1:
        raise ValueError(f"the AUPRO FPR limit must be in (0, 1], got {limit}")


def _normalised_area(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Area under pro(fpr) for fpr in [0, limit], divided by ``limit`` (in (0, 1]).

    fpr, pro: float64 [M], fpr non-decreasing from 0 to 1. If ``limit`` is no sample point, pro is
    interpolated linearly at the limit and the partial trapezoid is added.
    """
    stop = int(np.searchsorted(fpr, limit, side="right"))  # fpr[stop - 1] <= limit < fpr[stop]
    x, y = fpr[:stop], pro[:stop]
    area = _trapezoid(x, y)
    if x[-1] < limit:
        y_limit = y[-1] + (pro[stop] - y[-1]) * (limit - x[-1]) / (fpr[stop] - x[-1])
        area += (y_limit + y[-1]) * (limit - x[-1]) / 2
    return float(area / limit)


def _comparable(maps: np.ndarray) -> np.ndarray:
    """maps [N, H, W] as float32 when float32 holds every value exactly, else as float64: the
    comparison type of :func:`_rank` (float32 sorts faster)."""
    if maps.dtype == np.float32:
        return maps
    with np.errstate(over="ignore"):
        as_float32 = maps.astype(np.float32)
    return as_float32 if np.array_equal(as_float32, maps) else maps.astype(np.float64, copy=False)


def _top_threshold(normal: np.ndarray, fpr_limit: float) -> tuple[np.ndarray, np.generic, int]:
    """Sort the normal scores the curve up to ``fpr_limit`` needs, in place.

    normal: float [B], the scores of all normal pixels (reordered in place). t* is the highest
    score with (normal scores >= t*) / B > fpr_limit; with fpr_limit >= 1 there is none and t* is
    -inf. Returns (ascending float [K], every normal score > t* and some equal to it; t*; the
    number of normal scores >= t*). The scores >= t* are selected by ``np.partition``, not a sort.
    """
    n_normal = normal.size
    # The fewest normal pixels whose FPR, computed as the curve does (count / n_normal), is > limit.
    past_limit = max(int(fpr_limit * n_normal) - 1, 0)
    while past_limit / n_normal <= fpr_limit:  # at most three steps
        past_limit += 1
    if past_limit > n_normal:
        normal.sort()
        return normal, normal.dtype.type(-np.inf), n_normal
    kth = n_normal - past_limit
    normal.partition(kth)
    threshold, top = normal[kth], normal[kth:]
    top.sort()
    return top, threshold, n_normal - np.count_nonzero(normal[:kth] < threshold)


def _pixel_curve(
    maps: np.ndarray, masks: object, fpr_limit: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The pixel ROC and PRO curves at their bends, from the top score to the first point past
    FPR ``fpr_limit`` (to the end for 1), read off the normal scores sorted alone.

    maps: validated float [N, H, W]; masks: bool or 0/1 [N, H, W]. Returns (tps, fps, pro,
    n_normal): tps/fps int64 [K], defect / normal pixels scored above a threshold; pro float64
    [K], as :func:`_pixel_counts`; n_normal, the number of normal pixels. Each distinct defect
    score s above t* (:func:`_top_threshold`) and t* itself give two points: pixels > s and
    pixels >= s; (0, 0) is left out. Every other threshold of :func:`_pixel_counts` adds normal
    pixels only, a point on a horizontal segment between these. With fpr_limit < 1 the last
    point, at t*, is the first whose FPR exceeds fpr_limit.
    """
    gt = _binary("masks", masks, maps.shape, "anomaly_maps")
    defect_regions, weights = _defect_regions(gt)
    values = _comparable(maps)
    ranked_normal, threshold, n_normal_at_threshold = _top_threshold(values[~gt], fpr_limit)
    n_normal = int(gt.size - defect_regions.size)
    defect = values[gt]
    sorted_regions, ends = _rank(defect, defect_regions)
    scores = np.unique(defect)[::-1]  # one per run of ``ends``, highest first
    above = np.count_nonzero(scores > threshold)
    scores = np.append(scores[:above], threshold)
    n_defect = np.append(ends[:above] + 1, np.count_nonzero(defect >= threshold))  # at >= scores
    n_defect_above = np.append(0, n_defect[:-1])  # at > scores
    ascending = scores[::-1]
    n_normal_above = ranked_normal.size - np.searchsorted(ranked_normal, ascending, "right")[::-1]
    n_normal_at = ranked_normal.size - np.searchsorted(ranked_normal, ascending, "left")[::-1]
    n_normal_at[-1] = n_normal_at_threshold
    tps = np.column_stack((n_defect_above, n_defect)).ravel()
    fps = np.column_stack((n_normal_above, n_normal_at)).ravel()
    pro = np.minimum(np.append(0.0, np.cumsum(weights[sorted_regions]))[tps], 1.0)
    drawn = tps + fps > 0
    return tps[drawn], fps[drawn], pro[drawn], n_normal


def _pro_area(fps: np.ndarray, pro: np.ndarray, n_normal: int, limit: float) -> float:
    """:func:`_normalised_area` of the (fps int64 [K], pro float64 [K]) points of :func:`_pixel_curve`
    with (0, 0) prepended; n_normal: the number of normal pixels."""
    return _normalised_area(np.append(0.0, fps / n_normal), np.append(0.0, pro), limit)


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve of MVTec AD (Bergmann et al., IJCV 2021).

    maps: float [N, H, W] anomaly maps; masks: bool [N, H, W] ground truth of all test images
    (normal ones included). Regions are the 8-connected components of each mask. Returns
    (fpr, pro), float64 [T + 2]: one point per distinct score (highest first), the FPR over all
    normal pixels and the mean over regions of the fraction of the region scored >= that score,
    with (0, 0) prepended and (1, 1) appended. Raises ValueError if no pixel is a defect.
    """
    arr = _finite("maps", maps, ndim=3)
    _, fps, pro = _pixel_counts(arr, masks)
    return _pro_points(fps, pro)


def aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """Area under :func:`pro_curve` for FPR in [0, ``limit``], divided by ``limit`` (a fraction).

    maps: float [N, H, W]; masks: bool [N, H, W]. Trapezoid rule, with PRO interpolated linearly
    at ``limit`` when it falls between two curve points. Only the normal pixels above the FPR-limit
    threshold are sorted (see the module docstring).
    """
    _check_limit(limit)
    arr = _finite("maps", maps, ndim=3)
    _, fps, pro, n_normal = _pixel_curve(arr, masks, limit)
    return _pro_area(fps, pro, n_normal, limit)


def evaluate(
    image_scores: np.ndarray,
    image_labels: np.ndarray,
    anomaly_maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    aupro_limit: float = 0.3,
) -> dict[str, float]:
    """All metrics of one category's test set, as fractions in [0, 1].

    image_scores: float [N]; image_labels: 0/1 [N]; anomaly_maps: float [N, H, W]; masks: bool
    [N, H, W] for every test image (normal ones included), or None for a category without pixel
    annotations. Returns :data:`IMAGE_KEYS`; with masks also :data:`PIXEL_KEYS` (pixel metrics
    pool all pixels of all images) and ``mad``, the mean of those seven (ADer's mAD). Raises
    ValueError on NaN/inf, shape mismatches, labels of one class, or masks without defect pixels.
    """
    _check_limit(aupro_limit)
    scores = _finite("image_scores", image_scores, ndim=1)
    tps, fps = _counts(scores, image_labels, ("image_scores", "image_labels"))
    results = {
        "image_auroc": _auroc(tps, fps),
        "image_ap": _average_precision(tps, fps),
        "image_f1max": _f1_max(tps, fps),
    }
    maps = None if anomaly_maps is None else _finite("anomaly_maps", anomaly_maps, ndim=3)
    if maps is not None and len(maps) != len(scores):
        raise ValueError(f"anomaly_maps holds {len(maps)} maps but image_scores {len(scores)} scores")
    if masks is None:
        return results
    if maps is None:
        raise ValueError("masks were given without anomaly_maps; pixel metrics need both")
    tps, fps, pro, n_normal = _pixel_curve(maps, masks)
    results["pixel_auroc"] = _auroc(tps, fps)
    results["pixel_ap"] = _average_precision(tps, fps)
    results["pixel_f1max"] = _f1_max(tps, fps)
    results["pixel_aupro"] = _pro_area(fps, pro, n_normal, aupro_limit)
    results["mad"] = float(np.mean([results[key] for key in IMAGE_KEYS + PIXEL_KEYS]))
    return results


def _check_fpr_bounds(fpr_bounds: tuple[float, float]) -> tuple[float, float]:
    """(lower, upper) as floats; raise ValueError unless 0 < lower < upper <= 1."""
    bounds = np.asarray(fpr_bounds, dtype=np.float64)
    if bounds.shape != (2,) or not 0 < bounds[0] < bounds[1] <= 1:
        raise ValueError(f"fpr_bounds must be (lower, upper) with 0 < lower < upper <= 1, got {fpr_bounds!r}")
    return float(bounds[0]), float(bounds[1])


def _nearest_level(counts: np.ndarray, n_normal: int, fpr: float) -> int:
    """The value of ``counts`` (non-decreasing normal-pixel counts, int64 [T]) whose shared FPR
    ``count / n_normal`` is nearest to ``fpr``; on a tie the larger one (anomalib's argmin over
    thresholds in ascending order, i.e. over FPRs in descending order, takes the first)."""
    at_or_above = min(int(np.searchsorted(counts, fpr * n_normal)), counts.size - 1)
    larger, smaller = counts[at_or_above], counts[max(at_or_above - 1, 0)]
    return int(smaller if abs(smaller / n_normal - fpr) < abs(larger / n_normal - fpr) else larger)


def aupimo(
    maps: np.ndarray, masks: np.ndarray, fpr_bounds: tuple[float, float] = AUPIMO_FPR_BOUNDS
) -> np.ndarray:
    """Per-image AUPIMO (Bertoldo et al., BMVC 2024): float64 [N], NaN for images without defect pixels.

    maps: float [N, H, W] anomaly maps; masks: bool [N, H, W] ground truth of all test images;
    fpr_bounds: the shared-FPR integration range (fractions). An image is normal when its mask is
    empty. PIMO_i(t) is the fraction of image i's defect pixels scored >= t; its x-axis is the
    shared FPR(t), the fraction of the pixels of all normal images scored >= t. AUPIMO_i is the
    area under PIMO_i against ln FPR over ``fpr_bounds``, divided by ln(upper / lower), in [0, 1].

    The definition is the limit of anomalib's binned implementation (``aupimo_scores`` and
    ``thresh_at_shared_fpr_level`` in src/anomalib/metrics/pimo/functional.py; ``per_image_tpr``,
    ``per_image_fpr`` and the min-max linspace thresholds in binary_classification_curve.py):

    - Thresholds: anomalib uses 300_000 thresholds spaced linearly between the minimum and maximum
      score of the normal images; here every distinct score is one. Both give the same value as
      soon as the grid holds a threshold between every two consecutive distinct scores (tested).
    - Shared FPR: anomalib averages the per-image FPRs of the normal images; with equal H x W that
      is the pooled fraction used here. Non-defect pixels of anomalous images enter nowhere.
    - Bounds: each bound is moved to the nearest shared FPR a threshold reaches (on a tie the
      larger); there is no interpolation, so an integration end can be off by half an FPR step,
      1 / (2 x normal pixels) without ties. The trapezoid rule then runs over ln FPR between those
      two points (a PIMO jump at a fixed FPR adds no area), the area is divided by the nominal
      ln(upper / lower) and clipped to [0, 1].
    - Unreachable range: a lower bound below the smallest reachable FPR (fewer than 1 / lower
      normal pixels, or ties at the top normal score), or both bounds on one FPR, raise ValueError,
      as in anomalib. anomalib's extra refusal of <= 30 grid points in the range (``force``) guards
      its grid resolution and has no exact counterpart; it is not reproduced.
    - Without anomalous images every value is NaN (anomalib raises).

    One sort of the normal images' pixels and all defect pixels, with the image id as payload;
    each defect pixel then adds the ln-FPR width of the curve steps below its score to its image.
    """
    lower, upper = _check_fpr_bounds(fpr_bounds)
    arr = _finite("maps", maps, ndim=3)
    gt = _binary("masks", masks, arr.shape, "maps")
    n_defect = np.count_nonzero(gt, axis=(1, 2))
    normal = n_defect == 0
    if not normal.any():
        raise ValueError(
            f"all {len(gt)} masks hold defect pixels, but AUPIMO's FPR axis comes from normal test images "
            "(empty masks); pass the category's normal test images too"
        )
    # Payload 0: a pixel of a normal image; i + 1: a defect pixel of image i. Other pixels are unused.
    image_ids = np.arange(1, len(gt) + 1, dtype=np.uint32)[:, None, None] * gt
    used = gt | normal[:, None, None]
    payload, ends = _rank(arr[used], image_ids[used])
    normal_at_least = np.cumsum(payload == 0)[ends]  # int64 [T]: normal pixels scored >= each score
    n_normal = int(normal_at_least[-1])
    fewest = int(normal_at_least[np.searchsorted(normal_at_least, 0, side="right")])  # at the top score
    if lower < fewest / n_normal:
        raise ValueError(
            f"the lower FPR bound {lower:g} is below the smallest shared FPR the normal images reach, "
            f"{fewest} of their {n_normal} pixels at the top score; AUPIMO needs at least "
            f"{int(np.ceil(1 / lower))} untied normal pixels (more normal test images or larger maps) "
            "or a larger fpr_bounds[0]"
        )
    lo, hi = (_nearest_level(normal_at_least, n_normal, bound) for bound in (lower, upper))
    if lo == hi:
        raise ValueError(
            f"both fpr_bounds {fpr_bounds!r} fall on the one shared FPR {lo / n_normal:.3g} that the normal "
            "images reach near them (tied scores); widen fpr_bounds or use maps with fewer ties"
        )
    # The step of a distinct score runs from (FPR of the higher scores, TPR(> score)) to (its FPR,
    # TPR(>= score)); the steps of scores first .. stop - 1 have both ends in [lo, hi].
    first = int(np.searchsorted(normal_at_least, lo)) + 1
    stop = int(np.searchsorted(normal_at_least, hi, side="right"))
    width = np.log(normal_at_least[first:stop] / normal_at_least[first - 1 : stop - 1])  # ln FPR steps
    # A defect pixel counts at both ends of the steps at lower scores and at one end of its own:
    # area per defect pixel at a score above, in or below the range.
    pixel_area = np.concatenate(([width.sum()], width.sum() - np.cumsum(width) + width / 2, [0.0]))
    defect = np.flatnonzero(payload)
    position = np.clip(np.searchsorted(ends, defect) - first + 1, 0, width.size + 1)
    area = np.bincount(payload[defect], weights=pixel_area[position], minlength=len(gt) + 1)[1:]
    result = np.full(len(gt), np.nan)
    result[~normal] = np.clip(area[~normal] / (n_defect[~normal] * np.log(upper / lower)), 0.0, 1.0)
    return result
