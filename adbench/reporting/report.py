"""``make report`` / ``python -m adbench.report [--results results] [--out results/report]``.

Writes ``<out>/README.md`` with the comparison tables (accuracy, efficiency, deltas against
published numbers; also as ``tables/*.md|tex|csv``) and links to PNG figures:

* ``mean_metrics_<dataset>.png``: per-dataset mean of image AUROC, pixel AUROC, AU-PRO and image
  AP per method (bar chart; a method without every category of the table gets no bar);
* ``roc_<dataset>.png``: the image-level ROC curve of every method, one panel per category;
* ``extremes_<dataset>_<category>.png``: per method, the three highest- and three lowest-scoring
  test images with the anomaly map overlaid and the ground truth outlined;
* ``cd_<dataset>_<metric>.png``: critical-difference diagram (average ranks over the categories,
  Friedman test, Nemenyi CD at alpha 0.05) where >= 2 methods ran >= 2 common categories.

Curves and overlays come from the ``<hash>.npz`` files the runner saves beside each record
(per-image scores and labels; maps and masks of the extreme images). Where one method has several
seeds in a category, the figures show its lowest seed; tables average all seeds.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from adbench.data import ImageTransform
from adbench.reporting import viz
from adbench.reporting.compare import FriedmanResult, friedman, nemenyi_cd
from adbench.reporting.leaderboard import RunArrays, build_tables, pivot, write_all
from adbench.results import atomic_write_text, current_leaderboard, iter_records, record_path, setup_configs

BAR_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro", "image_ap")
TABLE_METRICS = ["image_auroc", "pixel_auroc", "pixel_aupro"]
CD_ALPHA = 0.05


@dataclass
class Report:
    """What :func:`make_report` wrote: the README and the figures, and runs it could not draw."""

    readme: Path
    figures: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _chosen_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished runs, one per (dataset, category, label): the lowest seed."""
    ok = frame[frame["status"] == "ok"].copy()
    ok["label"] = ok["label"].where(ok["label"].notna(), ok["method"]).astype(str)
    return ok.sort_values("seed").groupby(["dataset", "category", "label"], as_index=False).first()


def _npz_path(results_dir: Path, row: pd.Series) -> Path:
    record = record_path(results_dir, row["dataset"], row["category"], row["method"], row["config_hash"])
    return record.with_suffix(".npz")


def _transforms(results_dir: Path) -> dict[str, ImageTransform]:
    """config_hash → the display transform (resize, crop, no normalisation) of that run."""
    out = {}
    for record in iter_records(results_dir):
        image = ((record.get("config") or {}).get("method") or {}).get("image") or {}
        if "resize" in image and "crop" in image:
            out[record["config_hash"]] = ImageTransform.from_config(image, record.get("category"))
    return out


