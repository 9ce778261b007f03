"""Comparison tables from a leaderboard: accuracy, efficiency and deltas against published numbers.

``python -m adbench.leaderboard [--results results] [--table accuracy,efficiency,deltas]
[--metric image_auroc,pixel_auroc] [--format markdown|csv|latex] [--out DIR]`` prints the tables;
with ``--out`` it also writes every table in all three formats (``make leaderboard``).

* accuracy: one table per metric and dataset, rows = methods (:func:`adbench.results.setup_labels`),
  columns = categories plus the dataset mean. Values in percent; the seeds of one cell are averaged
  (a note says how many); a mean exists only when every category of the table has a value.
* efficiency: per dataset, the mean image/pixel AUROC beside the mean fit seconds, inference ms per
  image, peak RSS and GPU memory (max over runs) and parameters (median), per method and device.
* deltas: our dataset means against ``adbench/reference/published.csv`` (:mod:`adbench.published`),
  where method, variant, protocol, dataset, backbone and resolution match and every category ran.
* draws: for a dataset with several draws (``toy_dev``, ``toy_dev_draw2``, ...: names that differ
  only by a ``_draw<k>`` suffix), per metric the category means over every draw and seed, their
  mean and the worst category: the numbers a preset is chosen on. Mean and worst exist only when
  the method has every category on every draw of the family.

The best value of each column is marked (bold in markdown and LaTeX; LaTeX tables use booktabs).
CSV tables are for machines: raw values (fractions, seconds, MB), no marks.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from adbench import published
from adbench.results import METRICS, atomic_write_text, current_leaderboard, load_leaderboard, setup_configs

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


@dataclass
class Table:
    """A rendered-ready table: ``rows`` of strings under ``header``; ``bold`` holds (row, column)
    cells to mark; ``notes`` are printed under it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    align: str = ""

    def markdown(self) -> str:
        align = self.align or "l" + "r" * (len(self.header) - 1)
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
        for i, row in enumerate(self.rows):
            cells = [f"**{c}**" if (i, j) in self.bold else c for j, c in enumerate(row)]
            lines.append("| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |")
        return "\n".join(lines + [""] + [f"{n}  " for n in self.notes]).rstrip() + "\n"

    def latex(self) -> str:
        align = self.align or "l" + "r" * (len(self.header) - 1)
        lines = [f"% {self.title}", r"\begin{tabular}{" + align + "}", r"\toprule",
                 " & ".join(latex_escape(h) for h in self.header) + r" \\", r"\midrule"]
        for i, row in enumerate(self.rows):
            cells = [latex_escape(c) for c in row]
            cells = [rf"\textbf{{{c}}}" if (i, j) in self.bold else c for j, c in enumerate(cells)]
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"] + [f"% {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in a cell; the en dash of empty cells becomes ``--``."""
    out = text.replace("\\", r"\textbackslash{}")
    for char in "&%$#_{}":
        out = out.replace(char, "\\" + char)
    out = out.replace("~", r"\textasciitilde{}").replace("^", r"\^{}")
    return out.replace(DASH, "--").replace("Δ", r"$\Delta$").replace("×", r"$\times$")


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


def accuracy_tables(frame: pd.DataFrame, metric: str) -> list[Table]:
    """One :class:`Table` per dataset for ``metric`` (percent; best per column bold)."""
    table = pivot(frame, metric)
    if table.empty:
        return []
    lower = metric in LOWER_IS_BETTER
    scale, decimals = (1.0, 3) if lower else (100.0, 1)
    unit = "" if lower else " (%)"
    out = []
    for dataset in table.columns.get_level_values(0).unique():
        block = table[dataset].dropna(how="all")
        header = ["method"] + [str(c) for c in block.columns]
        rows = [[str(label), *(_fmt(v, scale, decimals) for v in values)]
                for label, values in block.iterrows()]
        position = {label: i for i, label in enumerate(block.index)}
        bold = {(position[r], j + 1) for j, col in enumerate(block.columns) for r in _best(block[col], lower)}
        note = seed_note(frame, metric, dataset)
        out.append(Table(f"{metric}{unit} — {dataset}", header, rows, bold, [note] if note else []))
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
    """Our means against the published reference (:func:`adbench.published.compare`); one table."""
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


def build_tables(frame: pd.DataFrame, which: list[str], metrics: list[str],
                 configs: dict[str, dict[str, str]] | None = None) -> list[Table]:
    """The requested tables (``accuracy`` once per metric) in order."""
    tables: list[Table] = []
    for name in which:
        if name == "accuracy":
            for metric in metrics:
                if metric not in frame.columns:
                    known = ", ".join(frame.columns)
                    raise KeyError(f"unknown metric {metric!r}; leaderboard columns: {known}")
                tables += accuracy_tables(frame, metric)
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
           configs: dict[str, dict[str, str]] | None = None) -> str:
    """All requested tables in one format (markdown, latex or csv); ``configs`` (setup hash → flat
    config, :func:`adbench.results.setup_configs`) lets deltas check the reference's config conditions."""
    if fmt == "csv":
        return csv_text(frame, which, metrics, configs)
    tables = build_tables(frame, which, metrics, configs)
    if not tables:
        return f"({', '.join(which)}: nothing to show: no finished run, or none like a published one)\n"
    return "\n".join(t.markdown() if fmt == "markdown" else t.latex() for t in tables)


def write_all(frame: pd.DataFrame, out: str | Path, metrics: list[str],
              configs: dict[str, dict[str, str]] | None = None) -> list[Path]:
    """Write ``<out>/{accuracy,efficiency,deltas,draws}.{md,tex,csv}``; returns the paths written."""
    out = Path(out)
    written = []
    for name in TABLES:
        for fmt, suffix in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
            path = out / f"{name}.{suffix}"
            atomic_write_text(path, render(frame, [name], metrics, fmt, configs))
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
    args = parser.parse_args(argv)
    results_dir = Path(args.results) if Path(args.results).is_dir() else Path(args.results).parent
    has_records = (results_dir / "runs").is_dir()
    frame = current_leaderboard(results_dir) if has_records else load_leaderboard(args.results)
    configs = setup_configs(results_dir)
    metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
    which = [t.strip() for t in args.table.split(",") if t.strip()]
    sys.stdout.write(render(frame, which, metrics, args.format, configs))
    if args.out:
        paths = write_all(frame, args.out, metrics, configs)
        sys.stdout.write(f"\nwrote {len(paths)} files to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
