"""Comparison tables (golden markdown / LaTeX that must parse), deltas against published numbers,
setup labels, ROC points, and ``make report`` on real toy runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from adbench import results
from adbench.metrics import auroc
from adbench.reporting import published, viz
from adbench.reporting.leaderboard import (
    TABLES,
    accuracy_tables,
    draw_pivot,
    draw_tables,
    efficiency,
    pivot,
    render,
    write_all,
)
from adbench.reporting.report import cd_figures, make_report

GOLDEN = Path(__file__).parent / "golden"
MVTEC = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
         "tile", "toothbrush", "transistor", "wood", "zipper")


def _config(backbone: str = "wide_resnet50_2.tv_in1k", crop: int = 224, coreset: float = 0.1,
            method: str = "patchcore", **extra: object) -> dict:
    return {"method": {"name": method, "variant": "coreset-10%", "image": {"resize": crop, "crop": crop},
                       "params": {"coreset_percentage": coreset}},
            "backbone": {"name": backbone}, "data": {"name": "x", "category": "c", "root": "/r"},
            "protocol": "one_class", "seed": 0, "results_dir": "/results", **extra}


def _record(method: str, dataset: str, category: str, config: dict, seed: int = 0, **values: float) -> dict:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    chash = f"{method}-{dataset}-{category}-{seed}-{digest}"
    config = {**config, "seed": seed, "data": {**config["data"], "name": dataset, "category": category}}
    return {"run_id": f"{dataset}/{category}/{method}/{chash}", "status": "ok", "method": method,
            "variant": config["method"]["variant"], "dataset": dataset, "category": category,
            "protocol": config["protocol"], "backbone": config["backbone"]["name"],
            "eval_resolution": config["method"]["image"]["crop"], "seed": seed, "config_hash": chash,
            "device": "cpu", "finished_at": "2026-01-01T00:00:00+00:00", "config": config, **values}


def _frame(tmp_path: Path, records: list[dict]) -> pd.DataFrame:
    """Write the records (as ``write_record`` does, one leaderboard rebuild at the end); the leaderboard."""
    for r in records:
        path = results.record_path(tmp_path, r["dataset"], r["category"], r["method"], r["config_hash"])
        results.atomic_write_text(path, json.dumps(r))
    return results.rebuild_leaderboard(tmp_path)


def golden_records() -> list[dict]:
    """A small fixed results set: two methods on a toy-like dataset (one with two seeds in a cell,
    one missing a category), both on two draws of a dev set (one missing a category on the second),
    and PatchCore on all 15 MVTec AD categories with two backbones."""
    small = _config("efficientnet_lite0", 64)
    padim = _config("efficientnet_lite0", 64, method="padim") | {"method": {
        "name": "padim", "variant": "default", "image": {"resize": 64, "crop": 64}, "params": {}}}
    cost = {"fit_s": 2.0, "infer_ms_per_img": 10.0, "peak_rss_mb": 900.0, "peak_gpu_mb": 0.0,
            "n_params": 65536}
    records = [
        _record("patchcore", "toy", "brick", small, 0, image_auroc=0.90, pixel_auroc=0.80, **cost),
        _record("patchcore", "toy", "brick", small, 1, image_auroc=0.80, pixel_auroc=0.84, **cost),
        _record("patchcore", "toy", "metal_nut", small, 0, image_auroc=0.70, pixel_auroc=0.75, **cost),
        _record("padim", "toy", "brick", padim, 0, image_auroc=0.85, pixel_auroc=0.9,
                **(cost | {"fit_s": 1.0, "n_params": 1_500_000})),
        _record("padim", "toy", "metal_nut", padim, 0, image_auroc=0.95, pixel_auroc=0.9,
                **(cost | {"fit_s": 1.5, "n_params": 1_500_000})),
        _record("padim", "toy", "tile", padim, 0, image_auroc=0.60, pixel_auroc=0.7,
                **(cost | {"fit_s": 1.5, "n_params": 1_500_000})),
    ]
    for draw, offset in (("toy_dev", 0.0), ("toy_dev_draw2", 0.04)):  # two draws of one dev set
        for category, value in (("brick", 0.9), ("grass", 0.8)):
            records.append(_record("patchcore", draw, category, small, image_auroc=value + offset,
                                   pixel_auroc=0.9, **cost))
            if draw == "toy_dev" or category == "brick":  # padim lacks grass on draw 2: no mean, no worst
                records.append(_record("padim", draw, category, padim, image_auroc=value + 2 * offset,
                                       pixel_auroc=0.85, **(cost | {"n_params": 1_500_000})))
    paper = _config()
    for i, category in enumerate(MVTEC):
        records.append(_record("patchcore", "mvtec", category, paper, image_auroc=0.98 + 0.001 * (i % 3),
                               pixel_auroc=0.975, pixel_aupro=0.93, **cost))
        records.append(_record("patchcore", "mvtec", category, small, image_auroc=0.95, pixel_auroc=0.96,
                               **cost))
    return records


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def parse_markdown(text: str) -> dict[str, list[list[str]]]:
    """Title → rows (header first) of every ``### title`` + pipe table; asserts the table shape."""
    tables: dict[str, list[list[str]]] = {}
    for block in text.split("### ")[1:]:
        title, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if ln.startswith("|")]
        header, separator, *rows = lines
        assert all(re.fullmatch(r"-{3,}:?", c) for c in _cells(separator)), separator
        widths = {len(_cells(ln)) for ln in lines}
        assert widths == {len(_cells(header))}, f"ragged table {title}"
        tables[title] = [_cells(header)] + [_cells(r) for r in rows]
    return tables