def mean_metrics_figures(frame: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    tables = {m: pivot(frame, m) for m in BAR_METRICS if m in frame and frame[m].notna().any()}
    datasets = sorted(frame.loc[frame["status"] == "ok", "dataset"].unique())
    for dataset in datasets:
        means: dict[str, dict[str, float]] = {}
        for metric, table in tables.items():
            if dataset not in table.columns.get_level_values(0):
                continue
            for label, value in table[(dataset, "mean")].items():
                means.setdefault(str(label), {})[metric] = float(value)
        metrics = [m for m in BAR_METRICS if m in tables]
        if means:
            fig = viz.bar_figure(means, metrics, f"{dataset}: mean over categories")
            paths.append(viz.save(fig, out / f"mean_metrics_{dataset}.png"))
    return paths


def roc_figures(chosen: pd.DataFrame, results_dir: Path, out: Path, skipped: list[str]) -> list[Path]:
    paths = []
    for dataset, runs in chosen.groupby("dataset"):
        panels: dict[str, list[viz.Curve]] = {}
        for _, row in runs.sort_values(["category", "label"]).iterrows():
            npz = _npz_path(results_dir, row)
            if not npz.is_file():
                skipped.append(f"{row['run_id']}: no {npz.name}")
                continue
            with np.load(npz) as data:
                scores, labels = data["image_scores"], data["labels"]
            if len(np.unique(labels)) < 2:
                continue
            fpr, tpr = viz.roc_points(scores, labels)
            panels.setdefault(str(row["category"]), []).append(
                viz.Curve(str(row["label"]), fpr, tpr, float(row["image_auroc"]))
            )
        if panels:
            fig = viz.roc_figure(panels, f"{dataset}: image-level ROC")
            paths.append(viz.save(fig, out / f"roc_{dataset}.png"))
    return paths


def _tiles(npz: Path, transform: ImageTransform) -> list[viz.Tile]:
    """The saved extreme images of one run, highest score first."""
    with np.load(npz) as data:
        index, maps, masks = data["map_index"], data["maps"], data["masks"].astype(bool)
        if maps.dtype == np.float16:  # written before maps were float32: overflowed values are ±inf
            limit = float(np.finfo(np.float16).max)
            maps = np.nan_to_num(maps.astype(np.float32), nan=0.0, posinf=limit, neginf=-limit)
        scores, labels = data["image_scores"], data["labels"]
        paths, defects = data["paths"], data["defect_types"]
    order = np.argsort(-scores[index], kind="stable")
    tiles = []
    for k in order:
        i = index[k]
        truth = "good" if labels[i] == 0 else str(defects[i])
        caption = f"{truth} · {scores[i]:.3g}\n{Path(str(paths[i])).name}"
        tiles.append(viz.Tile(viz.display_image(str(paths[i]), transform), maps[k], masks[k], caption))
    return tiles


def extremes_figures(chosen: pd.DataFrame, results_dir: Path, out: Path, skipped: list[str]) -> list[Path]:
    transforms = _transforms(results_dir)
    paths = []
    for (dataset, category), runs in chosen.groupby(["dataset", "category"]):
        rows: dict[str, list[viz.Tile]] = {}
        for _, row in runs.sort_values("label").iterrows():
            npz = _npz_path(results_dir, row)
            transform = transforms.get(row["config_hash"])
            if not npz.is_file() or transform is None:
                continue
            try:
                rows[str(row["label"])] = _tiles(npz, transform)
            except (OSError, ValueError) as err:  # the images moved or cannot be read
                skipped.append(f"{row['run_id']}: {err}")
        if rows:
            title = (f"{dataset}/{category}: 3 highest- then 3 lowest-scoring test images per method "
                     "(caption: truth · image score; colour scale per row)")
            fig = viz.extremes_figure(rows, title)
            paths.append(viz.save(fig, out / f"extremes_{dataset}_{category}.png"))
    return paths


def _iman_davenport(test: FriedmanResult) -> str:
    if np.isnan(test.f):
        return "Iman–Davenport F_F undefined (every category ranks the methods alike)"
    return f"Iman–Davenport F_F = {test.f:.2f} (p = {test.p_f:.3g})"


def cd_figures(frame: pd.DataFrame, out: Path) -> tuple[list[Path], list[str]]:
    """Per dataset and :data:`TABLE_METRICS` metric: a critical-difference diagram of the methods over the
    categories where every method of the table has a value (blocks = categories, seed means), where
    that leaves >= 2 methods and >= 2 categories. Returns the figures and their README lines."""
    paths, lines = [], []
    for metric in (m for m in TABLE_METRICS if m in frame):
        table = pivot(frame, metric)
        if table.empty:
            continue
        for dataset in table.columns.get_level_values(0).unique():
            scores = table[dataset].drop(columns="mean").dropna(how="all").T.dropna(how="any")
            n_blocks, k = scores.shape
            if k < 2 or n_blocks < 2:
                continue
            test = friedman(scores)
            cd = nemenyi_cd(k, n_blocks, CD_ALPHA)
            title = f"{dataset}: {metric}, {k} methods × {n_blocks} categories, Nemenyi α = {CD_ALPHA}"
            path = viz.cd_diagram(test.avg_ranks.to_dict(), cd, out / f"cd_{dataset}_{metric}.png", title)
            paths.append(path)
            lines += [f"- **{dataset}, {metric}**: {k} methods × {n_blocks} categories "
                      f"({', '.join(map(str, scores.index))}); Friedman χ²_F = {test.chi2:.2f} "
                      f"(p = {test.p_chi2:.3g}), {_iman_davenport(test)}; CD = {cd:.2f}", "",
                      f"  ![{path.stem}]({path.name})", ""]
    return paths, lines


def make_report(results_dir: str | Path = "results", out: str | Path | None = None) -> Report:
    """Build ``<out>/README.md``, its tables and figures from the records under ``results_dir``."""
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir / "report"
    if not (results_dir / "runs").is_dir():
        raise FileNotFoundError(f"no run records under {results_dir}/runs; run a sweep first (make sweep)")
    frame = current_leaderboard(results_dir)
    configs = setup_configs(results_dir)
    chosen = _chosen_runs(frame)
    report = Report(out / "README.md")
    bars = mean_metrics_figures(frame, out)
    rocs = roc_figures(chosen, results_dir, out, report.skipped)
    extremes = extremes_figures(chosen, results_dir, out, report.skipped)
    diagrams, diagram_lines = cd_figures(frame, out)
    report.figures = bars + rocs + extremes + diagrams
    arrays = RunArrays(results_dir)
    write_all(frame, out / "tables", TABLE_METRICS, configs, arrays)

    failed = frame[frame["status"] != "ok"]
    lines = [
        "# adbench report", "",
        f"Generated from `{results_dir}`: {int((frame['status'] == 'ok').sum())} finished runs, "
        f"{len(failed)} failed; datasets {', '.join(sorted(chosen['dataset'].unique())) or '–'}. "
        "Tables average seeds; figures show each method's lowest seed. All tables also as "
        "[markdown, LaTeX and CSV](tables/).", "",
        "## Mean metrics", "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in bars] + [""]
    lines += ["## Tables", ""]
    tables = build_tables(frame, ["accuracy", "efficiency", "deltas"], TABLE_METRICS, configs, arrays)
    lines += [t.markdown() for t in tables]
    lines += ["## Critical-difference diagrams", "",
              "Average rank of each method over the categories every method of the table ran (1 = best; "
              "ties share the mean rank), the Friedman test of equal ranks (Demšar, JMLR 7 (2006) 1-30) "
              f"and the Nemenyi critical difference CD at α = {CD_ALPHA}: methods joined by a thick bar "
              "differ by less than the CD, so the test cannot tell them apart. With few categories the CD "
              "is wide; the † marks in the tables test each category on its own test images instead.", ""]
    lines += diagram_lines or ["(no dataset and metric with >= 2 methods on >= 2 common categories)", ""]
    lines += ["## ROC curves per category", "", "Image-level ROC of every method; the legend gives the AUROC "
              "computed by `adbench.metrics` for that run.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in rocs] + [""]
    lines += ["## Highest- and lowest-scoring test images", "",
              "Per category, one row per method: its three highest-scoring test images, then its three "
              "lowest, with the anomaly map overlaid (jet colour scale from the row's minimum to its "
              "maximum) and the ground-truth defect outlined in white. A good method shows defects in "
              "the first three columns and good images in the last three.", ""]
    lines += [f"- [{p.stem.removeprefix('extremes_')}]({p.name})" for p in extremes] + [""]
    if len(failed):
        lines += ["## Failed runs", "", "| run | error |", "|---|---|"]
        lines += [f"| {r.run_id} | {str(r.error).splitlines()[0][:200] if isinstance(r.error, str) else ''} |"
                  for r in failed.itertuples()]
        lines += [""]
    if report.skipped:
        lines += ["## Not drawn", ""] + [f"- {s}" for s in report.skipped] + [""]
    atomic_write_text(report.readme, "\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write results/report/: README, tables and figures.")
    parser.add_argument("--results", default="results", help="results_dir holding runs/")
    parser.add_argument("--out", default=None, help="report folder (default <results>/report)")
    args = parser.parse_args(argv)
    report = make_report(args.results, args.out)
    print(f"wrote {report.readme} and {len(report.figures)} figures"
          + (f"; not drawn: {len(report.skipped)}" if report.skipped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
