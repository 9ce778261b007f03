"""What identifies a job and its numbers: the config hash, the checkout's commit, the seeding.

The config hash covers everything that can change a job's numbers (method and backbone config,
transform, dataset and category, protocol, seed) and nothing that cannot (results_dir, progress
bars, cache settings, device).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from adbench import protocols
from adbench.data import stable_hash

HASH_KEYS = ("method", "backbone", "data", "protocol", "seed")
VOLATILE_DATA_KEYS = ("root", "download", "category", "verify")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def git_sha(repo_dir: Path | None = None) -> str:
    """The checkout's commit (12 hex digits) with ``+dirty`` when tracked files differ from it.

    A run started from an edited tree is then not mistaken for that commit's numbers. Returns
    ``"unknown"`` outside a git checkout (an installed wheel) or without git.
    """
    cwd = repo_dir or Path(__file__).parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if changes else sha


def config_hash(cfg: DictConfig, category: str) -> str:
    """Hash of everything that can change a job's numbers."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keyed = {k: resolved.get(k) for k in HASH_KEYS}
    data = dict(keyed["data"] or {})
    for key in VOLATILE_DATA_KEYS:
        data.pop(key, None)
    keyed["data"] = data
    keyed["category"] = category
    if protocols.protocol_name(cfg) == "few_shot":
        keyed["few_shot"] = protocols.FewShotSettings.from_config(cfg).hash_fields()
    return stable_hash(keyed)