def parse_latex(text: str) -> list[list[list[str]]]:
    """Every booktabs tabular as rows of cells; asserts the structure and balanced braces."""
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("%"))
    assert body.count("{") == body.count("}") and "_" not in re.sub(r"\\_", "", body)
    tables = []
    for match in re.finditer(r"\\begin\{tabular\}\{([lrc]+)\}\n(.*?)\\end\{tabular\}", body, re.S):
        spec, inner = match.groups()
        lines = inner.strip().splitlines()
        assert lines[0] == r"\toprule" and lines[2] == r"\midrule" and lines[-1] == r"\bottomrule"
        rows = [lines[1], *lines[3:-1]]
        parsed = []
        for row in rows:
            assert row.endswith(r" \\")
            cells = [c.strip() for c in re.split(r"(?<!\\)&", row[: -len(r" \\")])]
            assert len(cells) == len(spec), row
            parsed.append(cells)
        tables.append(parsed)
    assert body.count(r"\begin{tabular}") == len(tables) == body.count(r"\end{tabular}")
    return tables


def _number(cell: str) -> float:
    return float(re.sub(r"\*\*|\\textbf\{|\}", "", cell).replace("--", "nan").replace("–", "nan"))


def _check_bold_is_best(rows: list[list[str]], bold: str, columns: list[int], lower: set[int]) -> None:
    """In ``columns``, every marked cell holds its column's best value and every best value is marked."""
    for j in columns:
        values = [_number(r[j]) for r in rows[1:]]
        finite = [v for v in values if not np.isnan(v)]
        if len(finite) < 2:
            continue
        best = min(finite) if j in lower else max(finite)
        for r, v in zip(rows[1:], values):
            assert (bold in r[j]) == (v == best), (rows[0][j], r[j])


@pytest.fixture()
def frame(tmp_path) -> pd.DataFrame:
    return _frame(tmp_path, golden_records())


