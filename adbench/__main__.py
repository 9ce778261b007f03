"""``python -m adbench method=patchcore data=toy``: the Hydra app that runs benchmark jobs.

A user mistake (:class:`~adbench.data.DataError`: a missing dataset, an unknown category, an empty
train set, a bad option value) ends the command with its message alone and exit status 1;
``HYDRA_FULL_ERROR=1`` shows the traceback. A failed run also makes the exit status 1. In a multirun
each job carries on, a job that fails before running anything leaves its error for
:class:`adbench.sweep.SweepSummary`, which ends the sweep with the ok / failed summary and exit
status 1 when anything failed.
"""

from __future__ import annotations

import logging
import math
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from adbench.data import DataError
from adbench.runner import run
from adbench.sweep import write_job_error

log = logging.getLogger("adbench")


def metric_text(value: object) -> str:
    """A metric for log lines: 3 decimals (``0.972``), ``-`` where it is undefined."""
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


@hydra.main(version_base="1.3", config_path="pkg://adbench.conf", config_name="config")
def app(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        records = run(cfg)
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not (multirun or isinstance(err, DataError)):
            raise
        if isinstance(err, DataError):
            log.error("%s", err)
        else:
            log.exception("job failed")
        if not multirun:
            sys.exit(1)
        write_job_error(hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task),
                        f"{type(err).__name__}: {err}")
        return
    for record in records:
        if record.get("status") == "ok":
            log.info("%s  image AUROC %s  pixel AUROC %s", record["run_id"],
                     metric_text(record.get("image_auroc")), metric_text(record.get("pixel_auroc")))
    failed = [r for r in records if r.get("status") != "ok"]
    if failed and not multirun:
        errors = "; ".join(r["error"] for r in failed)
        log.error("%d of %d jobs failed: %s", len(failed), len(records), errors)
        sys.exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
