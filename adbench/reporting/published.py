"""Published numbers (``adbench/reference/published.csv``) and our results set against them.

The reference is derived from the papers' tables (``../shared/reference/published.csv``) and
rewritten in adbench's terms: dataset family names (``mvtec``, ``visa``, ...), backbone config
names (``none`` for networks trained from scratch), the evaluation resolution as an integer (empty
where the paper used several), the number of categories of the dataset, and the conditions on a
run's config that make it the published variant. Values are percent as published.

A published row and one of our setups (:func:`adbench.results.setup_labels`) are the **same
experiment** when method, protocol, ``variant`` (empty = any), few-shot ``shots`` and ``source``
and every ``config`` condition (``key=value;...`` on the dotted run config) agree. Only then does a
row appear; it gets a difference when, in addition, backbone (a paper backbone without a weights tag
matches any tag of that architecture), resolution and dataset match, every category of the
dataset ran and every ``requires`` condition holds (the published protocol: ``key=value`` or
``key!=value``, e.g. GLASS's DTD textures and foreground masks). Otherwise the note says what differs
and no difference is shown. AU-PRO gets a difference only where the paper's AU-PRO is the MVTec
definition (``aupro_definition`` = ``mvtec``), the one :mod:`adbench.metrics` computes.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

REFERENCE_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro", "pixel_ap")
TEXT_COLUMNS = ("method", "variant", "paper_variant", "dataset", "protocol", "backbone", "source", "config",
                "requires", "aupro_definition", "note", "citation")
COMPARISON_COLUMNS = ("label", "method", "variant", "dataset", "metric", "ours", "paper", "delta", "runs",
                      "paper_variant", "citation", "note")


def load(path: str | Path | None = None) -> pd.DataFrame:
    """The reference table with metrics as fractions (like the leaderboard); text cells '' if empty."""
    source = Path(path) if path is not None else resources.files("adbench") / "reference" / "published.csv"
    with source.open() as fh:
        frame = pd.read_csv(fh, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                            na_values={m: [""] for m in (*REFERENCE_METRICS, "eval_resolution", "shots")})
    for metric in REFERENCE_METRICS:
        frame[metric] = frame[metric] / 100.0
    return frame


def conditions(text: str) -> dict[str, str]:
    """``"a.b=1;c=x"`` → ``{"a.b": "1", "c": "x"}``."""
    pairs = [part.split("=", 1) for part in text.split(";") if part.strip()]
    return {key.strip(): value.strip() for key, value in pairs}


def unmet_requirements(text: str, config: dict[str, str] | None) -> list[str]:
    """Notes for the ``requires`` conditions (``key=value`` or ``key!=value``, ``;``-separated) that the
    flattened run ``config`` does not meet, e.g. ``texture_source differs (ours builtin, paper dtd)``."""
    notes = []
    for part in filter(str.strip, text.split(";")):
        negated = "!=" in part
        key, value = (s.strip() for s in part.split("!=" if negated else "=", 1))
        ours = (config or {}).get(key)
        if negated == _same_value(ours, value):
            paper = f"not {value}" if negated else value
            notes.append(f"{key.rsplit('.', 1)[-1]} differs (ours {ours}, paper {paper})")
    return notes


def _same_value(ours: str | None, wanted: str) -> bool:
    if ours is None:
        return False
    try:
        return float(ours) == float(wanted)
    except ValueError:
        return ours == wanted


def _one(values: pd.Series) -> str:
    unique = sorted({str(v) for v in values.dropna()})
    return unique[0] if len(unique) == 1 else "/".join(unique) if unique else "?"


def _same_experiment(paper: pd.Series, runs: pd.DataFrame, config: dict[str, str] | None) -> bool:
    if _one(runs["protocol"]) != paper["protocol"]:
        return False
    if paper["variant"] and _one(runs["variant"]) != paper["variant"]:
        return False
    if paper["protocol"] == "few_shot":
        if not pd.isna(paper["shots"]) and not _same_value(_one(runs["shots"]), str(paper["shots"])):
            return False
        if paper["source"] and _one(runs["source"]) != paper["source"]:
            return False
    wanted = conditions(paper["config"])
    if wanted and config is None:
        return False
    return all(_same_value((config or {}).get(key), value) for key, value in wanted.items())


def _differences(paper: pd.Series, runs: pd.DataFrame) -> list[str]:
    notes = []
    ours_backbone = _one(runs["backbone"])
    wanted = paper["backbone"]
    same = ours_backbone == wanted or ("." not in wanted and ours_backbone.split(".")[0] == wanted)
    if not same:
        notes.append(f"backbone differs (ours {ours_backbone}, paper {wanted})")
    if not pd.isna(paper["eval_resolution"]):
        resolution = _one(runs["eval_resolution"])
        if not _same_value(resolution, str(paper["eval_resolution"])):
            notes.append(f"resolution differs (ours {resolution}, paper {int(paper['eval_resolution'])})")
    n_categories = runs["category"].nunique()
    if n_categories < int(paper["n_categories"]):
        notes.append(f"only {n_categories} of {int(paper['n_categories'])} categories ran")
    return notes


def compare(frame: pd.DataFrame, published: pd.DataFrame | None = None,
            configs: dict[str, dict[str, str]] | None = None) -> pd.DataFrame:
    """One row per (our setup, published row, metric) of the same experiment: ``ours`` (mean over
    categories of the per-category mean over seeds), ``paper``, ``delta`` = ours − paper (NaN unless
    comparable), ``runs`` and ``note``. ``configs`` maps setup hash → flattened run config (for the
    ``config`` conditions; rows with conditions never match without it)."""
    published = load() if published is None else published
    ok = frame[frame["status"] == "ok"].copy()
    if "label" not in ok:
        ok["label"] = ok["method"]
    ok["label"] = ok["label"].where(ok["label"].notna(), ok["method"]).astype(str)
    if "setup" not in ok:
        ok["setup"] = ok["label"]
    rows = []
    for _, paper in published.iterrows():
        candidates = ok[(ok["method"] == paper["method"]) & (ok["dataset"] == paper["dataset"])]
        for (label, setup), runs in candidates.groupby(["label", "setup"]):
            if not _same_experiment(paper, runs, None if configs is None else configs.get(setup)):
                continue
            notes = _differences(paper, runs) + unmet_requirements(
                paper["requires"], None if configs is None else configs.get(setup))
            seeds = runs.groupby("category")["seed"].nunique()
            n_seeds = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
            runs_text = f"{runs['category'].nunique()}/{int(paper['n_categories'])} cat. × {n_seeds} seed(s)"
            for metric in REFERENCE_METRICS:
                if pd.isna(paper[metric]) or metric not in runs or runs[metric].isna().all():
                    continue
                ours = runs.groupby("category")[metric].mean().mean()
                metric_notes = list(notes)
                if metric == "pixel_aupro" and paper["aupro_definition"] != "mvtec":
                    definition = paper["aupro_definition"]
                    metric_notes.append(f"paper AU-PRO is not the MVTec definition: {definition}")
                rows.append({
                    "label": label, "method": paper["method"], "variant": paper["variant"],
                    "dataset": paper["dataset"], "metric": metric, "ours": ours, "paper": paper[metric],
                    "delta": float("nan") if metric_notes else ours - paper[metric], "runs": runs_text,
                    "paper_variant": paper["paper_variant"], "citation": paper["citation"],
                    "note": "; ".join(metric_notes + ([paper["note"]] if paper["note"] else [])),
                })
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