@pytest.mark.parametrize("fmt, suffix", [("markdown", "md"), ("latex", "tex")])
@pytest.mark.parametrize("table", TABLES)
def test_tables_match_golden_files_and_parse(frame, tmp_path, table, fmt, suffix):
    configs = results.setup_configs(tmp_path)
    text = render(frame, [table], ["image_auroc", "pixel_auroc"], fmt, configs)
    golden = GOLDEN / f"{table}.{suffix}"
    if os.environ.get("ADBENCH_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    if fmt == "markdown":
        parsed = list(parse_markdown(text).values())
        bold = "**"
    else:
        parsed = parse_latex(text)
        bold = r"\textbf"
    assert parsed and all(len(t) >= 2 for t in parsed)
    for rows in parsed:
        header = [h.replace("\\", "") for h in rows[0]]
        if table == "accuracy":
            _check_bold_is_best(rows, bold, list(range(1, len(header))), set())
        elif table == "efficiency":
            costs = ("fit s", "infer ms/img", "peak RSS MB", "peak GPU MB", "params M")
            checked = [j for j, h in enumerate(header) if h in costs or h.endswith("%")]
            _check_bold_is_best(rows, bold, checked, {j for j in checked if header[j] in costs})


def test_accuracy_semantics(frame):
    table = pivot(frame, "image_auroc")
    toy = table["toy"]
    patchcore_small = [i for i in toy.index if i.startswith("patchcore") and "efficientnet" in i]
    (label,) = patchcore_small
    assert toy.loc[label, "brick"] == pytest.approx(0.85)  # seeds 0 and 1 averaged
    assert np.isnan(toy.loc[label, "tile"]) and np.isnan(toy.loc[label, "mean"])  # no tile run: no mean
    assert toy.loc["padim", "mean"] == pytest.approx((0.85 + 0.95 + 0.60) / 3)
    (toy_table,) = [t for t in accuracy_tables(frame, "image_auroc") if t.title.endswith("toy")]
    assert "cells average 1–2 seeds" in toy_table.notes
    costs = efficiency(frame).loc["toy"]
    assert costs.loc[("padim", "cpu"), "fit_s"] == pytest.approx(4.0 / 3)
    assert np.isnan(costs.loc[("padim", "cpu"), "peak_gpu_mb"])  # CPU runs have no GPU memory


def test_setup_labels_name_what_differs():
    base = _config("efficientnet_lite0", 64)
    records = [_record("patchcore", "toy", "brick", base), _record("patchcore", "toy", "brick", base, seed=1),
               _record("patchcore", "toy", "brick", _config("efficientnet_lite0", 64, coreset=0.25)),
               _record("padim", "toy", "brick", _config("efficientnet_lite0", 64, method="padim"))]
    labels = results.setup_labels(records)
    hashes = [results.setup_hash(r) for r in records]
    assert hashes[0] == hashes[1]  # seeds of one setup
    assert labels[hashes[0]] == "patchcore[coreset_percentage=0.1]"
    assert labels[hashes[2]] == "patchcore[coreset_percentage=0.25]" and labels[hashes[3]] == "padim"
    other_data = _record("patchcore", "mvtec", "bottle", base | {"results_dir": "/elsewhere"})
    assert results.setup_hash(other_data) == hashes[0]  # dataset and paths are not part of a setup


def _mvtec_runs(tmp_path: Path, n: int = 15, **config_args: object) -> tuple[pd.DataFrame, dict]:
    config = _config(**config_args)
    frame = _frame(tmp_path, [_record("patchcore", "mvtec", c, config, image_auroc=0.97, pixel_auroc=0.98)
                              for c in MVTEC[:n]])
    return frame, results.setup_configs(tmp_path)


def test_delta_only_for_the_same_experiment(tmp_path):
    frame, configs = _mvtec_runs(tmp_path / "a")
    compared = published.compare(frame, configs=configs).set_index("metric")
    assert set(compared["paper_variant"]) == {"coreset-10%"}  # not the 25 % or 1 % rows
    assert compared.loc["image_auroc", "paper"] == pytest.approx(0.990)
    assert compared.loc["image_auroc", "delta"] == pytest.approx(0.97 - 0.99)
    assert compared.loc["pixel_auroc", "delta"] == pytest.approx(0.98 - 0.981)
    assert compared.loc["image_auroc", "runs"] == "15/15 cat. × 1 seed(s)"

    frame, configs = _mvtec_runs(tmp_path / "b", coreset=0.25)
    assert set(published.compare(frame, configs=configs)["paper_variant"]) == {"coreset-25%"}

    for args, note in (({"n": 14}, "only 14 of 15 categories ran"),
                       ({"crop": 256}, "resolution differs (ours 256, paper 224)"),
                       ({"backbone": "efficientnet_lite0"}, "backbone differs")):
        frame, configs = _mvtec_runs(tmp_path / str(args), **args)
        compared = published.compare(frame, configs=configs)
        assert len(compared) == 2 and compared["delta"].isna().all()  # image and pixel AUROC
        assert compared["note"].str.contains(note, regex=False).all()
    assert published.compare(frame, configs=None).empty  # config conditions unverifiable: no match


def test_few_shot_rows_match_shots_and_source(tmp_path):
    config = _config(method="resad", crop=224, protocol="few_shot", source="visa", shots=2)
    config["method"]["variant"] = "paper"
    records = [_record("resad", "mvtec", c, config, image_auroc=0.85, pixel_auroc=0.94) | {
        "protocol": "few_shot", "source": "visa", "shots": 2} for c in MVTEC]
    frame = _frame(tmp_path, records)
    compared = published.compare(frame, configs=results.setup_configs(tmp_path)).set_index("metric")
    assert compared.loc["image_auroc", "paper_variant"] == "2-shot (trained on visa)"
    # the paper names no weights tag: any wide_resnet50_2 weights match, with the paper's note
    assert compared.loc["image_auroc", "delta"] == pytest.approx(0.85 - 0.856)
    assert "weights tag not stated" in compared.loc["image_auroc", "note"]
    assert frame["label"].iloc[0] == "resad 2-shot from visa"


def test_reference_is_derived_from_the_shared_table():
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference" / "published.csv"
    ours = published.load()
    assert set(ours["method"]) == {"patchcore", "padim", "cflow", "draem", "cutpaste", "glass", "resad"}
    values = ours[list(published.REFERENCE_METRICS)].to_numpy().ravel()
    assert np.all((values[~np.isnan(values)] > 0.5) & (values[~np.isnan(values)] <= 1.0))  # fractions
    if not shared.is_file():
        pytest.skip("../shared/reference/published.csv is not beside this checkout")
    source = pd.read_csv(shared)
    assert len(source) == len(ours)
    for metric in published.REFERENCE_METRICS:  # every published value, in the same order
        np.testing.assert_allclose(source[metric].to_numpy() / 100, ours[metric].to_numpy())
    assert list(source["variant"]) == list(ours["paper_variant"])


def test_roc_points_give_the_metrics_auroc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)  # many ties
    fpr, tpr = viz.roc_points(scores, labels)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(scores, labels), abs=1e-12)


