"""Run records, the leaderboard CSV and comparison tables.

Every finished job writes one JSON record, ``runs/<dataset>/<category>/<method>/<config-hash>.json``
under ``results_dir``. ``leaderboard.csv`` is rebuilt from all records under a file lock after
each write, so jobs finishing at once (joblib, SLURM arrays) never lose each other's rows, and
an interrupted job leaves no partial record or broken CSV (every write is temp file + rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

METRICS = (
    "image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro", "mad",
)
LEADERBOARD_COLUMNS = (
    "run_id", "status", "method", "variant", "dataset", "category", "protocol", "backbone", "weights",
    "image_size", "eval_resolution", "seed", *METRICS, "fit_s", "infer_ms_per_img", "peak_rss_mb",
    "peak_gpu_mb", "n_params", "extract_s", "cache_hits", "cache_misses", "config_hash", "git_sha",
    "finished_at", "error",
)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing), released on exit."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record_path(results_dir: str | os.PathLike, dataset: str, category: str, method: str, config_hash: str) -> Path:
    return Path(results_dir) / "runs" / dataset / category / method / f"{config_hash}.json"


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """A run record, or None when the file is missing or unreadable (never a partial record)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def iter_records(results_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    for path in sorted((Path(results_dir) / "runs").glob("*/*/*/*.json")):
        record = read_record(path)
        if record is not None:
            yield record


def write_record(results_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write one run record atomically and rebuild the leaderboard; returns the record's path."""
    path = record_path(results_dir, record["dataset"], record["category"], record["method"], record["config_hash"])
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=_json_default))
    rebuild_leaderboard(results_dir)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def rebuild_leaderboard(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Regenerate ``leaderboard.csv`` (one row per run record) under a lock; returns it."""
    results_dir = Path(results_dir)
    with file_lock(results_dir / ".leaderboard.lock"):
        rows = [{col: record.get(col) for col in LEADERBOARD_COLUMNS} for record in iter_records(results_dir)]
        frame = pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))
        atomic_write_text(results_dir / "leaderboard.csv", frame.to_csv(index=False))
    return frame


def load_leaderboard(path: str | os.PathLike) -> pd.DataFrame:
    """Read a leaderboard CSV; FileNotFoundError naming the path and how to make one."""
    path = Path(path)
    if path.is_dir():
        path = path / "leaderboard.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no leaderboard at {path}; run `make bench` or `python -m adbench` first")
    return pd.read_csv(path)
