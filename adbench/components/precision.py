"""Numeric precision of trained convolutional networks (used by DRAEM).

``fp32`` (every method's default, as the official code) runs everything in float32. ``bf16`` runs
the network forward passes under :func:`torch.autocast` with bfloat16 (convolutions and matrix
products in bf16, reductions and normalisations in float32); methods compute their losses and
scores in float32 from the outputs. On CPUs with AMX or AVX512-BF16 units (recent Xeons) a DRAEM
CPU-preset step is ~2x faster; CPUs without them emulate bf16 and get slower, not faster. (CutPaste's
EfficientNet-Lite0, mostly depthwise convolutions, gained nothing from bf16 here, so it stays fp32.)
The precision is part of the method config, so every result records it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise naming the config key."""
    if precision not in PRECISIONS:
        raise ValueError(f"method.params.precision={precision!r}; choose one of {list(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast context for ``device`` (no-op for ``fp32``); outputs may be bfloat16 under ``bf16``."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