def test_report_on_toy_runs(toy_root, tmp_path):
    from adbench.config import compose
    from adbench.runner import run

    threads = torch.get_num_threads()
    try:
        for method in ("patchcore", "padim"):
            run(compose([f"method={method}", f"data.root={toy_root}", "data.category='brick,grass'",
                         f"results_dir={tmp_path}", "method.image.resize=32", "method.image.crop=32",
                         "progress=false", "threads=1", "cache.enabled=false"]))
    finally:
        torch.set_num_threads(threads)
    failed = {"run_id": "toy/brick/patchcore/broken", "status": "failed", "method": "patchcore",
              "dataset": "toy", "category": "brick", "config_hash": "broken", "seed": 0,
              "error": "ValueError: bad value"}
    results.write_record(tmp_path, failed)
    report = make_report(tmp_path)
    names = sorted(p.name for p in report.figures)
    assert names == ["cd_toy_image_auroc.png", "cd_toy_pixel_aupro.png", "cd_toy_pixel_auroc.png",
                     "extremes_toy_brick.png", "extremes_toy_grass.png", "mean_metrics_toy.png",
                     "roc_toy.png"]
    readme = report.readme.read_text()
    for link in re.findall(r"\]\(([^)]+)\)", readme):
        assert (report.readme.parent / link).exists(), link
    for path in report.figures:
        with Image.open(path) as img:
            assert img.format == "PNG" and min(img.size) > 300
            assert np.asarray(img.convert("L")).std() > 10  # not blank
    assert "| patchcore |" in readme and "| padim |" in readme and not report.skipped
    assert "| toy/brick/patchcore/broken | ValueError: bad value |" in readme
    tables = parse_markdown((tmp_path / "report" / "tables" / "accuracy.md").read_text())
    assert {t.split(" — ")[0] for t in tables} == {"image_auroc (%)", "pixel_auroc (%)", "pixel_aupro (%)"}
    parse_latex((tmp_path / "report" / "tables" / "efficiency.tex").read_text())


