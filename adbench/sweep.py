"""Sweeps: the Hydra callback that closes every multirun with a summary of what it left on disk.

A sweep is a Hydra multirun (``python -m adbench -m ...`` or ``+experiment=<preset>``) through any
launcher in ``conf/hydra/launcher/``. Every job writes its own records; a job that fails before
running any (an unknown category) writes its error to :data:`JOB_ERROR` in its Hydra job folder.
:class:`SweepSummary` (``conf/config.yaml`` enables it for every multirun) rebuilds the leaderboard
once at the end, logs how many runs finished ok or failed during the sweep, with the errors of the
failed runs and jobs, so a long sweep's problems are not buried in job logs, and makes the command's
exit status 1 when any failed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from adbench.results import atomic_write_text, iter_records, rebuild_leaderboard

log = logging.getLogger("adbench")
JOB_ERROR = "adbench_job_error.json"


def write_job_error(job_dir: str | Path, overrides: list[str], error: str) -> None:
    """Record, in ``<job_dir>/JOB_ERROR``, a multirun job that failed before running any category (an
    unknown category, a missing dataset): its overrides and error, for :class:`SweepSummary`."""
    failure = {"overrides": list(overrides), "error": error,
               "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(Path(job_dir) / JOB_ERROR, json.dumps(failure, indent=2))


def job_errors(sweep_dir: str | Path, since: dt.datetime) -> list[tuple[str, str]]:
    """``(overrides, error)`` of the jobs under ``sweep_dir`` that failed, at or after ``since``, before
    running anything (:func:`write_job_error`; failed runs have records, :func:`summarise` counts them)."""
    cutoff, errors = since.replace(microsecond=0), []
    for path in sorted(Path(sweep_dir).glob(f"**/{JOB_ERROR}")):
        failure = json.loads(path.read_text())
        if dt.datetime.fromisoformat(failure["finished_at"]) >= cutoff:
            errors.append((" ".join(failure["overrides"]), failure["error"]))
    return errors


def summarise(results_dir: str | Path, since: dt.datetime) -> dict[str, Any]:
    """Counts of the records under ``results_dir`` finished at or after ``since`` (UTC), and the
    ``(run_id, error)`` of each failed one: ``{"ok": int, "failed": int, "errors": [...], "rows": int}``."""
    ok, failed, rows = 0, 0, 0
    errors: list[tuple[str, str]] = []
    cutoff = since.replace(microsecond=0)
    for record in iter_records(results_dir):
        rows += 1
        finished = record.get("finished_at")
        if not finished or dt.datetime.fromisoformat(finished) < cutoff:
            continue
        if record.get("status") == "ok":
            ok += 1
        else:
            failed += 1
            errors.append((record["run_id"], str(record.get("error"))))
    return {"ok": ok, "failed": failed, "errors": errors, "rows": rows}


class SweepSummary(Callback):
    """Logs, at the end of a multirun, the runs it finished (ok / failed, with errors), the jobs that
    failed before running anything and where the leaderboard is; exits with status 1 when any run or
    job failed. Killed jobs leave no record; re-running the sweep runs them (finished ones are
    skipped)."""

    def __init__(self) -> None:
        self.started = dt.datetime.now(dt.timezone.utc)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = dt.datetime.now(dt.timezone.utc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        results_dir = Path(str(config.results_dir))
        jobs_failed = job_errors(str(config.hydra.sweep.dir), self.started)
        summary = {"ok": 0, "failed": 0, "errors": [], "rows": 0}
        if (results_dir / "runs").is_dir():
            rebuild_leaderboard(results_dir)
            summary = summarise(results_dir, self.started)
            log.info("sweep: %d runs finished ok, %d failed; %s holds %d rows (skipped runs were "
                     "already there)", summary["ok"], summary["failed"], results_dir / "leaderboard.csv",
                     summary["rows"])
        else:
            log.warning("sweep finished without any run record under %s", results_dir)
        for run_id, error in summary["errors"]:
            log.error("failed: %s: %s", run_id, error)
        for overrides, error in jobs_failed:
            log.error("failed job (%s): %s", overrides, error)
        if summary["failed"] or jobs_failed:
            log.error("sweep: %d runs and %d jobs failed; exit status 1", summary["failed"], len(jobs_failed))
            sys.exit(1)
