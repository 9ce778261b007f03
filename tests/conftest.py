"""Test-wide settings: offline (any non-loopback connection fails), few threads, no hub."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default toy set (all categories), generated once per test session; tests only read it."""
    from adbench.datasets import build

    root = tmp_path_factory.mktemp("data") / "toy"
    build("toy", root).categories()
    return root


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): the
    CPU is shared, and oversubscribed threads make the small-tensor tests ~5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL_TOY = {"image_size": 64, "n_train": 10, "n_test_good": 4, "n_test_defect": 6}


@pytest.fixture(scope="session")
def small_toy(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides selecting a small toy tree (10 train, 4 good + 6 defective test images, 64 px)."""
    from adbench.datasets.toy import generate_toy

    root = generate_toy(tmp_path_factory.mktemp("data") / "toy", **SMALL_TOY)
    return ["data=toy", f"data.root={root}", *(f"+data.{k}={v}" for k, v in SMALL_TOY.items())]