def test_cd_diagrams_rank_methods_over_common_categories(frame, tmp_path):
    paths, lines = cd_figures(frame, tmp_path / "report")
    expected = [f"cd_{d}_{m}.png" for d in ("mvtec", "toy", "toy_dev")
                for m in ("image_auroc", "pixel_auroc")]
    assert sorted(p.name for p in paths) == sorted(expected)  # toy_dev_draw2: one common category only
    toy = next(line for line in lines if line.startswith("- **toy, image_auroc**"))
    # brick: padim 0.85 ties patchcore's seed mean (0.9 + 0.8) / 2; metal_nut: padim 0.95 > 0.70; tile: padim
    # only, left out. Ranks 1.25 and 1.75: chi2_F = 12 * 2 / (2 * 3) * (1.25² + 1.75² - 2 * 3² / 4) = 0.5
    assert "2 methods × 2 categories (brick, metal_nut); Friedman χ²_F = 0.50 (p = 0.48)" in toy
    assert "F_F = 0.33 (p = 0.667); CD = 1.39" in toy
    mvtec = next(line for line in lines if line.startswith("- **mvtec, image_auroc**"))
    assert "χ²_F = 15.00" in mvtec and "F_F undefined" in mvtec  # every category ranks them alike
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "PNG" and np.asarray(img.convert("L")).std() > 10


def test_write_all_writes_every_format(frame, tmp_path):
    paths = write_all(frame, tmp_path / "tables", ["image_auroc"])
    assert sorted(p.name for p in paths) == sorted(f"{t}.{s}" for t in TABLES for s in ("md", "tex", "csv"))
    accuracy = (tmp_path / "tables" / "accuracy.csv").read_text()
    assert accuracy.startswith("# image_auroc\nmethod,") and "0.85" in accuracy  # raw fractions


def test_saved_maps_keep_large_scores(tmp_path):
    """PatchCore's squared distances exceed float16's 65504: the maps kept for reports must not overflow."""
    from adbench.runner import save_predictions

    maps = np.linspace(0, 2e5, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    out = {"image_scores": maps.reshape(4, -1).max(axis=1), "labels": np.array([0, 0, 1, 1]),
           "paths": ["a", "b", "c", "d"], "defect_types": ["good", "good", "x", "x"], "anomaly_maps": maps,
           "masks": np.zeros((4, 8, 8), dtype=bool)}
    save_predictions(tmp_path / "r.npz", out, keep=1)
    with np.load(tmp_path / "r.npz") as data:
        np.testing.assert_array_equal(data["maps"], maps[data["map_index"]])


def test_draw_table_averages_seeds_within_a_draw_then_draws(tmp_path):
    small = _config("efficientnet_lite0", 64)
    values = {("toy_dev", 0): 0.90, ("toy_dev", 1): 0.70, ("toy_dev", 2): 0.80, ("toy_dev_draw3", 0): 1.00}
    def drawn(dataset: str) -> dict:  # the runner's config of one draw: data.draw differs
        return small | {"data": {**small["data"], "draw": 3 if dataset.endswith("3") else 1}}

    records = [_record("patchcore", draw, "grass", drawn(draw), seed, image_auroc=v)
               for (draw, seed), v in values.items()]
    records += [_record("patchcore", draw, "brick", drawn(draw), 0, image_auroc=0.95)
                for draw in ("toy_dev", "toy_dev_draw3")]
    records.append(_record("patchcore", "toy", "grass", small, 0, image_auroc=0.5))  # one draw: no table
    draws = draw_pivot(_frame(tmp_path, records), "image_auroc")
    assert list(draws) == ["toy_dev"]  # toy has one draw: no draw table
    assert list(draws["toy_dev"].index) == ["patchcore"]  # one setup, whatever its draw
    table = draws["toy_dev"].iloc[0]
    assert table["grass"] == pytest.approx((0.80 + 1.00) / 2)  # (seed mean of draw 1 = 0.8) and draw 3
    assert table["worst"] == pytest.approx(0.90) and table["mean"] == pytest.approx((0.90 + 0.95) / 2)


def test_draw_table_never_marks_a_cell_missing_draws_best(tmp_path):
    draws = ("toy_dev", "toy_dev_draw2")
    records = [_record("patchcore", draw, "grass", _config("efficientnet_lite0", crop), image_auroc=value)
               for draw in draws for crop, value in ((64, 0.90), (96, 0.80))]
    padim = _config("efficientnet_lite0", 64, method="padim")
    records.append(_record("padim", "toy_dev", "grass", padim, image_auroc=0.99))
    (table,) = draw_tables(_frame(tmp_path, records), "image_auroc")
    grass = table.header.index("grass")
    assert sorted(row[grass] for row in table.rows) == ["80.0", "90.0", "99.0*"]  # padim: one draw of two
    best = {table.rows[i][grass] for i, j in table.bold if j == grass}
    assert best == {"90.0"}
