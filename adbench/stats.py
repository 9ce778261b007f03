"""Bootstrap confidence intervals of the metrics of :mod:`adbench.metrics`.

The test images are resampled with replacement, good (label 0) and defective (label 1) images
separately, so every resample keeps the class counts of the test set (a stratified bootstrap). A
resample is stored as integer weights: how often each test image is drawn. The metrics of a
resample are computed from the weights without building the resampled arrays, and equal those of
the literal resample (the drawn images concatenated, an image drawn twice twice) exactly: the
scores are sorted once, and each resample is a weighted count over that fixed order.

The resampling seed (:data:`BOOT_SEED`) is fixed and independent of the training seed, and the
resamples depend only on the labels in test-set order. Two runs on the same test set (same image
paths in the same order) therefore get the same resamples, their replicates are paired, and a
paired bootstrap of a difference is ``replicates_a - replicates_b``. Values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from adbench.metrics import (
    _STRUCTURE_8,
    IMAGE_KEYS,
    PIXEL_KEYS,
    _binary,
    _both_classes,
    _check_limit,
    _finite,
    _rank,
)

__all__ = [
    "BOOT_SEED",
    "N_BOOT",
    "N_BOOT_PIXEL",
    "BootstrapResult",
    "bootstrap",
    "ci_settings",
    "image_replicates",
    "percentile_interval",
    "pixel_replicates",
    "stratified_weights",
]

BOOT_SEED = 0
N_BOOT = 1000  # image-metric resamples: the default
N_BOOT_PIXEL = 1000  # pixel-metric resamples: 100 maps of 256 x 256 take seconds (adbench/perf/stats.py)
LEVEL = 0.95
_BLOCK_ELEMENTS = 2**20  # pixel_replicates works on [rows, B] float64 arrays of at most 8 MB


def stratified_weights(labels: np.ndarray, n_boot: int, seed: int = BOOT_SEED) -> np.ndarray:
    """int32 [n_boot, N]: how often each of the N test images is drawn in each resample.

    labels: 0/1 or bool [N], 1 = defective. Good and defective images are resampled separately,
    each class keeping its count (a multinomial draw of n_class images from the class, uniformly).
    Each class draws from its own stream of ``seed``, row by row, so the first k rows do not depend
    on ``n_boot``: a run with fewer resamples gets a prefix of the resamples of a longer one.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot (ci.n_boot) must be a positive number of resamples, got {n_boot}")
    label_arr = _finite("labels", labels, ndim=1)
    label_arr = _binary("labels", label_arr, label_arr.shape, "labels")
    weights = np.zeros((n_boot, label_arr.size), dtype=np.int32)
    for cls in (0, 1):
        members = np.flatnonzero(label_arr == cls)
        if members.size == 0:
            continue
        draws = np.random.default_rng([seed, cls]).integers(0, members.size, size=(n_boot, members.size))
        counts = np.bincount((draws + members.size * np.arange(n_boot)[:, None]).ravel(),
                             minlength=n_boot * members.size)
        weights[:, members] = counts.reshape(n_boot, members.size)
    return weights


def _checked_weights(weights: object, n_items: int) -> np.ndarray:
    """``weights`` as int64 [B, n_items]; ValueError unless non-negative integers of that width."""
    arr = np.asarray(weights)
    if arr.ndim != 2 or arr.shape[1] != n_items or arr.shape[0] == 0 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"weights must be integer resample counts of shape [n_boot, {n_items}] (one column per "
            f"test image, e.g. from stratified_weights), got dtype {arr.dtype} and shape {arr.shape}"
        )
    if arr.size and arr.min() < 0:
        raise ValueError("weights must be non-negative resample counts")
    return arr.astype(np.int64)


def _require_defined(name: str, undefined: np.ndarray, why: str) -> None:
    """Raise ValueError naming the first resample where the bool [B] ``undefined`` holds."""
    if undefined.any():
        first = int(np.flatnonzero(undefined)[0])
        raise ValueError(
            f"{name} undefined in {np.count_nonzero(undefined)} of {undefined.size} resamples (first: "
            f"{first}): {why}"
        )


