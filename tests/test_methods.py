"""The method contract (:class:`adbench.method.Method`), checked for every registered method on its
CPU preset at a tiny size (``TINY_METHODS`` in conftest.py): output shapes, finite values, same seed →
same scores, a ``state_dict`` round trip through :mod:`adbench.predict`, and a fit that never opens a
test image."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_METHODS

from adbench import predict
from adbench.config import compose
from adbench.data import Category, DataError
from adbench.method import Method
from adbench.registry import list_methods
from adbench.runner import (
    attach_few_shot,
    build_context,
    build_method,
    load_categories,
    model_bytes,
    predict_category,
    seed_everything,
)

pytestmark = pytest.mark.usefixtures("one_thread")
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]


@contextlib.contextmanager
def hidden_test_files(category: Category) -> Iterator[None]:
    """Rename every test image and mask of ``category`` for the block, so opening one raises."""
    files = sorted({p for s in category.test for p in (s.image_path, s.mask_path) if p})
    for path in files:
        os.rename(path, f"{path}.hidden")
    try:
        yield
    finally:
        for path in files:
            os.rename(f"{path}.hidden", path)


def fit_and_predict(cfg: Any, category: Category) -> tuple[Method, Any, dict[str, Any]]:
    """Seed, build and fit as the runner does, with the test files hidden; then predict the test set."""
    seed_everything(int(cfg.seed))
    device = torch.device(cfg.device)
    method = build_method(cfg).to(device)
    ctx = build_context(cfg, method, category, device)
    if cfg.protocol == "few_shot":
        attach_few_shot(cfg, method, category, ctx, {})
    with hidden_test_files(category):
        method.train()
        method.fit(ctx)
        method.eval()
    return method, ctx, predict_category(method, ctx)


@pytest.fixture(scope="module")
def toy_copy(tmp_path_factory: pytest.TempPathFactory, small_toy: list[str]) -> list[str]:
    """``small_toy`` copied, so hiding its test files never disturbs another test module."""
    root = Path(next(o for o in small_toy if o.startswith("data.root=")).split("=", 1)[1])
    copy = shutil.copytree(root, tmp_path_factory.mktemp("contract") / "toy")
    return [o if not o.startswith("data.root=") else f"data.root={copy}" for o in small_toy]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list_methods())
def test_method_contract(name, device, tiny_methods, toy_copy, tmp_path):
    assert name in tiny_methods, f"add {name!r} to TINY_METHODS in tests/conftest.py"
    cfg = compose([*toy_copy, "data.category=cat", f"results_dir={tmp_path}", f"device={device}",
                   *tiny_methods[name]])
    (category,) = load_categories(cfg)
    method, ctx, out = fit_and_predict(cfg, category)
    n, side = len(category.test), int(cfg.method.image.crop)
    assert out["image_scores"].shape == (n,) and out["anomaly_maps"].shape == (n, side, side)
    assert np.isfinite(out["image_scores"]).all() and np.isfinite(out["anomaly_maps"]).all()

    _, _, again = fit_and_predict(cfg, category)
    np.testing.assert_array_equal(again["image_scores"], out["image_scores"])
    np.testing.assert_array_equal(again["anomaly_maps"], out["anomaly_maps"])

    train_out = predict_category(method, ctx, category.train)
    bundle = model_bytes(method, cfg, train_out, None, {"run_id": name, "weights": None})
    (tmp_path / "m.model.pt").write_bytes(bundle)
    saved = predict.load_model(tmp_path / "m.model.pt", device=device)
    reloaded = predict.predict_images(saved, [Path(s.image_path) for s in category.test], int(cfg.batch_size))
    np.testing.assert_array_equal(reloaded["image_scores"], out["image_scores"])
    np.testing.assert_array_equal(reloaded["anomaly_maps"], out["anomaly_maps"])


def test_every_tiny_entry_names_a_registered_method():
    assert sorted(TINY_METHODS) == list_methods()


def test_a_config_cannot_contradict_the_declared_normalisation():
    assert compose(["method=draem"]).method.normalize == "none"  # kept in YAML: part of the config hash
    with pytest.raises(DataError, match=r"method\.normalize='backbone' contradicts Draem\.normalize='none'"):
        build_method(compose(["method=draem_cpu", "method.normalize=backbone"]))
