"""Comparison tables from a leaderboard: accuracy, efficiency and deltas against published numbers.

``python -m adbench.leaderboard [--results results] [--table accuracy,efficiency,deltas]
[--metric image_auroc,pixel_auroc] [--format markdown|csv|latex] [--out DIR] [--intervals]`` prints the
tables; with ``--out`` it also writes every table in all three formats (``make leaderboard``).
``--compare A,B`` (labels or method names) prints only the comparison of two methods instead.

* accuracy: one table per metric and dataset, rows = methods (:func:`adbench.results.setup_labels`),
  columns = categories plus the dataset mean. Values in percent; the seeds of one cell are averaged
  (a note says how many); a mean exists only when every category of the table has a value.
  ``†`` marks every cell not significantly worse than its column's best (:func:`significance_marks`);
  ``--intervals`` adds the 95 % bootstrap interval to each cell (and ``± std`` over seeds).
* efficiency: per dataset, the mean image/pixel AUROC beside the mean fit seconds, inference ms per
  image, peak RSS and GPU memory (max over runs) and parameters (median), per method and device.
* deltas: our dataset means against ``adbench/reference/published.csv`` (:mod:`adbench.reporting.published`),
  where method, variant, protocol, dataset, backbone and resolution match and every category ran.
* draws: for a dataset with several draws (``toy_dev``, ``toy_dev_draw2``, ...: names that differ
  only by a ``_draw<k>`` suffix), per metric the category means over every draw and seed, their
  mean and the worst category: the numbers a preset is chosen on. Mean and worst exist only when
  the method has every category on every draw of the family.
* ``--compare A,B`` (:func:`compare_runs`): per dataset and category both ran on the same test images,
  metric A, metric B and A - B with its paired-bootstrap 95 % interval and p-value, DeLong's p for
  image AUROC; runs are paired by seed.

Significance and intervals come from the bootstrap replicates ``boot_<metric>`` the runner stores in
each record's ``<hash>.npz`` (:class:`RunArrays`): the resamples are drawn with a fixed seed from the
test labels alone, so runs on the same test images have paired replicates (:mod:`adbench.stats`).

The best value of each column is marked (bold in markdown and LaTeX; LaTeX tables use booktabs).
CSV tables are for machines: raw values (fractions, seconds, MB), no marks.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from adbench.reporting import published
from adbench.reporting.compare import delong_test, paired_bootstrap
from adbench.results import (
    METRICS,
    atomic_write_text,
    current_leaderboard,
    load_leaderboard,
    record_path,
    setup_configs,
)
from adbench.stats import percentile_interval

LOWER_IS_BETTER = {"fit_s", "infer_ms_per_img", "peak_rss_mb", "peak_gpu_mb", "n_params"}
# leaderboard column, header, how runs are combined ("dataset mean" = the accuracy table's mean),
# scale, decimals
EFFICIENCY = (
    ("image_auroc", "image AUROC %", "dataset mean", 100.0, 1),
    ("pixel_auroc", "pixel AUROC %", "dataset mean", 100.0, 1),
    ("fit_s", "fit s", "mean", 1.0, 1),
    ("infer_ms_per_img", "infer ms/img", "mean", 1.0, 2),
    ("peak_rss_mb", "peak RSS MB", "max", 1.0, 0),
    ("peak_gpu_mb", "peak GPU MB", "max", 1.0, 0),
    ("n_params", "params M", "median", 1e-6, 2),
)
TABLES = ("accuracy", "efficiency", "deltas", "draws")
DRAW_SUFFIX = re.compile(r"_draw\d+$")
DASH = "–"
ALPHA = 0.05  # significance level of the † marks
MARK = "†"
LEVEL = 0.95  # bootstrap interval level of --intervals and --compare


@dataclass
class Table:
    """A rendered-ready table: ``rows`` of strings under ``header``; ``bold`` holds (row, column)
    cells to mark; ``marked`` the cells that get :data:`MARK`; ``notes`` are printed under it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    align: str = ""
    marked: set[tuple[int, int]] = field(default_factory=set)

    def markdown(self) -> str:
        align = self.align or "l" + "r" * (len(self.header) - 1)
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
        for i, row in enumerate(self.rows):
            cells = [f"**{c}**" if (i, j) in self.bold else c for j, c in enumerate(row)]
            cells = [c + MARK if (i, j) in self.marked else c for j, c in enumerate(cells)]
            lines.append("| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |")
        return "\n".join(lines + [""] + [f"{n}  " for n in self.notes]).rstrip() + "\n"

    def latex(self) -> str:
        align = self.align or "l" + "r" * (len(self.header) - 1)
        lines = [f"% {self.title}", r"\begin{tabular}{" + align + "}", r"\toprule",
                 " & ".join(latex_escape(h) for h in self.header) + r" \\", r"\midrule"]
        for i, row in enumerate(self.rows):
            cells = [latex_escape(c) for c in row]
            cells = [rf"\textbf{{{c}}}" if (i, j) in self.bold else c for j, c in enumerate(cells)]
            cells = [c + r"$^\dagger$" if (i, j) in self.marked else c for j, c in enumerate(cells)]
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"] + [f"% {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in a cell; the en dash of empty cells becomes ``--``."""
    out = text.replace("\\", r"\textbackslash{}")
    for char in "&%$#_{}":
        out = out.replace(char, "\\" + char)
    out = out.replace("~", r"\textasciitilde{}").replace("^", r"\^{}")
    out = out.replace(DASH, "--").replace("Δ", r"$\Delta$").replace("×", r"$\times$")
    return out.replace("±", r"$\pm$").replace("<", "$<$").replace(">", "$>$")


def _labels(frame: pd.DataFrame) -> pd.Series:
    """The leaderboard's ``label`` column, or the method name for rows without one."""
    if "label" in frame.columns:
        return frame["label"].where(frame["label"].notna(), frame["method"]).astype(str)
    return frame["method"].astype(str)


def _finished(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    ok = frame[(frame["status"] == "ok") & frame[column].notna()].copy()
    ok["label"] = _labels(ok)
    return ok


def pivot(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows = methods, columns = (dataset, category) plus (dataset, "mean"); cell = mean over seeds,
    NaN where no run; a dataset mean is NaN unless the method has every category of that dataset."""
    ok = _finished(frame, metric)
    if ok.empty:
        return pd.DataFrame()
    cells = ok.groupby(["label", "dataset", "category"])[metric].mean().unstack(["dataset", "category"])
    blocks = []
    for dataset in sorted(ok["dataset"].unique()):
        block = cells[dataset].sort_index(axis=1)
        block["mean"] = block.mean(axis=1, skipna=False)
        block.columns = pd.MultiIndex.from_product([[dataset], block.columns])
        blocks.append(block)
    return pd.concat(blocks, axis=1)


def _best(values: pd.Series, lower: bool) -> set:
    """Index labels of the best finite value(s) of a column; empty when fewer than two values."""
    finite = values.dropna()
    if len(finite) < 2:
        return set()
    target = finite.min() if lower else finite.max()
    return set(finite.index[np.isclose(finite.to_numpy(dtype=float), target, rtol=1e-9, atol=1e-12)])


def _fmt(value: float, scale: float, decimals: int) -> str:
    return DASH if pd.isna(value) else f"{value * scale:.{decimals}f}"


def seed_note(frame: pd.DataFrame, metric: str, dataset: str | None = None) -> str | None:
    """"cells average N seeds" when any (method, category) cell holds more than one seed."""
    ok = _finished(frame, metric)
    if dataset is not None:
        ok = ok[ok["dataset"] == dataset]
    counts = ok.groupby(["label", "category"])["seed"].nunique()
    if counts.empty or counts.max() <= 1:
        return None
    low, high = int(counts.min()), int(counts.max())
    return f"cells average {low} seeds" if low == high else f"cells average {low}–{high} seeds"


class RunArrays:
    """The arrays of each run's ``<hash>.npz`` beside its record, read lazily, once per file: ``paths``,
    ``image_scores`` and ``labels`` [N] of the test images and the bootstrap replicates ``boot_<metric>``
    (float [B]). A missing or unreadable file (a record older than the npz) reads as empty."""

    KEYS = ("paths", "image_scores", "labels")

    def __init__(self, results_dir: str | Path) -> None:
        self.results_dir = Path(results_dir)
        self._files: dict[Path, dict[str, np.ndarray]] = {}

    def get(self, run: pd.Series, key: str) -> np.ndarray | None:
        """Array ``key`` of the run (a leaderboard row), or None where the run has none."""
        path = record_path(self.results_dir, run["dataset"], run["category"], run["method"],
                           run["config_hash"]).with_suffix(".npz")
        if path not in self._files:
            try:
                with np.load(path) as data:
                    keys = [k for k in data.files if k in self.KEYS or k.startswith("boot_")]
                    self._files[path] = {k: data[k] for k in keys}
            except (OSError, ValueError, zipfile.BadZipFile):
                self._files[path] = {}
        return self._files[path].get(key)

    def replicates(self, run: pd.Series, metric: str) -> np.ndarray | None:
        """The run's ``boot_<metric>`` [B], or None where it has none or they are not all finite."""
        values = self.get(run, f"boot_{metric}")
        return values if values is not None and np.isfinite(values).all() else None


@dataclass(frozen=True)
class Replicates:
    """Bootstrap replicates float [B] of one table cell (averaged over its seeds; a mean column's also
    over categories) and ``test_set``, which identifies the test images they resampled."""

    values: np.ndarray
    test_set: str


def _mean_prefix(arrays: list[np.ndarray]) -> np.ndarray:
    """Element-wise mean of replicate arrays [B_i] over their common prefix [min B_i]: a run with fewer
    resamples got a prefix of a longer run's (:func:`adbench.stats.stratified_weights`)."""
    n = min(len(a) for a in arrays)
    return np.mean([np.asarray(a[:n], dtype=np.float64) for a in arrays], axis=0)


def _test_set(paths: np.ndarray) -> str:
    return hashlib.sha1("\n".join(map(str, paths)).encode()).hexdigest()


def seed_replicates(runs: pd.DataFrame, metric: str, arrays: RunArrays) -> Replicates | None:
    """The replicates ``boot_<metric>`` of ``runs`` (the seeds of one cell) averaged over the runs; None
    unless every run has them and all resampled the same test images (equal ``paths``)."""
    values, test_sets = [], set()
    for _, run in runs.iterrows():
        replicates, paths = arrays.replicates(run, metric), arrays.get(run, "paths")
        if replicates is None or paths is None:
            return None
        values.append(replicates)
        test_sets.add(_test_set(paths))
    if len(test_sets) != 1:
        return None
    return Replicates(_mean_prefix(values), test_sets.pop())


def _block_replicates(runs: pd.DataFrame, metric: str, arrays: RunArrays,
                      categories: list[str]) -> dict[tuple[str, str], Replicates]:
    """One dataset's runs → (label, category): the cell's seed-averaged replicates; (label, "mean"):
    their mean over ``categories`` where every category has them."""
    cells = {}
    for (label, category), cell_runs in runs.groupby(["label", "category"]):
        replicates = seed_replicates(cell_runs, metric, arrays)
        if replicates is not None:
            cells[(str(label), str(category))] = replicates
    for label in runs["label"].unique():
        parts = [cells.get((str(label), c)) for c in categories]
        if all(p is not None for p in parts):
            cells[(str(label), "mean")] = Replicates(_mean_prefix([p.values for p in parts]),
                                                     "|".join(p.test_set for p in parts))
    return cells


def significance_marks(block: pd.DataFrame, replicates: dict[tuple[str, str], Replicates],
                       lower: bool = False) -> set[tuple[str, str]]:
    """(label, column) of every cell of ``block`` (rows = labels, columns = categories and ``mean``) that
    is not significantly worse than its column's best (:func:`_best`; the best included): the paired
    bootstrap (:func:`adbench.reporting.compare.paired_bootstrap`) of best - cell on the same test images has
    two-sided p > :data:`ALPHA`. Cells without replicates and columns whose best has none get no mark."""
    marked = set()
    for column in block.columns:
        best = sorted(label for label in _best(block[column], lower) if (label, column) in replicates)
        if not best:
            continue
        reference = replicates[(best[0], column)]
        for label in block[column].dropna().index:
            cell = replicates.get((label, column))
            if cell is None or cell.test_set != reference.test_set:
                continue
            n = min(len(cell.values), len(reference.values))
            if paired_bootstrap(reference.values[:n], cell.values[:n]).p > ALPHA:
                marked.add((label, column))
    return marked


def _significance_note(block: pd.DataFrame, replicates: dict[tuple[str, str], Replicates]) -> str:
    cells = [(label, column) for column in block.columns for label in block[column].dropna().index]
    missing = sum(cell not in replicates for cell in cells)
    if missing == len(cells):
        return (f"no {MARK} marks: no run of this table has bootstrap replicates (records written before the "
                "runner stored them in the .npz)")
    note = (f"{MARK} = not significantly worse than the column's best: paired bootstrap of best − cell over "
            f"the same test-image resamples (seed-averaged replicates; mean: also averaged over categories), "
            f"two-sided p > {ALPHA}")
    return note + (f"; {missing} cells without replicates (older records) are not marked" if missing else "")


def _seed_std(runs: pd.DataFrame, metric: str, categories: list[str]) -> pd.DataFrame:
    """Rows = labels, columns = ``categories`` and ``mean``: the std over seeds (ddof 1) of a cell, and of
    the per-seed category mean over the seeds that ran every category; NaN below two seeds."""
    std = runs.groupby(["label", "category"])[metric].std(ddof=1).unstack("category")
    std = std.reindex(columns=categories)
    per_seed = runs.groupby(["label", "seed", "category"])[metric].mean().unstack("category")
    per_seed_mean = per_seed.reindex(columns=categories).mean(axis=1, skipna=False)
    std["mean"] = per_seed_mean.groupby(level="label").std(ddof=1)
    return std


def _cell_text(value: float, std: float, replicates: Replicates | None, scale: float, decimals: int) -> str:
    """``value``, then `` ± std`` where ``std`` is finite, then `` [lo, hi]`` (the :data:`LEVEL`
    percentile interval of ``replicates``) where there are replicates."""
    text = _fmt(value, scale, decimals)
    if not pd.isna(value) and not pd.isna(std):
        text += f" ± {std * scale:.{decimals}f}"
    if not pd.isna(value) and replicates is not None:
        lo, hi = percentile_interval(replicates.values, LEVEL)
        text += f" [{lo * scale:.{decimals}f}, {hi * scale:.{decimals}f}]"
    return text


INTERVAL_NOTE = (f"[lo, hi]: {100 * LEVEL:g} % percentile interval of the bootstrap replicates (resampled "
                 "test images); with several seeds the replicates are averaged over seeds and ± is the std "
                 "over seeds (ddof 1); the mean column averages the replicates over categories, its ± is the "
                 "std of the per-seed means over the seeds that ran every category; cells without replicates "
                 "show no interval")


def accuracy_tables(frame: pd.DataFrame, metric: str, arrays: RunArrays | None = None,
                    intervals: bool = False) -> list[Table]:
    """One :class:`Table` per dataset for ``metric`` (percent; best per column bold). With ``arrays``
    (the runs' npz files), cells not significantly worse than their column's best get :data:`MARK`
    (:func:`significance_marks`); ``intervals`` writes each cell as ``value [lo, hi]`` (the 95 %
    interval of its replicates), ``mean ± std [lo, hi]`` where it averages several seeds."""
    table = pivot(frame, metric)
    if table.empty:
        return []
    lower = metric in LOWER_IS_BETTER
    scale, decimals = (1.0, 3) if lower else (100.0, 1)
    unit = "" if lower else " (%)"
    tested = arrays is not None and metric in METRICS
    ok = _finished(frame, metric)
    out = []
    for dataset in table.columns.get_level_values(0).unique():
        block = table[dataset].dropna(how="all")
        categories = [str(c) for c in block.columns if c != "mean"]
        runs = ok[ok["dataset"] == dataset]
        replicates = _block_replicates(runs, metric, arrays, categories) if tested else {}
        std = _seed_std(runs, metric, categories) if intervals else pd.DataFrame()
        std = std.reindex(index=block.index, columns=block.columns)
        header = ["method"] + [str(c) for c in block.columns]
        rows = [[str(label), *(_cell_text(block.at[label, c], std.at[label, c],
                                          replicates.get((label, c)) if intervals else None, scale, decimals)
                               for c in block.columns)] for label in block.index]
        position = {label: i for i, label in enumerate(block.index)}
        column = {c: j + 1 for j, c in enumerate(block.columns)}
        bold = {(position[r], column[c]) for c in block.columns for r in _best(block[c], lower)}
        marked = {(position[r], column[c]) for r, c in significance_marks(block, replicates, lower)}
        notes = [note for note in (seed_note(frame, metric, dataset),) if note]
        notes += [_significance_note(block, replicates)] if tested else []
        notes += [INTERVAL_NOTE] if intervals else []
        out.append(Table(f"{metric}{unit} — {dataset}", header, rows, bold, notes, marked=marked))
    return out


def _draw_families(frame: pd.DataFrame, metric: str) -> dict[str, pd.Series]:
    """Family → ``metric`` averaged over seeds, indexed (label, category, dataset); families with
    two or more draws only."""
    ok = _finished(frame, metric)
    ok["family"] = ok["dataset"].astype(str).str.replace(DRAW_SUFFIX, "", regex=True)
    return {str(family): runs.groupby(["label", "category", "dataset"])[metric].mean()
            for family, runs in ok.groupby("family", sort=True) if runs["dataset"].nunique() >= 2}


def _family_pivot(per_draw: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One family's seed means (label, category, dataset) → (cells, counts). cells: rows = methods,
    columns = categories, ``mean`` and ``worst`` (NaN unless the method has every category on every
    draw); counts: the draws each (method, category) cell averages (NaN where it has none)."""
    draws = per_draw.index.get_level_values("dataset").nunique()
    by_cell = per_draw.groupby(["label", "category"])
    cells = by_cell.mean().unstack("category")
    counts = by_cell.size().unstack("category")
    categories = list(cells.columns)
    complete = counts.eq(draws).all(axis=1)
    cells["mean"] = cells[categories].mean(axis=1).where(complete)
    cells["worst"] = cells[categories].min(axis=1).where(complete)
    return cells, counts


def draw_pivot(frame: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    """Family (dataset name without ``_draw<k>``) → rows = methods, columns = categories, ``mean``
    and ``worst``; cell = mean over draws of the mean over seeds. Only families with two or more draws."""
    return {family: _family_pivot(per_draw)[0] for family, per_draw in _draw_families(frame, metric).items()}


def draw_tables(frame: pd.DataFrame, metric: str) -> list[Table]:
    """One :class:`Table` per dataset family with several draws (percent; best per column bold among
    the cells that average every draw; ``*`` = a cell averaging fewer draws than the family has)."""
    out = []
    for family, per_draw in _draw_families(frame, metric).items():
        block, counts = _family_pivot(per_draw)
        names = sorted(per_draw.index.get_level_values("dataset").unique())
        short = (counts > 0) & (counts < len(names))
        short = short.reindex(index=block.index, columns=block.columns, fill_value=False)
        header = ["method"] + [str(c) for c in block.columns]
        rows = [[str(label), *(_fmt(v, 100.0, 1) + ("*" if missing else "")
                               for v, missing in zip(values, short.loc[label]))]
                for label, values in block.iterrows()]
        complete = block.where(~short)  # a cell missing draws is never marked best
        position = {label: i for i, label in enumerate(block.index)}
        bold = {(position[r], j + 1)
                for j, col in enumerate(block.columns) for r in _best(complete[col], False)}
        notes = [f"draws: {', '.join(names)} (cells: mean over draws of the seed mean); "
                 "worst = the lowest category; * = fewer draws than the family has"]
        out.append(Table(f"{metric} (%) — {family}, mean over draws", header, rows, bold, notes))
    return out


def efficiency(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows = (dataset, label, device); columns = runs plus :data:`EFFICIENCY` keys: costs combined
    over the runs (mean, max or median; GPU memory NaN for CPU runs), accuracy as the dataset mean of
    the accuracy tables (NaN unless every category of the dataset's table ran)."""
    ok = _finished(frame, "fit_s")
    if ok.empty:
        return pd.DataFrame()
    ok["device"] = ok["device"].fillna("?").astype(str).str.split(":").str[0] if "device" in ok else "?"
    if "peak_gpu_mb" in ok:
        ok.loc[ok["device"] != "cuda", "peak_gpu_mb"] = np.nan
    grouped = ok.groupby(["dataset", "label", "device"])
    columns = {"runs": grouped.size()}
    for key, _, how, _, _ in EFFICIENCY:
        if key in ok and how != "dataset mean":
            columns[key] = grouped[key].agg(how)
    table = pd.DataFrame(columns)
    for key, _, how, _, _ in EFFICIENCY:
        if key in ok and how == "dataset mean":
            means = pivot(frame, key)
            table[key] = [means.get((dataset, "mean"), pd.Series(dtype=float)).get(label, np.nan)
                          for dataset, label, _ in table.index]
    return table[["runs", *(k for k, *_ in EFFICIENCY if k in table)]]


def efficiency_tables(frame: pd.DataFrame) -> list[Table]:
    table = efficiency(frame)
    out = []
    if table.empty:
        return out
    multi_device = table.index.get_level_values("device").nunique() > 1
    for dataset in table.index.get_level_values("dataset").unique():
        block = table.loc[dataset]
        specs = [s for s in EFFICIENCY if s[0] in block]
        header = ["method"] + (["device"] if multi_device else []) + ["runs"] + [s[1] for s in specs]
        offset = len(header) - len(specs)
        rows, bold = [], set()
        for (label, device), values in block.iterrows():
            row = [str(label)] + ([str(device)] if multi_device else []) + [str(int(values["runs"]))]
            rows.append(row + [_fmt(values[key], scale, dec) for key, _, _, scale, dec in specs])
        for j, (key, *_rest) in enumerate(specs):
            column = block[key].reset_index(drop=True)
            bold |= {(i, offset + j) for i in _best(column, key in LOWER_IS_BETTER)}
        notes = ["AUROC: dataset mean as in the accuracy tables (– unless every category ran); fit s "
                 "and infer ms/img: mean per run; peak memory: max over runs; params: median. "
                 "Timings compare only within one device and machine load; peak RSS is the job process's, "
                 "so jobs sharing a process (basic, joblib launchers) count what earlier jobs left there."]
        out.append(Table(f"efficiency — {dataset}", header, rows, bold, notes))
    return out


def delta_tables(frame: pd.DataFrame, configs: dict[str, dict[str, str]] | None = None) -> list[Table]:
    """Our means against the published reference (:func:`adbench.reporting.published.compare`); one table."""
    compared = published.compare(frame, published.load(), configs)
    if compared.empty:
        return []
    header = ["method", "dataset", "metric", "ours %", "paper %", "Δ pp", "runs", "paper source", "note"]
    rows = []
    for _, r in compared.iterrows():
        delta = DASH if pd.isna(r["delta"]) else f"{100 * r['delta']:+.1f}"
        paper = f"{100 * r['paper']:.2f}".removesuffix("0")  # as published: 98.26, 99.0
        rows.append([str(r["label"]), str(r["dataset"]), str(r["metric"]), _fmt(r["ours"], 100, 1), paper,
                     delta, str(r["runs"]), str(r["citation"]), str(r["note"])])
    notes = ["Δ only where method, variant, protocol, dataset, backbone and resolution match and every "
             "category of the dataset ran; otherwise the note says what differs."]
    return [Table("deltas against published numbers", header, rows, set(), notes, "lllrrrlll")]


class ComparisonError(ValueError):
    """A ``--compare`` request that cannot be answered; ``main`` prints it without a traceback."""


@dataclass
class Comparison:
    """:func:`compare_runs`' answer: the two labels, one row per (dataset, category, metric) and the
    ``dataset/category`` cells where a seed run by only one of them was left out."""

    label_a: str
    label_b: str
    rows: pd.DataFrame
    unpaired: list[str] = field(default_factory=list)


def _resolve_label(ok: pd.DataFrame, name: str) -> str:
    """A table label, or the one label of a method name; ComparisonError otherwise."""
    labels = sorted(ok["label"].unique())
    if name in labels:
        return name
    setups = sorted(ok.loc[ok["method"] == name, "label"].unique())
    if len(setups) == 1:
        return str(setups[0])
    if setups:
        raise ComparisonError(f"{name!r} ran {len(setups)} setups; name one label: {'; '.join(setups)}")
    raise ComparisonError(f"no finished run of {name!r}; labels: {'; '.join(labels) or 'none'}")


def split_pair(text: str, frame: pd.DataFrame) -> tuple[str, str]:
    """``"A,B"`` → (A, B); labels may hold commas (``patchcore[crop=64, resize=64]``), so the split is the
    comma with a known label or method name on both sides, else the only comma."""
    known = set(_labels(frame)) | set(frame["method"].astype(str))
    splits = [(text[:i].strip(), text[i + 1:].strip()) for i, char in enumerate(text) if char == ","]
    for pair in splits:
        if set(pair) <= known:
            return pair
    if len(splits) != 1 or not all(splits[0]):
        raise ComparisonError(f"--compare takes two labels or method names, A,B; got {text!r}")
    return splits[0]


def _same_test_set(arrays: RunArrays, run_a: pd.Series, run_b: pd.Series) -> bool:
    """True when both runs' npz name the same test images in the same order; False when one lacks
    them (no paired statistics then); ComparisonError, naming both runs, when they differ."""
    paths_a, paths_b = arrays.get(run_a, "paths"), arrays.get(run_b, "paths")
    if paths_a is None or paths_b is None:
        return False
    if not np.array_equal(paths_a, paths_b):
        raise ComparisonError(
            f"{run_a['run_id']} and {run_b['run_id']} were tested on different images ({len(paths_a)} and "
            f"{len(paths_b)} test paths, not the same list in the same order); a paired comparison needs "
            "both on the same test set: re-run one of them on the other's data")
    return True


def _paired(arrays: RunArrays, runs_a: list[pd.Series], runs_b: list[pd.Series],
            metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Seed-averaged replicates of A and B over their common resamples, or None if a run lacks them."""
    reps = [[arrays.replicates(run, metric) for run in runs] for runs in (runs_a, runs_b)]
    if any(r is None for side in reps for r in side):
        return None
    mean_a, mean_b = _mean_prefix(reps[0]), _mean_prefix(reps[1])
    n = min(len(mean_a), len(mean_b))
    return mean_a[:n], mean_b[:n]


def _delong_ps(arrays: RunArrays, runs_a: list[pd.Series], runs_b: list[pd.Series]) -> tuple[float, ...]:
    """DeLong's p of each seed pair's image AUROCs; () where a run lacks its scores."""
    ps = []
    for run_a, run_b in zip(runs_a, runs_b):
        labels = arrays.get(run_a, "labels")
        scores_a, scores_b = arrays.get(run_a, "image_scores"), arrays.get(run_b, "image_scores")
        if labels is None or scores_a is None or scores_b is None:
            return ()
        ps.append(delong_test(scores_a, scores_b, labels).p)
    return tuple(ps)


def _fmt_p(p: float) -> str:
    return DASH if pd.isna(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _compared_row(dataset: str, category: str, metric: str, seeds: str, values: np.ndarray,
                  replicates: tuple[np.ndarray, np.ndarray] | None, delong: tuple[float, ...]) -> dict:
    """values [S, 2]: (A, B) per paired seed (or per category, for a mean row)."""
    result = paired_bootstrap(*replicates, LEVEL) if replicates is not None else None
    return {"dataset": dataset, "category": category, "metric": metric, "seeds": seeds,
            "a": values[:, 0].mean(), "b": values[:, 1].mean(), "delta": (values[:, 0] - values[:, 1]).mean(),
            "lo": result.lo if result else np.nan, "hi": result.hi if result else np.nan,
            "p": result.p if result else np.nan, "delong_p": delong}


def compare_runs(frame: pd.DataFrame, arrays: RunArrays, name_a: str, name_b: str,
                 metrics: list[str]) -> Comparison:
    """A vs B (labels or method names) on every (dataset, category) both ran, runs paired by seed.

    One row per (dataset, category, metric): ``a``, ``b`` (means over the paired seeds), ``delta`` (the
    mean over seeds of a_s - b_s), ``lo``, ``hi``, ``p``: :func:`~adbench.reporting.compare.paired_bootstrap`
    of A's replicates averaged over its paired seeds against B's (every run on one test set got the same
    resamples, so this is a bootstrap of the seed-mean difference); ``delong_p``: DeLong's p of each seed
    pair (a tuple; image_auroc only). Per dataset with >= 2 categories a ``mean`` row averages the
    categories (and their replicates). Fractions; NaN where replicates are missing. ComparisonError when
    a name is unknown or two paired runs were tested on different images.
    """
    unknown = [m for m in metrics if m not in frame.columns]
    if unknown:
        raise ComparisonError(f"unknown metric {', '.join(unknown)}; metrics: {', '.join(METRICS)}")
    ok = frame[frame["status"] == "ok"].copy()
    ok["label"] = _labels(ok)
    label_a, label_b = _resolve_label(ok, name_a), _resolve_label(ok, name_b)
    if label_a == label_b:
        raise ComparisonError(f"{name_a!r} and {name_b!r} are the same setup ({label_a})")
    rows, unpaired = [], []
    per_category: dict[tuple[str, str], list] = {}  # (dataset, metric) → [(values, replicates)]
    both = ok[ok["label"].isin([label_a, label_b])].sort_values("finished_at", kind="stable")
    both = both.drop_duplicates(["label", "dataset", "category", "seed"], keep="last")  # re-runs: the latest
    for (dataset, category), runs in both.groupby(["dataset", "category"], sort=True):
        side_a, side_b = (runs[runs["label"] == lab].set_index("seed") for lab in (label_a, label_b))
        seeds = sorted(set(side_a.index) & set(side_b.index))
        if set(side_a.index) ^ set(side_b.index) and not side_a.empty and not side_b.empty:
            unpaired.append(f"{dataset}/{category}")
        if not seeds:
            continue
        runs_a, runs_b = [side_a.loc[s] for s in seeds], [side_b.loc[s] for s in seeds]
        paired = all([_same_test_set(arrays, a, b) for a, b in zip(runs_a, runs_b)])  # checks every pair
        for metric in metrics:
            values = np.array([[a[metric], b[metric]] for a, b in zip(runs_a, runs_b)], dtype=np.float64)
            if np.isnan(values).any():
                continue
            replicates = _paired(arrays, runs_a, runs_b, metric) if paired else None
            delong = _delong_ps(arrays, runs_a, runs_b) if paired and metric == "image_auroc" else ()
            rows.append(_compared_row(str(dataset), str(category), metric, ", ".join(f"{s:g}" for s in seeds),
                                      values, replicates, delong))
            per_category.setdefault((str(dataset), metric), []).append((values.mean(axis=0), replicates))
    for (dataset, metric), cells in per_category.items():
        if len(cells) < 2:
            continue
        reps = [r for _, r in cells]
        replicates = None if any(r is None for r in reps) else (
            _mean_prefix([r[0] for r in reps]), _mean_prefix([r[1] for r in reps]))
        values = np.array([v for v, _ in cells])
        rows.append(_compared_row(dataset, "mean", metric, "", values, replicates, ()))
    columns = ["dataset", "category", "metric", "seeds", "a", "b", "delta", "lo", "hi", "p", "delong_p"]
    table = pd.DataFrame(rows, columns=columns)
    order = table.assign(metric_order=table["metric"].map(metrics.index), is_mean=table["category"] == "mean")
    order = order.sort_values(["dataset", "metric_order", "is_mean"], kind="stable").index  # then category
    return Comparison(label_a, label_b, table.loc[order].reset_index(drop=True), unpaired)


def comparison_tables(comparison: Comparison) -> list[Table]:
    """One :class:`Table` per dataset of a :class:`Comparison` (percent and percentage points; p <=
    :data:`ALPHA` bold)."""
    out = []
    header = ["category", "metric", "seeds", "A %", "B %", "Δ pp", f"{100 * LEVEL:g} % CI pp", "p bootstrap",
              "p DeLong"]
    for dataset, block in comparison.rows.groupby("dataset", sort=True):
        rows, bold = [], set()
        for i, r in enumerate(block.itertuples()):
            interval = DASH if pd.isna(r.lo) else f"[{100 * r.lo:+.2f}, {100 * r.hi:+.2f}]"
            rows.append([r.category, r.metric, r.seeds or DASH, _fmt(r.a, 100, 2), _fmt(r.b, 100, 2),
                         f"{100 * r.delta:+.2f}", interval, _fmt_p(r.p),
                         ", ".join(map(_fmt_p, r.delong_p)) or DASH])
            if r.p <= ALPHA:
                bold.add((i, 7))
        notes = [f"A = {comparison.label_a}, B = {comparison.label_b}; Δ = A − B, the mean over the seeds "
                 "both ran (paired by seed); CI and p: paired bootstrap of the difference of the "
                 "seed-averaged replicates (both runs resampled the same test images alike), p = min(1, "
                 f"2 min(#(d ≤ 0) + 1, #(d ≥ 0) + 1) / (B + 1)); bold: p ≤ {ALPHA}; – : no replicates "
                 "(older records)",
                 "p DeLong: DeLong's test of the two image AUROCs on the same images, one p per seed pair; "
                 "mean: the mean over the categories above, its CI from replicates averaged over categories"]
        unpaired = [c for c in comparison.unpaired if c.startswith(f"{dataset}/")]
        if unpaired:
            notes.append(f"seeds run by only one of them were left out in: {', '.join(unpaired)}")
        out.append(Table(f"{comparison.label_a} (A) vs {comparison.label_b} (B) — {dataset}", header, rows,
                         bold, notes, "lllrrrrrr"))
    return out


def render_comparison(comparison: Comparison, fmt: str = "markdown") -> str:
    """A :class:`Comparison` as markdown or LaTeX tables, or CSV (fractions; DeLong's p per seed pair
    joined by ";")."""
    if comparison.rows.empty:
        return (f"({comparison.label_a} and {comparison.label_b} share no (dataset, category, seed) "
                "with finished runs)\n")
    if fmt == "csv":
        delong = comparison.rows["delong_p"].map(lambda ps: ";".join(f"{p:.6g}" for p in ps))
        return comparison.rows.assign(delong_p=delong, a_label=comparison.label_a,
                                      b_label=comparison.label_b).to_csv(index=False, float_format="%.6g")
    return "\n".join(t.markdown() if fmt == "markdown" else t.latex() for t in comparison_tables(comparison))


def build_tables(frame: pd.DataFrame, which: list[str], metrics: list[str],
                 configs: dict[str, dict[str, str]] | None = None, arrays: RunArrays | None = None,
                 intervals: bool = False) -> list[Table]:
    """The requested tables (``accuracy`` once per metric) in order; ``arrays`` and ``intervals`` as in
    :func:`accuracy_tables`."""
    tables: list[Table] = []
    for name in which:
        if name == "accuracy":
            for metric in metrics:
                if metric not in frame.columns:
                    known = ", ".join(frame.columns)
                    raise KeyError(f"unknown metric {metric!r}; leaderboard columns: {known}")
                tables += accuracy_tables(frame, metric, arrays, intervals)
        elif name == "efficiency":
            tables += efficiency_tables(frame)
        elif name == "deltas":
            tables += delta_tables(frame, configs)
        elif name == "draws":
            for metric in metrics:
                tables += draw_tables(frame, metric)
        else:
            raise KeyError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
    return tables


def csv_text(frame: pd.DataFrame, which: list[str], metrics: list[str],
             configs: dict[str, dict[str, str]] | None = None) -> str:
    """The requested tables as CSV blocks (raw values, no marks), separated by blank lines."""
    parts = []
    for name in which:
        if name == "accuracy":
            for metric in metrics:
                table = pivot(frame, metric)
                if not table.empty:
                    table.columns = [f"{d}/{c}" for d, c in table.columns]
                    parts.append(f"# {metric}\n" + table.to_csv(index_label="method", float_format="%.6g"))
        elif name == "efficiency":
            table = efficiency(frame)
            if not table.empty:
                parts.append("# efficiency\n" + table.to_csv(float_format="%.6g"))
        elif name == "deltas":
            table = published.compare(frame, published.load(), configs)
            if not table.empty:
                parts.append("# deltas\n" + table.to_csv(index=False, float_format="%.6g"))
        elif name == "draws":
            for metric in metrics:
                for family, table in draw_pivot(frame, metric).items():
                    parts.append(f"# draws {family} {metric}\n"
                                 + table.to_csv(index_label="method", float_format="%.6g"))
    return "\n".join(parts)


def render(frame: pd.DataFrame, which: list[str], metrics: list[str], fmt: str = "markdown",
           configs: dict[str, dict[str, str]] | None = None, arrays: RunArrays | None = None,
           intervals: bool = False) -> str:
    """All requested tables in one format (markdown, latex or csv); ``configs`` (setup hash → flat
    config, :func:`adbench.results.setup_configs`) lets deltas check the reference's config conditions;
    ``arrays`` and ``intervals`` as in :func:`accuracy_tables` (CSV: raw values only)."""
    if fmt == "csv":
        return csv_text(frame, which, metrics, configs)
    tables = build_tables(frame, which, metrics, configs, arrays, intervals)
    if not tables:
        return f"({', '.join(which)}: nothing to show: no finished run, or none like a published one)\n"
    return "\n".join(t.markdown() if fmt == "markdown" else t.latex() for t in tables)


def write_all(frame: pd.DataFrame, out: str | Path, metrics: list[str],
              configs: dict[str, dict[str, str]] | None = None, arrays: RunArrays | None = None,
              intervals: bool = False) -> list[Path]:
    """Write ``<out>/{accuracy,efficiency,deltas,draws}.{md,tex,csv}``; returns the paths written."""
    out = Path(out)
    written = []
    for name in TABLES:
        for fmt, suffix in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
            path = out / f"{name}.{suffix}"
            atomic_write_text(path, render(frame, [name], metrics, fmt, configs, arrays, intervals))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results_dir or a leaderboard.csv path")
    parser.add_argument("--table", default=",".join(TABLES), help=f"comma-separated: {', '.join(TABLES)}")
    parser.add_argument("--metric", default="image_auroc,pixel_auroc,pixel_aupro",
                        help=f"accuracy metrics, comma-separated: {', '.join(METRICS)} (or fit_s, ...)")
    parser.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"])
    parser.add_argument("--out", default=None, help="also write every table as .md/.tex/.csv to this folder")
    parser.add_argument("--intervals", action="store_true",
                        help="accuracy cells as 'value [95 %% interval]' ('mean ± std [...]' over seeds)")
    parser.add_argument("--compare", default=None, metavar="A,B",
                        help="only compare two methods (labels or method names) run on the same test images")
    args = parser.parse_args(argv)
    results_dir = Path(args.results) if Path(args.results).is_dir() else Path(args.results).parent
    has_records = (results_dir / "runs").is_dir()
    try:
        frame = current_leaderboard(results_dir) if has_records else load_leaderboard(args.results)
    except (FileNotFoundError, ValueError) as err:  # no leaderboard there, or not one: the message says
        sys.stderr.write(f"error: {err}\n")
        return 1
    arrays = RunArrays(results_dir) if has_records else None
    configs = setup_configs(results_dir)
    metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
    which = [t.strip() for t in args.table.split(",") if t.strip()]
    if args.compare is not None:
        try:
            if arrays is None:
                raise ComparisonError(f"--compare reads the run records and their npz: no {results_dir}/runs")
            comparison = compare_runs(frame, arrays, *split_pair(args.compare, frame), metrics)
        except ComparisonError as err:
            sys.stderr.write(f"error: {err}\n")
            return 2
        sys.stdout.write(render_comparison(comparison, args.format))
        return 0
    sys.stdout.write(render(frame, which, metrics, args.format, configs, arrays, args.intervals))
    if args.out:
        paths = write_all(frame, args.out, metrics, configs, arrays, args.intervals)
        sys.stdout.write(f"\nwrote {len(paths)} files to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
