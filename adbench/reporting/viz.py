"""Figures: heatmap overlays, ROC curves and the report's bar charts (matplotlib, no pyplot state).

Every function draws on a :class:`matplotlib.figure.Figure` it creates, so figures can be made in
worker processes and tests without a display. Images are float arrays [H, W, 3] in [0, 1]; anomaly
maps are float [H, W] in the method's own units; masks are bool [H, W].
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from adbench.data import ImageTransform, load_image

HEATMAP = "jet"


@dataclass
class Curve:
    """One ROC curve: false/true positive rates [N] (from (0, 0) to (1, 1)) and the AUROC that
    :mod:`adbench.metrics` computed for the same run."""

    label: str
    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float


@dataclass
class Tile:
    """One panel of an extremes figure: the image [S, S, 3], its anomaly map [S, S], its mask
    [S, S] (bool, all False for normal images) and a caption."""

    image: np.ndarray
    anomaly_map: np.ndarray
    mask: np.ndarray
    caption: str


def display_image(path: str | os.PathLike, transform: ImageTransform) -> np.ndarray:
    """The image as a method saw it (same resize and crop), un-normalised: float [S, S, 3] in [0, 1]."""
    plain = dataclasses.replace(transform, mean=None, std=None)
    return plain.image(load_image(path)).permute(1, 2, 0).numpy().clip(0.0, 1.0)


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ROC curve of image scores [N] against labels [N] (1 = anomalous): false and true
    positive rates at every distinct threshold, tied scores forming one step, from (0, 0) to (1, 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    tps = np.cumsum(sorted_labels)[ends]
    fps = np.cumsum(~sorted_labels)[ends]
    return np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)]


def overlay(
    image: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5
) -> np.ndarray:
    """Blend the map, scaled from [vmin, vmax] to the jet colour map, over the image: [S, S, 3]."""
    span = max(vmax - vmin, 1e-12)
    scaled = np.clip((anomaly_map - vmin) / span, 0.0, 1.0)
    colours = matplotlib.colormaps[HEATMAP](scaled)[..., :3]
    return (1 - alpha) * image + alpha * colours


def roc_figure(panels: dict[str, list[Curve]], title: str) -> Figure:
    """A grid with one ROC panel per category (key), one curve per method, AUROC in the legend."""
    n = max(len(panels), 1)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.4 * cols, 3.2 * rows + 0.4), layout="constrained")
    fig.suptitle(title)
    for i, (category, curves) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        for k, curve in enumerate(curves):
            label = f"{curve.label} ({100 * curve.auroc:.1f})"
            style = ("-", "--", "-.", ":")[k % 4]  # curves that coincide stay visible
            ax.plot(curve.fpr, curve.tpr, lw=1.4, ls=style, label=label)  # linear = trapezoidal AUROC
        ax.set(title=category, xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate",
               ylabel="true positive rate", aspect="equal")
        ax.legend(fontsize=6, loc="lower right", title="image AUROC %", title_fontsize=6)
    return fig


def bar_figure(means: dict[str, dict[str, float]], metrics: Sequence[str], title: str) -> Figure:
    """Grouped bars: one group per metric, one bar per method (``means[method][metric]``, fractions
    shown in percent); missing values leave a gap and are listed under the plot."""
    methods = list(means)
    fig = Figure(figsize=(max(6.0, 1.1 * len(metrics) * max(len(methods), 1) * 0.45 + 2), 4.2),
                 layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(metrics))
    missing = []
    for i, method in enumerate(methods):
        values = [100 * means[method].get(m, np.nan) for m in metrics]
        missing += [f"{method}: {m}" for m, v in zip(metrics, values) if np.isnan(v)]
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=method)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.set_ylim(0.0, 104.0)
    ax.set_xticks(x, list(metrics))
    ax.set_ylabel("percent (mean over categories)")
    ax.set_title(title)
    fig.legend(fontsize=7, ncols=min(len(methods), 3), loc="outside lower center")
    if missing:
        fig.text(0.01, 0.005, "no value (not every category ran or metric undefined): " + "; ".join(missing),
                 fontsize=6, wrap=True)
    return fig


def extremes_figure(rows: dict[str, list[Tile]], title: str) -> Figure:
    """One row per method: its highest- then lowest-scoring test images with the anomaly map
    overlaid (colour scale = min..max of that row's maps) and the ground-truth outline in white."""
    n_cols = max((len(t) for t in rows.values()), default=1)
    fig = Figure(figsize=(1.9 * n_cols + 0.6, 2.15 * max(len(rows), 1) + 0.5), layout="constrained")
    fig.suptitle(title, fontsize=9)
    for r, (method, tiles) in enumerate(rows.items()):
        vmin = min(float(t.anomaly_map.min()) for t in tiles)
        vmax = max(float(t.anomaly_map.max()) for t in tiles)
        for c, tile in enumerate(tiles):
            ax = fig.add_subplot(len(rows), n_cols, r * n_cols + c + 1)
            ax.imshow(overlay(tile.image, tile.anomaly_map, vmin, vmax))
            if tile.mask.any():
                ax.contour(tile.mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(tile.caption, fontsize=6)
            if c == 0:
                ax.set_ylabel(method, fontsize=7)
    return fig


def prediction_figure(image: np.ndarray, anomaly_map: np.ndarray, caption: str, vmin: float, vmax: float,
                      pixel_threshold: float) -> Figure:
    """Input image beside the map overlay, outlined in white where the map exceeds ``pixel_threshold``."""
    fig = Figure(figsize=(5.2, 2.9), layout="constrained")
    fig.suptitle(caption, fontsize=8)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.imshow(image)
    right.imshow(overlay(image, anomaly_map, vmin, vmax))
    above = anomaly_map > pixel_threshold
    if above.any() and not above.all():
        right.contour(above.astype(float), levels=[0.5], colors="white", linewidths=0.8)
    for ax, name in ((left, "input"), (right, f"anomaly map ({vmin:.3g}..{vmax:.3g})")):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=7)
    return fig


def cd_diagram(avg_ranks: dict[str, float], cd: float, path: str | os.PathLike, title: str) -> Path:
    """Critical-difference diagram (Demšar 2006, Figure 1) as a PNG at ``path``; returns the path.

    The average ranks (1 = best; k methods) lie on an axis from k (left) to 1 (right); each method is
    named at the side nearer its rank with its rank in brackets, one line per method so labels never
    overlap; the CD bar shows the critical difference ``cd``; thick bars join the groups of methods
    whose ranks differ by less than the CD (:func:`adbench.reporting.compare.cd_groups`)."""
    from adbench.reporting.compare import cd_groups

    names = sorted(avg_ranks, key=lambda name: (avg_ranks[name], name))
    k = len(names)
    groups = cd_groups(avg_ranks, cd)
    n_right = k // 2  # the better half is named on the right, the worse half on the left
    rows = max(k - n_right, n_right)
    bar_gap, row_gap = 0.12, 0.28
    first_row = -0.25 - bar_gap * len(groups)
    fig = Figure(figsize=(7.0, 1.5 + 0.3 * rows + 0.15 * len(groups)))
    ax = fig.add_axes((0.22, 0.05, 0.56, 0.85))
    low, high = 1.0, float(max(k, math.ceil(max(avg_ranks.values()))))
    cd_end = high - cd  # the CD bar starts at the worst rank
    ax.set_xlim(high + 0.05, min(low, cd_end) - 0.05)  # best (rank 1) on the right
    ax.set_ylim(first_row - row_gap * (rows - 1) - 0.1, 0.5)
    ax.axis("off")
    ax.plot([high, low], [0, 0], color="k", lw=1)
    ticks = np.arange(1, int(high) + 1)
    ax.vlines(ticks, 0, 0.05, color="k", lw=1)
    for tick in ticks:
        ax.text(tick, 0.07, str(tick), ha="center", va="bottom", fontsize=9)
    ax.plot([high, cd_end], [0.32, 0.32], color="k", lw=1.5)
    ax.vlines([high, cd_end], 0.29, 0.35, color="k", lw=1.5)
    ax.text((high + cd_end) / 2, 0.37, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for g, group in enumerate(groups):
        y = -0.12 - bar_gap * g
        ax.plot([avg_ranks[group[0]] - 0.04, avg_ranks[group[-1]] + 0.04], [y, y], color="k", lw=4,
                solid_capstyle="butt")
    sides = ((names[:n_right], low - 0.12, -0.05, "left"),
             (names[n_right:][::-1], high + 0.12, 0.05, "right"))
    for members, edge, shift, align in sides:  # the outermost rank of each side on the top row: no crossing
        for row, name in enumerate(members):
            y = first_row - row_gap * row
            rank = avg_ranks[name]
            ax.plot([rank, rank, edge], [0, y, y], color="0.25", lw=0.9, clip_on=False)
            ax.text(edge + shift, y, f"{name} ({rank:.2f})", ha=align, va="center", fontsize=9, clip_on=False)
    ax.set_title(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight", pad_inches=0.15)  # long names widen the canvas
    return path


def save(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write the figure as PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
