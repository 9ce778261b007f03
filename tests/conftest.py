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


END_TO_END_FIXTURES = {"toy_root", "small_toy"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on a generated toy set run fits end to end: they are ``slow`` (``make test-fast`` skips them)."""
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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


# Per registered method: the overrides that make one fit of its presets take a second or two on
# SMALL_TOY. test_methods.py runs every registered method's CPU preset (``<name>_cpu``, or the official
# config where there is none) with ``TINY_RUN`` + its entry, and fails for a method missing here; the
# per-method test files shrink their runs with the same entries.
TINY_RUN = ["method.image.resize=32", "method.image.crop=32", "progress=false", "batch_size=16",
            "cache.dir=null"]
TINY_METHODS = {
    "cflow": ["method.params.meta_epochs=1", "method.params.sub_epochs=1", "method.params.fiber_batch=32",
              "method.params.image_batch=8", "method.params.n_blocks=2",
              "method.image.resize=64", "method.image.crop=64"],  # layer4 needs more than 1 x 1
    "cutpaste": ["method.params.steps=3", "method.params.batch_clean=4", "method.params.head_layers=[32]",
                 "method.params.encoder=test_resnet",  # timm's 0.5 M-parameter test ResNet
                 "method.params.encoder_weights=random"],
    "draem": ["method.params.epochs=1", "method.params.recon_width=4", "method.params.disc_width=4"],
    "glass": ["method.params.epochs=1", "method.params.pretrain_dim=32", "method.params.target_dim=32",
              "method.params.dsc_hidden=16", "method.params.ascent_steps=5"],
    "padim": [],
    "patchcore": [],
    "resad": ["protocol=few_shot", "source=toy", "shots=2", "method.params.epochs=1",
              "method.params.batch_size=16", "method.params.pos_embed_dim=16",
              "method.params.coupling_blocks=2", "method.params.permute_soft=false",
              "method.params.flow_chunk=1024"],
}


def cpu_preset(name: str) -> str:
    """The method config the contract tests run: ``<name>_cpu`` where it exists, else ``<name>``."""
    cpu = Path(__file__).parents[1] / "conf" / "method" / f"{name}_cpu.yaml"
    return cpu.stem if cpu.exists() else name


@pytest.fixture(scope="session")
def tiny_methods() -> dict[str, list[str]]:
    """Per registered method name: overrides selecting a tiny fit of its CPU preset."""
    return {name: [f"method={cpu_preset(name)}", *TINY_RUN, *extra] for name, extra in TINY_METHODS.items()}
