"""Is method A better than method B? Paired tests on one test set, and rank tests across many.

* :func:`paired_bootstrap`: two runs scored on the same test images have paired bootstrap replicates
  (the runner resamples with the fixed seed :data:`adbench.stats.BOOT_SEED`, so replicate ``b`` of
  both runs saw the same resample); the replicates of ``a - b`` are a bootstrap of the difference.
* :func:`delong_test`: DeLong, DeLong & Clarke-Pearson (1988), the asymptotic test for two correlated
  AUROCs on the same images, computed with the mid-rank algorithm of Sun & Xu (2014).
* :func:`friedman` and :func:`nemenyi_cd`: the Friedman test over blocks (categories) with the
  Iman-Davenport F, and the Nemenyi critical difference of average ranks (Demšar, JMLR 7 (2006)
  1-30), drawn by :func:`adbench.reporting.viz.cd_diagram`; :func:`cd_groups` lists the groups it joins.

Metric values are fractions in [0, 1]; higher is better unless a function says otherwise.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from adbench.stats import percentile_interval

__all__ = [
    "DeLongResult",
    "FriedmanResult",
    "PairedResult",
    "cd_groups",
    "delong_test",
    "friedman",
    "nemenyi_cd",
    "paired_bootstrap",
]


class PairedResult(NamedTuple):
    """Paired bootstrap of a difference ``a - b``: the mean of the replicate differences, their
    percentile interval [lo, hi] at ``level``, the two-sided p-value and the replicates used."""

    mean: float
    lo: float
    hi: float
    p: float
    n_boot: int


class DeLongResult(NamedTuple):
    """Two correlated AUROCs, DeLong's z = (auc_a - auc_b) / SE and its two-sided normal p-value."""

    auc_a: float
    auc_b: float
    z: float
    p: float


class FriedmanResult(NamedTuple):
    """Friedman test of k methods over N blocks: average ranks (1 = best, ties as mean ranks),
    chi2_F with its chi-square p-value (k - 1 degrees of freedom) and the Iman-Davenport F_F with its
    F p-value (k - 1, (k - 1)(N - 1) degrees of freedom)."""

    avg_ranks: pd.Series
    n_blocks: int
    chi2: float
    p_chi2: float
    f: float
    p_f: float


