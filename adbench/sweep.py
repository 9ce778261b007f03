"""Sweeps: the Hydra callback that closes a multirun with a summary of what it left on disk.

A sweep is a Hydra multirun (``python -m adbench -m ...`` or ``+experiment=<preset>``) through any
launcher in ``conf/hydra/launcher/``. Every job writes its own record; :class:`SweepSummary`
(enabled by the experiment presets, or ``+hydra.callbacks.summary._target_=adbench.sweep.SweepSummary``)
rebuilds the leaderboard once at the end and logs how many runs finished ok or failed during the
sweep, with the errors of the failed ones, so a long sweep's problems are not buried in job logs.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from adbench.results import iter_records, rebuild_leaderboard

log = logging.getLogger("adbench")


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
    """Logs, at the end of a multirun, the runs it finished (ok / failed, with errors) and where the
    leaderboard is. Killed jobs leave no record; re-running the sweep runs them (finished ones are
    skipped)."""

    def __init__(self) -> None:
        self.started = dt.datetime.now(dt.timezone.utc)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = dt.datetime.now(dt.timezone.utc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        results_dir = Path(str(config.results_dir))
        if not (results_dir / "runs").is_dir():
            log.warning("sweep finished without any run record under %s", results_dir)
            return
        rebuild_leaderboard(results_dir)
        summary = summarise(results_dir, self.started)
        log.info("sweep: %d runs finished ok, %d failed; %s holds %d rows (skipped runs were already there)",
                 summary["ok"], summary["failed"], results_dir / "leaderboard.csv", summary["rows"])
        for run_id, error in summary["errors"]:
            log.error("failed: %s: %s", run_id, error)
