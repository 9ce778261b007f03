"""Comparison tables from a leaderboard: method × category per metric, per-dataset means.

``python -m adbench.leaderboard [--results results] [--metric image_auroc,pixel_auroc]
[--format markdown|csv|latex]`` prints one table per metric. Values are shown in percent;
several seeds of one cell are averaged. The best value of each column is marked (bold).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from adbench.results import METRICS, load_leaderboard

LOWER_IS_BETTER = {"fit_s", "infer_ms_per_img", "peak_rss_mb", "peak_gpu_mb", "n_params"}


def method_label(frame: pd.DataFrame) -> pd.Series:
    """``method`` alone, or ``method[variant]`` where one method appears with several variants."""
    variants = frame.groupby("method")["variant"].nunique()
    multi = set(variants[variants > 1].index)
    return frame.apply(lambda r: f"{r.method}[{r.variant}]" if r.method in multi else r.method, axis=1)


def pivot(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows = methods, columns = (dataset, category) plus (dataset, "mean"); NaN where no run."""
    ok = frame[(frame["status"] == "ok") & frame[metric].notna()].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["label"] = method_label(ok)
    cells = ok.groupby(["label", "dataset", "category"])[metric].mean().unstack(["dataset", "category"])
    blocks = []
    for dataset in sorted(ok["dataset"].unique()):
        block = cells[dataset].sort_index(axis=1)
        block[("mean")] = block.mean(axis=1, skipna=False)
        block.columns = pd.MultiIndex.from_product([[dataset], block.columns])
        blocks.append(block)
    return pd.concat(blocks, axis=1)


def _fmt(value: float, scale: float) -> str:
    return "–" if pd.isna(value) else f"{value * scale:.1f}" if scale == 100 else f"{value:.4g}"


def render(table: pd.DataFrame, metric: str, fmt: str = "markdown") -> str:
    """One metric's table as markdown, csv or LaTeX (booktabs); best value per column marked."""
    if table.empty:
        return f"(no finished runs with {metric})"
    scale = 1.0 if metric in LOWER_IS_BETTER else 100.0
    if fmt == "csv":
        flat = table.copy()
        flat.columns = [f"{d}/{c}" for d, c in flat.columns]
        return flat.to_csv(index_label="method", float_format="%.6g")
    best = table.min() if metric in LOWER_IS_BETTER else table.max()
    header = ["method"] + [f"{d}/{c}" if c != "mean" else f"{d} mean" for d, c in table.columns]
    rows = []
    for label, values in table.iterrows():
        cells = []
        for col, value in values.items():
            text = _fmt(value, scale)
            if not pd.isna(value) and np.isclose(value, best[col]) and len(table) > 1:
                text = f"**{text}**" if fmt == "markdown" else rf"\textbf{{{text}}}"
            cells.append(text)
        rows.append([str(label), *cells])
    if fmt == "latex":
        escape = lambda s: s.replace("_", r"\_").replace("%", r"\%")  # noqa: E731
        lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
                 " & ".join(escape(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(escape(c) if i == 0 else c for i, c in enumerate(r)) + r" \\" for r in rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def tables(frame: pd.DataFrame, metrics: list[str], fmt: str = "markdown") -> str:
    parts = []
    for metric in metrics:
        if metric not in frame.columns:
            raise KeyError(f"unknown metric {metric!r}; leaderboard columns: {', '.join(frame.columns)}")
        title = metric if metric in LOWER_IS_BETTER else f"{metric} (%)"
        body = render(pivot(frame, metric), metric, fmt)
        parts.append(body if fmt == "csv" else f"### {title}\n\n{body}\n" if fmt == "markdown"
                     else f"% {title}\n{body}\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results_dir or a leaderboard.csv path")
    parser.add_argument("--metric", default="image_auroc,pixel_auroc,pixel_aupro",
                        help=f"comma-separated; metrics: {', '.join(METRICS)}; or fit_s, infer_ms_per_img, ...")
    parser.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"])
    args = parser.parse_args(argv)
    frame = load_leaderboard(args.results)
    sys.stdout.write(tables(frame, [m.strip() for m in args.metric.split(",") if m.strip()], args.format) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
