"""Which device a run uses, and waiting for the work queued on it (for honest timings)."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` = ``cuda`` when a GPU is visible, else ``cpu``; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device | None) -> None:
    """Wait until the kernels queued on ``device`` have finished (CUDA runs them asynchronously, so a
    timer stopped without this measures only the launches). No-op on the CPU; ``None`` (a context
    built without a device) waits for every visible GPU."""
    if device is None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