def paired_bootstrap(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> PairedResult:
    """Paired bootstrap of ``a - b`` from replicates a, b: float [B] (replicate i of both from the same
    resample of one test set; NaN pairs are dropped).

    p = min(1, 2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (B + 1)) over the differences d [B]: the
    two-sided bootstrap p-value in the (count + 1) / (B + 1) form of Monte Carlo tests (Davison &
    Hinkley 1997), so it is never 0 (the smallest is 2 / (B + 1)); p = 1 when every difference is 0.
    Raises ValueError on unequal lengths (the runs were not resampled alike).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired replicates need equal 1-d shapes, got {a.shape} and {b.shape}; "
                         "both runs must be resampled alike (same test set, same number of resamples)")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if d.size == 0:
        return PairedResult(math.nan, math.nan, math.nan, math.nan, 0)
    lo, hi = percentile_interval(d, level)
    tail = min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0)) + 1
    return PairedResult(float(d.mean()), float(lo), float(hi), min(1.0, 2 * tail / (d.size + 1)), d.size)


def _placements(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of the AUROCs of k score rows [k, N] (labels ``positive``, bool
    [N], m positives, n negatives), from mid-ranks (Sun & Xu 2014): V10 [k, m], the fraction of
    negatives each positive beats (ties count 1/2), and V01 [k, n], the fraction of positives that
    beat each negative. AUROC = V10.mean(1) = V01.mean(1)."""
    pos, neg = scores[:, positive], scores[:, ~positive]
    m, n = pos.shape[1], neg.shape[1]
    combined = sps.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (combined[:, :m] - sps.rankdata(pos, axis=1)) / n
    v01 = 1.0 - (combined[:, m:] - sps.rankdata(neg, axis=1)) / m
    return v10, v01


def delong_test(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray) -> DeLongResult:
    """DeLong's test of AUROC(a) = AUROC(b) for two methods' image scores a, b: float [N] on the same
    N images, labels: [N] (1 = anomalous, higher score = more anomalous).

    Var(auc_a - auc_b) = c' (S10 / m + S01 / n) c with c = (1, -1) and S10, S01 the 2 x 2 sample
    covariances (ddof 1) of the placement values of the m anomalous and n normal images. When the
    variance is 0, z = 0 and p = 1 for equal AUROCs, else z = ±inf and p = 0.
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    positive = np.asarray(labels).astype(bool)
    if not a.ndim == 1 or not a.shape == b.shape == positive.shape:
        raise ValueError(f"delong_test needs scores_a, scores_b and labels of one shape [N]; got {a.shape}, "
                         f"{b.shape} and {positive.shape} (the two methods must score the same images)")
    scores = np.stack([a, b])
    m = int(positive.sum())
    if m < 2 or positive.size - m < 2:
        raise ValueError(f"delong_test needs at least 2 anomalous and 2 normal images; got {m} and "
                         f"{positive.size - m}")
    if not np.isfinite(scores).all():
        raise ValueError("delong_test: scores contain NaN or inf")
    v10, v01 = _placements(scores, positive)
    auc = v10.mean(axis=1)
    covariance = np.cov(v10) / m + np.cov(v01) / (positive.size - m)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = auc[0] - auc[1]
    if variance <= 0:
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
    else:
        z = difference / math.sqrt(variance)
    return DeLongResult(float(auc[0]), float(auc[1]), float(z), float(2 * sps.norm.sf(abs(z))))


def friedman(scores: pd.DataFrame, higher_is_better: bool = True) -> FriedmanResult:
    """Friedman test on ``scores`` [N blocks x k methods] (rows: categories or datasets, columns: methods),
    as in Demšar (2006, section 3.2.2): ranks within each block (1 = best, ties as mean ranks),
    chi2_F = 12 N / (k (k + 1)) * (sum_j R_j^2 - k (k + 1)^2 / 4) over the average ranks R_j (no tie
    correction), F_F = (N - 1) chi2_F / (N (k - 1) - chi2_F). Values equal to 12 decimals tie (seed means
    of equal values can differ in the last bit). F_F and its p are NaN when every block ranks the methods
    alike (chi2_F = N (k - 1): the F approximation is undefined). Needs k >= 2, N >= 2 and no NaN."""
    n_blocks, k = scores.shape
    if k < 2 or n_blocks < 2:
        raise ValueError(f"friedman needs >= 2 methods and >= 2 blocks; got {k} methods, {n_blocks} blocks")
    values = scores.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("friedman: every method needs a value in every block; drop incomplete blocks first")
    ranks = sps.rankdata(np.round(-values if higher_is_better else values, 12), axis=1)
    avg_ranks = pd.Series(ranks.mean(axis=0), index=scores.columns, name="average rank")
    r = avg_ranks.to_numpy()
    chi2 = 12 * n_blocks / (k * (k + 1)) * (np.sum(r**2) - k * (k + 1) ** 2 / 4)
    spread = n_blocks * (k - 1) - chi2
    f, p_f = math.nan, math.nan
    if spread > 1e-9 * n_blocks * (k - 1):
        f = (n_blocks - 1) * chi2 / spread
        p_f = float(sps.f.sf(f, k - 1, (k - 1) * (n_blocks - 1)))
    return FriedmanResult(avg_ranks, n_blocks, float(chi2), float(sps.chi2.sf(chi2, k - 1)), float(f), p_f)


@functools.lru_cache(maxsize=64)
def _nemenyi_q(k: int, alpha: float) -> float:
    return float(sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks for k methods on n blocks:
    q_alpha * sqrt(k (k + 1) / (6 n)), q_alpha = studentized range quantile (1 - alpha; k, inf) / sqrt(2)
    (Demšar 2006, Table 5(a): 2.569 for k = 4 at alpha 0.05). Two methods differ significantly when their
    average ranks differ by at least the CD."""
    if k < 2 or n < 1:
        raise ValueError(f"nemenyi_cd needs k >= 2 methods and n >= 1 blocks; got k={k}, n={n}")
    return _nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))


def cd_groups(avg_ranks: dict[str, float], cd: float) -> list[list[str]]:
    """The maximal groups of >= 2 methods whose average ranks all lie within less than ``cd`` of each
    other (no pair in a group differs significantly), best ranks first; methods by ascending rank."""
    names = sorted(avg_ranks, key=lambda name: avg_ranks[name])
    ranks = np.array([avg_ranks[name] for name in names])
    ends = np.searchsorted(ranks, ranks + cd, side="left") - 1  # last j with r_j - r_i < cd
    groups, reach = [], -1
    for start, end in enumerate(ends):
        if end > start and end > reach:  # not inside the previous group
            groups.append(names[start:end + 1])
            reach = end
    return groups
