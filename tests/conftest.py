"""Test-wide settings: offline (any non-loopback connection fails), few threads, no hub."""

from __future__ import annotations

import os
import socket

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """Fail loudly if any code path tries to reach the network while tests run."""
    original = socket.socket.connect

    def guarded(self, address):  # type: ignore[no-untyped-def]
        host = address[0] if isinstance(address, tuple) else address
        local = ("127.0.0.1", "::1", "localhost")
        if isinstance(host, str) and host not in local and not host.startswith("/"):
            raise RuntimeError(f"test tried to reach the network: {address}")
        return original(self, address)

    socket.socket.connect = guarded
    yield
    socket.socket.connect = original
