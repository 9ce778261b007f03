"""Hydra configs shipped with adbench (config path ``pkg://adbench.conf``).

The launcher presets ``hydra/launcher/{basic,joblib,submitit_local,submitit_slurm}.yaml`` share their
names with the launcher plugins' structured configs, so Hydra validates them against those schemas
(wanted) and prints a deprecation notice about it (noise, silenced here: every process that loads
these configs, sweep workers included, imports this package first).
"""

import warnings

warnings.filterwarnings(
    "ignore", message=r"(?s).*is validated against ConfigStore schema", category=UserWarning
)
