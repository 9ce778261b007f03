"""PaDiM against literal reference code: covariance, channel draw, embedding, maps; toy run."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from adbench.methods.padim import (
    GaussianAccumulator,
    PaDiM,
    concat_embedding,
    default_n_features,
    mahalanobis,
)
from conftest import TINY_RUN
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from adbench.config import compose
from adbench.runner import build_context, build_method, load_categories, run

TINY = ["method=padim", "data=toy", *TINY_RUN]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_incremental_covariance_equals_numpy():
    rng = np.random.default_rng(0)
    positions, dim = 5, 7
    data = rng.normal(loc=3.0, scale=2.0, size=(positions, 23, dim)) @ rng.normal(size=(dim, dim))
    acc = GaussianAccumulator(positions, dim, torch.device("cpu"))
    acc.chunk = 2  # exercise the position chunks
    for lo, hi in [(0, 1), (1, 9), (9, 10), (10, 23)]:  # uneven batches, one of a single sample
        acc.update(torch.from_numpy(data[:, lo:hi]).float())
    for p in range(positions):
        np.testing.assert_allclose(acc.mean[p].numpy(), data[p].mean(axis=0), rtol=1e-6, atol=1e-5)
        expected_cov = np.cov(data[p], rowvar=False)
        np.testing.assert_allclose(acc.covariance()[p].numpy(), expected_cov, rtol=1e-5, atol=1e-4)
    expected = [np.linalg.inv(np.cov(data[p], rowvar=False) + 0.01 * np.eye(dim)) for p in range(positions)]
    np.testing.assert_allclose(acc.precision(0.01).numpy(), np.stack(expected), rtol=1e-4, atol=1e-5)


def test_mahalanobis_equals_scipy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 6))
    mean = rng.normal(size=(3, 6))
    a = rng.normal(size=(3, 6, 6))
    precision = np.linalg.inv(a @ a.transpose(0, 2, 1) + np.eye(6))
    ours = mahalanobis(torch.from_numpy(x), torch.from_numpy(mean), torch.from_numpy(precision)).numpy()
    for p in range(3):
        for n in range(4):
            assert ours[p, n] == pytest.approx(scipy_mahalanobis(x[p, n], mean[p], precision[p]), rel=1e-10)


def test_channel_count_defaults_and_reference_draw():
    assert default_n_features("resnet18.tv_in1k", 448) == 100
    assert default_n_features("wide_resnet50_2.tv_in1k", 1792) == 550
    assert default_n_features("efficientnet_lite0", 176) == 100
    assert default_n_features("tiny", 64) == 64
    assert default_n_features("efficientnet_b5", 1000) == round(1000 * 550 / 1792)
    random.seed(1024)
    reference = random.sample(range(448), 100)  # xiahaifeng main.py
    assert PaDiM().draw_channels("resnet18", 448, 1024).tolist() == reference
    with pytest.raises(ValueError):
        PaDiM(n_features=500).draw_channels("resnet18", 448, 0)


def reference_embedding_concat(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """xiahaifeng main.py ``embedding_concat``, written out literally."""
    b, c1, h1, w1 = x.size()
    _, c2, h2, w2 = y.size()
    s = int(h1 / h2)
    x = F.unfold(x, kernel_size=s, dilation=1, stride=s).view(b, c1, -1, h2, w2)
    z = torch.zeros(b, c1 + c2, x.size(2), h2, w2)
    for i in range(x.size(2)):
        z[:, :, i, :, :] = torch.cat((x[:, :, i, :, :], y), 1)
    z = z.view(b, -1, h2 * w2)
    return F.fold(z, kernel_size=s, output_size=(h1, w1), stride=s)


def test_embedding_equals_reference_concat():
    g = torch.Generator().manual_seed(0)
    l1, l2, l3 = (torch.randn(2, c, s, s, generator=g) for c, s in [(3, 8), (4, 4), (5, 2)])
    expected = reference_embedding_concat(reference_embedding_concat(l1, l2), l3)
    torch.testing.assert_close(concat_embedding([l1, l2, l3]), expected)


def test_predict_equals_literal_reference(toy_root):
    """Fit through the runner's context, then compare maps with numpy/scipy code written from the
    reference implementation (np.cov per position, scipy mahalanobis, bilinear, gaussian_filter)."""
    cfg = compose([*TINY, f"data.root={toy_root}", "data.category=coins"])
    (category,) = load_categories(cfg)
    method = build_method(cfg)
    ctx = build_context(cfg, method, category, torch.device("cpu"))
    method.fit(ctx)
    idx = method.channel_index
    train = torch.cat([concat_embedding(list(ctx.features(b).values())) for b in ctx.train_batches()])[:, idx]
    n, d, h, w = train.shape
    flat = train.reshape(n, d, h * w).double().numpy()
    means = flat.mean(axis=0)
    precisions = [np.linalg.inv(np.cov(flat[:, :, p], rowvar=False) + 0.01 * np.eye(d)) for p in range(h * w)]

    from adbench.data import iterate_batches

    batch = next(iterate_batches(category.test[10:14], ctx.transform, batch_size=4))
    pred = method.predict(batch, ctx)
    test = concat_embedding(list(ctx.features(batch).values()))[:, idx].reshape(4, d, h * w).double().numpy()
    for i in range(4):
        dist = np.array([scipy_mahalanobis(test[i, :, p], means[:, p], precisions[p]) for p in range(h * w)])
        grid = torch.from_numpy(dist.reshape(1, 1, h, w))
        up = F.interpolate(grid, size=32, mode="bilinear", align_corners=False)
        expected = gaussian_filter(up[0, 0].numpy(), sigma=4)
        np.testing.assert_allclose(pred.anomaly_maps[i].numpy(), expected, rtol=2e-3, atol=2e-3)
        assert pred.image_scores[i].item() == pytest.approx(expected.max(), rel=2e-3)
    # a test image's score does not depend on the other images it is predicted with
    alone = method.predict(iterate_batches(category.test[12:13], ctx.transform, 1).__next__(), ctx)
    assert alone.image_scores[0].item() == pytest.approx(pred.image_scores[2].item(), rel=1e-5)


def test_toy_run_and_saved_model(toy_root, tmp_path):
    overrides = [*TINY, f"data.root={toy_root}", "data.category=brick", f"results_dir={tmp_path}",
                 "save_model=true", "method.image.resize=64", "method.image.crop=64"]
    (record,) = run(compose(overrides))
    assert record["status"] == "ok", record.get("traceback")
    assert record["image_auroc"] > 0.8 and record["pixel_auroc"] > 0.8
    assert record["n_params"] == 100 + 256 * 100 + 256 * 100 * 100  # channel index + mean + precision
    saved = torch.load(next(tmp_path.rglob("*.model.pt")), weights_only=False)["state_dict"]
    assert saved["precision"].shape == (256, 100, 100) and saved["channel_index"].shape == (100,)


def test_official_preset_resizes_with_lanczos():
    """The reference loader (datasets/mvtec.py) resizes with Image.ANTIALIAS, i.e. Lanczos."""
    from pathlib import Path

    import yaml

    preset = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/method/padim.yaml").read_text())
    assert preset["image"]["interpolation"] == "lanczos"
