"""``python -m adbench method=patchcore data=toy``: the Hydra app that runs benchmark jobs."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from adbench.runner import run

log = logging.getLogger("adbench")


@hydra.main(version_base="1.3", config_path="pkg://adbench.conf", config_name="config")
def app(cfg: DictConfig) -> float | None:
    records = run(cfg)
    failed = [r for r in records if r.get("status") != "ok"]
    for record in records:
        log.info("%s  image AUROC %s  pixel AUROC %s", record["run_id"], record.get("image_auroc"),
                 record.get("pixel_auroc"))
    if failed and HydraConfig.get().mode != RunMode.MULTIRUN:
        errors = "; ".join(r["error"] for r in failed)
        log.error("%d of %d jobs failed: %s", len(failed), len(records), errors)
        sys.exit(1)
    return None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
