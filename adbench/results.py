"""Run records, the leaderboard CSV and comparison tables.

Every finished job writes one JSON record, ``runs/<dataset>/<category>/<method>/<config-hash>.json``
under ``results_dir``. ``leaderboard.csv`` is rebuilt from all records under a file lock after
each write, so jobs finishing at once (joblib, SLURM arrays) never lose each other's rows, and
an interrupted job leaves no partial record or broken CSV (every write is temp file + rename).

Besides the record's own fields, each leaderboard row gets ``setup`` (a hash of the run's config
without seed, category and dataset: runs with equal setups are seeds of one experiment) and
``label``, the name tables show: the method, plus what tells its setups apart when one method was
run with several (``patchcore[coreset_percentage=0.25]``, ``resad 4-shot from mvtec``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adbench.data import DataError
from adbench.metrics import IMAGE_KEYS, PIXEL_KEYS

METRICS = (*IMAGE_KEYS, *PIXEL_KEYS, "mad", "pixel_aupimo")  # mad: mean of the seven (metrics.evaluate)
LEADERBOARD_COLUMNS = (
    "run_id", "status", "method", "variant", "label", "dataset", "category", "protocol", "source", "shots",
    "backbone", "weights", "image_size", "eval_resolution", "seed", *METRICS, "fit_s", "infer_ms_per_img",
    "peak_rss_mb", "peak_gpu_mb", "n_params", "device", "extract_s", "cache_hits", "cache_misses",
    "config_hash", "setup", "git_sha", "finished_at", "error",
    *(f"{metric}_{end}" for metric in METRICS for end in ("lo", "hi")), "ci_n_boot", "ci_n_boot_pixel",
)
# Config keys that never make two runs different experiments: where results go, how the job runs,
# the seeds (seeds of one setup are averaged in tables), sweep presets' helper values (``sweep``) and
# the bootstrap settings (``ci``: intervals never split a setup).
# Everything else is part of the setup.
RUN_ONLY_KEYS = (
    "seed", "shot_seed", "results_dir", "force", "save_model", "calibration_folds", "device", "batch_size",
    "num_workers", "threads", "progress", "cache", "hydra", "source_root", "sweep", "ci",
)
RUN_ONLY_DATA_KEYS = ("name", "root", "download", "category", "verify", "draw")  # draw: in the dataset name


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from a shared group
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


def record_path(
    results_dir: str | os.PathLike, dataset: str, category: str, method: str, config_hash: str
) -> Path:
    return Path(results_dir) / "runs" / dataset / category / method / f"{config_hash}.json"


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """A run record, or None when the file is missing or unreadable (never a partial record). An
    unreadable one (truncated, not a JSON object) logs a warning naming it: its run counts as
    unfinished, so the next run of its job redoes it, and the leaderboard has no row for it."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        record, reason = None, f"{type(err).__name__}: {err}"
    else:
        reason = "not a JSON object"
    if isinstance(record, dict):
        return record
    logging.getLogger("adbench").warning(
        "run record %s is unreadable (%s): its run counts as unfinished and has no leaderboard row; "
        "re-run its job to redo it", path, reason)
    return None


def iter_records(results_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    for path in sorted((Path(results_dir) / "runs").glob("*/*/*/*.json")):
        record = read_record(path)
        if record is not None:
            yield record


def write_record(results_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write one run record atomically and rebuild the leaderboard; returns the record's path."""
    path = record_path(
        results_dir, record["dataset"], record["category"], record["method"], record["config_hash"]
    )
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
        records = list(iter_records(results_dir))
        # setups that only failed never make the finished ones' labels longer
        labels = setup_labels(records) | setup_labels([r for r in records if r.get("status") == "ok"])
        rows = []
        for record in records:
            row = {col: record.get(col) for col in LEADERBOARD_COLUMNS}
            row["setup"] = setup_hash(record)
            row["label"] = labels[row["setup"]]
            rows.append(row)
        frame = pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))
        atomic_write_text(results_dir / "leaderboard.csv", frame.to_csv(index=False))
    return frame