def _curve_metrics(tps: np.ndarray, fps: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC, AP and F1-max [B] from weighted cumulative counts tps, fps: float64 [B, T] at the
    distinct scores, highest first (integer-valued, so every sum below is exact in float64).

    A score whose images all have weight 0 repeats the previous point: it adds no ROC area, no AP
    term (its recall step is 0) and no new F1 value, as in the literal resample where it is absent.
    """
    n_pos, n_neg = tps[:, -1], fps[:, -1]
    _require_defined("image AUROC/AP/F1-max", (n_pos == 0) | (n_neg == 0),
                     "a resample draws no good or no defective image; draw the classes separately "
                     "(stratified_weights)")
    d_fps = np.diff(fps, axis=1, prepend=0)
    twice_area = np.einsum("bt,bt->b", d_fps, tps) + np.einsum("bt,bt->b", d_fps[:, 1:], tps[:, :-1])
    precision = tps / np.maximum(tps + fps, 1)  # counts are integers: tps + fps = 0 only where d_tps = 0
    d_tps = np.diff(tps, axis=1, prepend=0)
    return {
        "auroc": twice_area / (2 * n_pos * n_neg),
        "ap": np.einsum("bt,bt->b", d_tps, precision) / n_pos,
        "f1max": np.max(2 * tps / (tps + fps + n_pos[:, None]), axis=1),
    }


def image_replicates(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Image AUROC, AP and F1-max of every resample.

    scores: float [N]; labels: 0/1 or bool [N]; weights: non-negative integers [B, N] (from
    :func:`stratified_weights`). Returns ``image_auroc``, ``image_ap``, ``image_f1max``, each
    float64 [B], equal to :func:`adbench.metrics.evaluate` on the literal resamples. The scores
    are sorted once; each resample is a weighted cumulative count over that order, read at the
    last image of each run of tied scores (one threshold per distinct score, as in metrics).
    """
    score_arr = _finite("image_scores", scores, ndim=1)
    label_arr = _binary("labels", labels, score_arr.shape, "image_scores")
    _both_classes("labels", label_arr)
    weight_arr = _checked_weights(weights, score_arr.size)
    order, ends = _rank(score_arr, np.arange(score_arr.size))
    order = order.astype(np.intp)
    ordered = weight_arr[:, order]
    tps = np.cumsum(ordered * label_arr[order], axis=1, dtype=np.float64)[:, ends]
    fps = np.cumsum(ordered, axis=1, dtype=np.float64)[:, ends] - tps
    return {f"image_{key}": value for key, value in _curve_metrics(tps, fps).items()}


def pixel_replicates(
    maps: np.ndarray, masks: np.ndarray, weights: np.ndarray, aupro_limit: float = 0.3
) -> dict[str, np.ndarray]:
    """Pixel AUROC, AP, F1-max and AUPRO of every resample of whole images.

    maps: float [N, H, W] anomaly maps; masks: bool or 0/1 [N, H, W] for every test image;
    weights: non-negative integers [B, N]. All pixels of an image carry its weight, and a GT
    region of an image drawn k times counts as k regions, so the values equal
    :func:`adbench.metrics.evaluate` on the literal resamples. Returns ``pixel_auroc``,
    ``pixel_ap``, ``pixel_f1max``, ``pixel_aupro`` (FPR up to ``aupro_limit``), float64 [B].

    The curves only need reading at the T distinct scores of defect pixels (highest first): in
    between only normal pixels enter, so PRO is flat (AUPRO adds a rectangle), AP adds nothing and
    F1 falls. At those scores every weighted count is a table [T, N] of per-image counts (pixels,
    defect pixels, summed 1 / region size, of the pixels scored >= / = the score) times the weights
    [N, B]; the tables come from one sort of each image's pixels and are built block-wise over T.
    The AUPRO area is summed by parts: PRO rises at each threshold by the weighted region shares
    of its defect pixels, and a rise at FPR x adds rise * (limit - x) to the area up to the limit.
    Normal pixels tied with a score count half in AUROC and spread its PRO rise over their FPR
    range. Cost: O(N H W log(H W)) for the sort plus O(T N B) for the products.
    """
    _check_limit(aupro_limit)
    map_arr = _finite("anomaly_maps", maps, ndim=3)
    gt = _binary("masks", masks, map_arr.shape, "anomaly_maps")
    n_images, n_pixels = map_arr.shape[0], map_arr.shape[1] * map_arr.shape[2]
    weights_t = _checked_weights(weights, n_images).T.astype(np.float64)  # [N, B]
    regions, n_regions = ndimage.label(gt, structure=_STRUCTURE_8)
    if n_regions == 0:
        raise ValueError(
            "masks contain no defect pixels, so pixel metrics are undefined; pass masks=None for a "
            "category without pixel annotations"
        )
    flat_maps, flat_regions = map_arr.reshape(n_images, n_pixels), regions.reshape(-1)
    # Regions are numbered in raster order over the stack, so image i holds the ids up to its maximum.
    last_region = np.maximum.accumulate(flat_regions.reshape(n_images, n_pixels).max(axis=1))
    n_regions_w = np.diff(last_region, prepend=0) @ weights_t  # [B] regions in each resample
    n_pos_per_image = np.count_nonzero(gt.reshape(n_images, n_pixels), axis=1)
    n_pos_w, n_neg_w = n_pos_per_image @ weights_t, (n_pixels - n_pos_per_image) @ weights_t
    _require_defined("pixel metrics", (n_pos_w == 0) | (n_neg_w == 0),
                     "a resample draws no defect pixel or no normal pixel; give every defective test "
                     "image a mask with defect pixels and draw the classes separately (stratified_weights)")

    defective = np.flatnonzero(n_pos_per_image)  # the columns of the defect-pixel tables
    weights_def = weights_t[defective]
    pos_flat = np.flatnonzero(flat_regions)
    pos_scores = flat_maps.ravel()[pos_flat]
    order, ends = _rank(pos_scores, np.arange(pos_flat.size))
    pos_flat = pos_flat[order.astype(np.intp)]  # defect pixels, highest score first
    thresholds = pos_scores[order[ends]]  # [T] the distinct defect-pixel scores, descending
    starts = np.concatenate([[0], ends[:-1] + 1])
    run_of = np.repeat(np.arange(thresholds.size), ends - starts + 1)
    column = np.searchsorted(defective, pos_flat // n_pixels)
    share = 1.0 / np.bincount(flat_regions)[flat_regions[pos_flat]]
    sorted_maps = np.sort(flat_maps, axis=1)
    limit_count = aupro_limit * n_neg_w  # the AUPRO FPR limit in weighted normal pixels [B]

    n_boot, n_def = weights_t.shape[1], defective.size
    pos_ge_prev = np.zeros(n_def)  # defect pixels scored >= the previous threshold, per defective image
    tps_prev, fps_prev, f1_best, ap_sum, area = (np.zeros(n_boot) for _ in range(5))
    pairs = n_pos_w * n_neg_w  # correctly ordered (defect, normal) pixel pairs, once all are subtracted
    block = max(1, _BLOCK_ELEMENTS // n_boot)
    for first in range(0, thresholds.size, block):
        rows = min(block, thresholds.size - first)
        members = slice(starts[first], ends[first + rows - 1] + 1)
        cell = (run_of[members] - first) * n_def + column[members]
        in_run = np.bincount(cell, minlength=rows * n_def).reshape(rows, n_def).astype(np.float64)
        share_in_run = np.bincount(cell, share[members], rows * n_def).reshape(rows, n_def)
        pos_ge = pos_ge_prev + np.cumsum(in_run, axis=0)  # [rows, N_def] defect pixels scored >= t
        ascending = thresholds[first : first + rows][::-1]  # searchsorted is fastest on ascending keys
        n_below = np.stack([np.searchsorted(row, ascending, "left") for row in sorted_maps], 1)[::-1]
        n_at_most = np.stack([np.searchsorted(row, ascending, "right") for row in sorted_maps], 1)[::-1]

        all_ge = (n_pixels - n_below).astype(np.float64) @ weights_t  # [rows, B] weighted counts
        tps = pos_ge @ weights_def
        pos_w = np.empty_like(tps)  # weighted defect pixels scored = t
        pos_w[0] = tps[0] - tps_prev
        np.subtract(tps[1:], tps[:-1], out=pos_w[1:])
        fps = all_ge - tps
        pairs -= np.einsum("tb,tb->b", pos_w, fps)
        ap_sum += np.einsum("tb,tb->b", pos_w, tps / np.maximum(all_ge, 1))  # 0 / 1 where nothing drawn
        f1_best = np.maximum(f1_best, np.max(tps / (all_ge + n_pos_w), axis=0))
        tied_rows = np.flatnonzero((n_at_most - n_below).sum(axis=1) > in_run.sum(axis=1))
        if tied_rows.size:  # normal pixels scored exactly at a threshold: pairs with them count half
            pos_gt = (pos_ge[tied_rows] - in_run[tied_rows]) @ weights_def
            fps_gt = (n_pixels - n_at_most[tied_rows]).astype(np.float64) @ weights_t - pos_gt
            tied = fps[tied_rows] - fps_gt
            pairs += np.einsum("tb,tb->b", pos_w[tied_rows], tied) / 2
        if np.any(fps_prev < limit_count):  # else every rise from here on lies past the FPR limit
            # area in (normal-pixel count) x (region share) units; a rise at the limit or past it adds 0
            rise = share_in_run @ weights_def
            area += np.einsum("tb,tb->b", rise, np.maximum(limit_count - fps, 0))
            if tied_rows.size:  # a rise spread over [fps_gt, fps] adds half its clipped width more
                width = np.minimum(fps[tied_rows], limit_count) - np.minimum(fps_gt, limit_count)
                area += np.einsum("tb,tb->b", width**2 / np.maximum(tied, 1), rise[tied_rows]) / 2
        pos_ge_prev, tps_prev, fps_prev = pos_ge[-1], tps[-1], fps[-1]
    return {
        "pixel_auroc": pairs / (n_pos_w * n_neg_w),
        "pixel_ap": ap_sum / n_pos_w,
        "pixel_f1max": 2 * f1_best,
        "pixel_aupro": area / (n_neg_w * n_regions_w * aupro_limit),
    }


def mean_replicates(name: str, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Resampled means of a per-image metric: values float [N] (NaN = no value, e.g. the AUPIMO of a
    normal image), weights [B, N] (:func:`stratified_weights`) → float64 [B], the weighted mean over
    the images with a value. ValueError naming ``name`` if a resample draws none of them."""
    defined = np.isfinite(values)
    drawn = _checked_weights(weights, len(values))[:, defined]
    totals = drawn.sum(axis=1)
    _require_defined(name, totals == 0, "it drew no image with a value")
    return (drawn @ values[defined]) / totals


def _check_level(level: float) -> None:
    """Raise ValueError unless the interval level is in (0, 1)."""
    if not 0 < level < 1:
        raise ValueError(f"the interval level (ci.level) must be in (0, 1), e.g. 0.95; got {level}")


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(lo, hi): the (1 - level) / 2 and (1 + level) / 2 quantiles of the replicates [B] (linear
    interpolation between order statistics), the percentile bootstrap interval."""
    _check_level(level)
    values = _finite("replicates", replicates, ndim=1)
    if values.size == 0:
        raise ValueError("replicates is empty; an interval needs at least one resample")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass
class BootstrapResult:
    """Replicates of every metric over shared resamples, and their percentile intervals.

    replicates: metric -> float64 [B], B = n_boot for image metrics and n_boot_pixel for pixel
    metrics and ``mad``; resample b of every metric is the same draw of test images.
    n_boot_pixel is None when no pixel metrics were computed.
    """

    replicates: dict[str, np.ndarray]
    n_boot: int
    n_boot_pixel: int | None
    level: float
    seed: int = BOOT_SEED

    def intervals(self) -> dict[str, float]:
        """{"<metric>_lo": .., "<metric>_hi": ..} for every metric, fractions in [0, 1]."""
        bounds = {}
        for name, values in self.replicates.items():
            bounds[f"{name}_lo"], bounds[f"{name}_hi"] = percentile_interval(values, self.level)
        return bounds


def bootstrap(
    image_scores: np.ndarray,
    labels: np.ndarray,
    maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    n_boot_pixel: int = N_BOOT_PIXEL,
    seed: int = BOOT_SEED,
    level: float = LEVEL,
    aupro_limit: float = 0.3,
    aupimo: np.ndarray | None = None,
) -> BootstrapResult:
    """Stratified bootstrap of every metric :func:`adbench.metrics.evaluate` reports.

    image_scores: float [N]; labels: 0/1 [N]; maps: float [N, H, W] and masks: bool [N, H, W]
    (both, or masks None for image metrics only). Resample b is row b of
    ``stratified_weights(labels, max(n_boot, n_boot_pixel), seed)`` for every metric: image
    metrics use the first n_boot rows, pixel metrics the first n_boot_pixel, and ``mad`` (mean of
    the seven, present with masks) the first n_boot_pixel of both. ``aupimo``: per-image AUPIMO [N]
    (NaN for images without defect pixels) gives ``pixel_aupimo``, the mean over the anomalous images
    drawn, on the first n_boot_pixel rows; its FPR thresholds stay those of the whole test set.
    """
    _check_level(level)
    if masks is not None and maps is None:
        raise ValueError("masks were given without maps; pixel intervals need both")
    if n_boot_pixel < 1:
        raise ValueError(f"n_boot_pixel (ci.n_boot_pixel) must be a positive number, got {n_boot_pixel}")
    with_pixels = masks is not None
    n_draws = max(n_boot, n_boot_pixel) if with_pixels else n_boot
    weights = stratified_weights(labels, n_draws, seed)
    image = image_replicates(image_scores, labels, weights)
    replicates = {key: value[:n_boot] for key, value in image.items()}
    if with_pixels:
        pixel = pixel_replicates(maps, masks, weights[:n_boot_pixel], aupro_limit)
        replicates.update(pixel)
        seven = [image[key][:n_boot_pixel] for key in IMAGE_KEYS] + [pixel[key] for key in PIXEL_KEYS]
        replicates["mad"] = np.mean(seven, axis=0)
        if aupimo is not None:
            replicates["pixel_aupimo"] = mean_replicates("pixel_aupimo", aupimo, weights[:n_boot_pixel])
    return BootstrapResult(replicates, n_boot, n_boot_pixel if with_pixels else None, level, seed)


def ci_settings(ci: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config's ``ci`` block (None: the defaults) as :func:`bootstrap` keyword arguments
    ``n_boot``, ``n_boot_pixel``, ``level``; ValueError naming the key on an unknown key or a bad value."""
    settings = {"n_boot": N_BOOT, "n_boot_pixel": N_BOOT_PIXEL, "level": LEVEL}
    unknown = sorted(set(ci or {}) - set(settings))
    if unknown:
        raise ValueError(f"ci.{unknown[0]} is no setting; ci takes {', '.join(settings)} (conf/config.yaml)")
    settings.update(ci or {})
    for key, value in settings.items():
        count = key != "level"
        if isinstance(value, bool) or not isinstance(value, int if count else (int, float)):
            raise ValueError(f"ci.{key} must be {'an integer' if count else 'a number'}, got {value!r}")
    if min(settings["n_boot"], settings["n_boot_pixel"]) < 1:
        raise ValueError(f"ci.n_boot and ci.n_boot_pixel must be >= 1 resample, got {settings}")
    _check_level(settings["level"])
    return settings
