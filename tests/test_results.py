from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest

from adbench import results
from adbench.reporting.leaderboard import accuracy_tables, pivot


def _record(i: int, method: str = "patchcore", value: float = 0.9) -> dict:
    return {"run_id": f"toy/c{i}/{method}/h{i}", "status": "ok", "method": method, "variant": "default",
            "dataset": "toy", "category": f"c{i}", "config_hash": f"h{i}", "image_auroc": value,
            "seed": 0}


def test_atomic_write_keeps_old_content_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    results.atomic_write_text(target, "old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", boom)
    with pytest.raises(OSError):
        results.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def _writer(args):
    root, i = args
    results.write_record(root, _record(i))


def test_concurrent_writers_lose_no_rows(tmp_path):
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_writer, [(str(tmp_path), i) for i in range(12)])
    frame = pd.read_csv(tmp_path / "leaderboard.csv")
    assert sorted(frame["category"]) == sorted(f"c{i}" for i in range(12))


def test_unreadable_record_is_ignored(tmp_path):
    results.write_record(tmp_path, _record(0))
    broken = Path(tmp_path, "runs", "toy", "c1", "patchcore", "h1.json")
    broken.parent.mkdir(parents=True)
    broken.write_text('{"run_id": ')
    assert len(results.rebuild_leaderboard(tmp_path)) == 1


def test_pivot_means_and_best_marked(tmp_path):
    cells = [("a", "c0", 0.9), ("a", "c1", 0.7), ("b", "c0", 0.8), ("b", "c1", 0.95)]
    for i, (method, category, value) in enumerate(cells):
        results.write_record(tmp_path, _record(i, method, value) | {"category": category})
    frame = results.load_leaderboard(tmp_path)
    table = pivot(frame, "image_auroc")
    assert table.loc["a", ("toy", "mean")] == pytest.approx(0.8)
    assert table.loc["b", ("toy", "mean")] == pytest.approx(0.875)
    (rendered,) = accuracy_tables(frame, "image_auroc")
    text = rendered.markdown()
    assert "**87.5**" in text and "**90.0**" in text and "| a |" in text


def test_missing_leaderboard_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        results.load_leaderboard(tmp_path)


def test_written_files_follow_the_umask_not_mkstemp(tmp_path):
    """Records on a shared results folder stay readable by the group (mkstemp alone gives 0600)."""
    import os
    import stat

    results.atomic_write_text(tmp_path / "r.json", "{}")
    mode = stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode)
    assert mode == 0o666 & ~results._UMASK