def setup_config(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a record's config that defines its experiment: no seed, category, dataset name,
    paths or run settings (:data:`RUN_ONLY_KEYS`). Records without a config fall back to their
    method, variant, protocol and backbone fields."""
    config = record.get("config")
    if not isinstance(config, dict):
        return {k: record.get(k) for k in ("method", "variant", "protocol", "backbone", "source", "shots")}
    kept = {k: v for k, v in config.items() if k not in RUN_ONLY_KEYS}
    if isinstance(kept.get("data"), dict):
        kept["data"] = {k: v for k, v in kept["data"].items() if k not in RUN_ONLY_DATA_KEYS}
    if kept.get("protocol", "one_class") != "few_shot":
        for key in ("source", "source_categories", "shots"):
            kept.pop(key, None)
    return kept


def setup_hash(record: dict[str, Any]) -> str:
    """12 hex digits identifying a record's setup (:func:`setup_config`)."""
    text = json.dumps(setup_config(record), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def setup_configs(results_dir: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Setup hash → the setup's config flattened to dotted keys (values as strings), from the records."""
    configs: dict[str, dict[str, str]] = {}
    for record in iter_records(results_dir):
        key = setup_hash(record)
        if key not in configs:
            configs[key] = flatten_config(record.get("config") or {})
    return configs


def flatten_config(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts → ``{"method.params.k": "1", ...}``; lists as JSON, other leaves as ``str``."""
    if isinstance(obj, dict):
        flat: dict[str, str] = {}
        for key, value in obj.items():
            flat.update(flatten_config(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: json.dumps(obj, default=str) if isinstance(obj, (list, tuple)) else str(obj)}


def setup_labels(records: list[dict[str, Any]]) -> dict[str, str]:
    """Setup hash → table label. A method run with one setup is labelled by its name; a method run
    with several by ``name[variant]`` when the variants tell them apart, else by the config values
    that differ between its setups (``patchcore[crop=64]``, the key's last part, or the whole dotted
    key where last parts clash). Few-shot setups end in `` K-shot from <source>``."""
    setups: dict[str, dict[str, Any]] = {}
    for record in records:
        setups.setdefault(setup_hash(record), record)
    by_method: dict[str, list[str]] = {}
    for key, record in setups.items():
        by_method.setdefault(str(record.get("method")), []).append(key)
    labels: dict[str, str] = {}
    for method, keys in by_method.items():
        flat = {k: flatten_config(setup_config(setups[k])) for k in keys}
        for drop in ("protocol", "source", "shots", "source_categories"):
            for values in flat.values():
                values.pop(drop, None)
        variants = {k: str(setups[k].get("variant")) for k in keys}
        if len(keys) == 1:
            distinct: dict[str, list[str]] = {}
        elif len(set(variants.values())) == len(keys):
            distinct = {k: [variants[k]] for k in keys}
        else:
            names = sorted({n for values in flat.values() for n in values})
            differing = [n for n in names if len({values.get(n) for values in flat.values()}) > 1]
            short = {n: _short_key(n) for n in differing}
            if len(set(short.values())) < len(short):
                short = {n: n for n in differing}
            distinct = {k: [f"{short[n]}={flat[k].get(n, '-')}" for n in differing] for k in keys}
        for key in keys:
            text = f"{method}[{', '.join(distinct[key])}]" if distinct.get(key) else method
            labels[key] = text + _few_shot_suffix(setups[key])
    return labels


def _short_key(dotted: str) -> str:
    """``method.params.k`` → ``k``; ``backbone.name`` → ``backbone``."""
    parts = dotted.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def _few_shot_suffix(record: dict[str, Any]) -> str:
    config = record.get("config") or {}
    if record.get("protocol", config.get("protocol")) != "few_shot":
        return ""
    shots, source = record.get("shots", config.get("shots")), record.get("source", config.get("source"))
    return f" {shots}-shot from {source}"


def current_leaderboard(results_dir: str | os.PathLike) -> pd.DataFrame:
    """The leaderboard rebuilt from the records (so a CSV from an older version never misleads), or,
    where ``results_dir`` is read-only, the CSV as it is."""
    try:
        return rebuild_leaderboard(results_dir)
    except PermissionError:
        return load_leaderboard(results_dir)


def load_leaderboard(path: str | os.PathLike) -> pd.DataFrame:
    """Read a leaderboard CSV; FileNotFoundError naming the path and how to make one, DataError when
    the file is not a leaderboard (unparsable, or without the run_id/status/method/dataset/category
    columns)."""
    path = Path(path)
    if path.is_dir():
        path = path / "leaderboard.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no leaderboard at {path}; run `make bench` or `python -m adbench` first")
    fix = "an adbench run writes one (runs/ beside it holds the records it is rebuilt from)"
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not a leaderboard CSV ({type(err).__name__}: {err}); {fix}") from err
    missing = [c for c in ("run_id", "status", "method", "dataset", "category") if c not in frame.columns]
    if missing:
        raise DataError(f"{path} is not an adbench leaderboard: no {', '.join(missing)} column; {fix}")
    return frame
