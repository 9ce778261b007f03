"""CutPaste: augmentation geometry and colour jitter, the GDE against scikit-learn, patch-score
upsampling and GradCAM against literal computations, and tiny end-to-end runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from adbench.methods.cutpaste import CutPaste, spread_patch_scores, warn_if_collapsed
from conftest import TINY_METHODS
from sklearn.covariance import LedoitWolf

from adbench.components.gaussian import fit_gaussian, ledoit_wolf, mahalanobis
from adbench.components.synthesis.cutpaste import (
    color_jitter,
    cutpaste,
    hsv_to_rgb,
    jitter_with,
    paste,
    rgb_to_hsv,
    sample_cutpaste_params,
    sample_scar_params,
    scar,
)
from adbench.config import compose
from adbench.runner import run


@pytest.mark.parametrize("side", [64, 256])
def test_cutpaste_boxes_obey_area_aspect_and_image(side):
    params = sample_cutpaste_params(4000, side, side, generator=torch.Generator().manual_seed(0))
    w, h = params.width.double(), params.height.double()
    # w = round(sqrt(A·r)), h = round(sqrt(A/r)): the unrounded sides lie within ±0.5
    assert ((w + 0.5) * (h + 0.5) >= 0.02 * side * side).all()
    assert ((w - 0.5) * (h - 0.5) <= 0.15 * side * side).all()
    assert ((w + 0.5) / (h - 0.5) >= 0.3).all() and ((w - 0.5) / (h + 0.5) <= 1 / 0.3).all()
    area = w * h / side**2
    assert area.min() < 0.03 and area.max() > 0.14  # the whole range is used
    aspect = torch.log(w / h)
    assert aspect.min() < math.log(0.4) and aspect.max() > math.log(2.5)
    for x, y in ((params.src_x, params.src_y), (params.dst_x, params.dst_y)):
        assert (x >= 0).all() and (y >= 0).all()
        assert (x + params.width <= side).all() and (y + params.height <= side).all()


def test_cutpaste_pastes_the_source_rectangle_at_its_destination():
    images = torch.rand(6, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    params = sample_cutpaste_params(6, 48, 48, generator=torch.Generator().manual_seed(2))
    out = paste(images, params, jitter=0.0)
    for i in range(6):
        w, h = int(params.width[i]), int(params.height[i])
        sx, sy, dx, dy = (int(v[i]) for v in (params.src_x, params.src_y, params.dst_x, params.dst_y))
        expected = images[i].clone()
        expected[:, dy : dy + h, dx : dx + w] = images[i, :, sy : sy + h, sx : sx + w]
        assert torch.equal(out.images[i], expected)
        mask = torch.zeros(48, 48, dtype=torch.bool)
        mask[dy : dy + h, dx : dx + w] = True
        assert torch.equal(out.masks[i], mask)


@pytest.mark.parametrize("side", [64, 256])
def test_scar_sizes_rotation_and_placement(side):
    scale = side / 256
    params = sample_scar_params(3000, side, side, generator=torch.Generator().manual_seed(3))
    assert (params.width >= round(2 * scale)).all() and (params.width <= round(16 * scale)).all()
    assert (params.height >= round(10 * scale)).all() and (params.height <= round(25 * scale)).all()
    assert (params.angle.abs() <= 45).all() and params.angle.abs().max() > 40
    assert (params.dst_x >= 0).all() and (params.dst_x + params.box_w <= side).all()
    assert (params.dst_y >= 0).all() and (params.dst_y + params.box_h <= side).all()
    images = torch.rand(32, 3, side, side, generator=torch.Generator().manual_seed(4))
    out = scar(images, torch.Generator().manual_seed(5))
    p = out.params
    for i in range(32):  # the pasted pixels lie inside the destination box, and cover about w·h
        rows, cols = out.masks[i].nonzero(as_tuple=True)
        assert rows.min() >= p.dst_y[i] and rows.max() < p.dst_y[i] + p.box_h[i]
        assert cols.min() >= p.dst_x[i] and cols.max() < p.dst_x[i] + p.box_w[i]
        area = float(p.width[i] * p.height[i])
        assert abs(len(rows) - area) <= 0.25 * area + 4
    assert torch.equal(out.images[~out.masks.unsqueeze(1).expand(-1, 3, -1, -1)],
                       images[~out.masks.unsqueeze(1).expand(-1, 3, -1, -1)])


def test_color_jitter_matches_torchvision_with_the_same_draws():
    images = torch.rand(4, 3, 20, 24, generator=torch.Generator().manual_seed(6))
    factors = torch.tensor([[1.08, 0.93, 1.02], [0.91, 1.1, 0.95], [1.0, 0.9, 1.1], [1.05, 1.05, 0.9]])
    hue = torch.tensor([0.07, -0.1, 0.02, -0.04])
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]])
    out = jitter_with(images, factors, hue, order)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation]
    for i in range(4):
        ref = images[i]
        for op in order[i].tolist():
            ref = TF.adjust_hue(ref, float(hue[i])) if op == 3 else ops[op](ref, float(factors[i, op]))
        assert torch.allclose(out[i], ref, atol=1e-5)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(images)), images, atol=1e-5)


def test_augmentations_are_deterministic_per_seed():
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    a = cutpaste(images, torch.Generator().manual_seed(8)).images
    b = cutpaste(images, torch.Generator().manual_seed(8)).images
    c = cutpaste(images, torch.Generator().manual_seed(9)).images
    assert torch.equal(a, b) and not torch.equal(a, c)
    j = color_jitter(images, 0.1, torch.Generator().manual_seed(8))
    assert torch.equal(j, color_jitter(images, 0.1, torch.Generator().manual_seed(8)))


@pytest.mark.parametrize(("n", "d"), [(12, 30), (60, 8)])
def test_gde_equals_sklearn_ledoit_wolf(n, d):
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(n, d, generator=gen) * torch.rand(d, generator=gen) + torch.randn(d, generator=gen)
    ref = LedoitWolf().fit(x.double().numpy())
    cov, shrinkage = ledoit_wolf(x)
    np.testing.assert_allclose(cov.numpy(), ref.covariance_, rtol=1e-10, atol=1e-12)
    assert float(shrinkage) == pytest.approx(ref.shrinkage_, rel=1e-10)
    mean, precision = fit_gaussian(x)
    np.testing.assert_allclose(mean.numpy(), ref.location_, rtol=1e-5, atol=1e-6)
    queries = torch.randn(7, d, generator=gen)
    expected = np.sqrt(ref.mahalanobis(queries.double().numpy()))  # sklearn returns squared distances
    np.testing.assert_allclose(mahalanobis(queries, mean, precision).numpy(), expected, rtol=1e-4)
    batched, _ = ledoit_wolf(torch.stack([x, 2 * x + 1]))  # one Gaussian per leading index
    np.testing.assert_allclose(batched[1].numpy(), LedoitWolf().fit((2 * x + 1).double().numpy()).covariance_,
                               rtol=1e-10, atol=1e-12)


def test_gde_of_degenerate_samples_uses_the_pseudo_inverse():
    # a collapsed encoder gives identical embeddings: zero covariance, Cholesky fails
    x = torch.stack([torch.ones(5, 4), torch.randn(5, 4, generator=torch.Generator().manual_seed(3))])
    mean, precision = fit_gaussian(x)
    assert torch.equal(precision[0], torch.zeros(4, 4))  # pinv(0) = 0, as sklearn's pinvh
    ref = LedoitWolf().fit(x[1].double().numpy())
    np.testing.assert_allclose(precision[1].numpy(), ref.precision_, rtol=1e-4, atol=1e-5)
    assert torch.equal(mean[0], torch.ones(4))


def test_patch_scores_spread_over_their_receptive_fields():
    side, patch, stride = 12, 4, 2
    n = (side - patch) // stride + 1
    scores = torch.rand(2, n * n, generator=torch.Generator().manual_seed(11))
    maps = spread_patch_scores(scores, side, patch, stride)
    for b in range(2):
        for y in range(side):
            for x in range(side):
                covering = [scores[b, i * n + j] for i in range(n) for j in range(n)
                            if i * stride <= y < i * stride + patch and j * stride <= x < j * stride + patch]
                assert maps[b, y, x] == pytest.approx(float(torch.stack(covering).mean()), abs=1e-6)


def test_gradcam_equals_the_gradient_weighted_feature_map():
    method = CutPaste(steps=1, head_layers=(16,), encoder="test_resnet")
    method.eval()
    gen = torch.Generator().manual_seed(12)
    train = torch.rand(6, 3, 64, 64, generator=gen)
    with torch.no_grad():
        method.gde_mean, method.gde_precision = fit_gaussian(method._image_embeddings(train))
    images = torch.rand(3, 3, 64, 64, generator=gen)
    from adbench.data import Batch
    from adbench.method import Context

    batch = Batch(images, torch.zeros(3, 64, 64, dtype=torch.bool), torch.zeros(3), ["x"] * 3, ["good"] * 3)
    ctx = Context(category=None, transform=None, device=torch.device("cpu"), seed=0)  # type: ignore[arg-type]
    pred = method.predict(batch, ctx)
    with torch.no_grad():
        feats = method.net.encoder.forward_features(method._normalise(images))
    pooled = feats.mean(dim=(2, 3)).requires_grad_(True)  # the ResNet head = global average pooling
    score = mahalanobis(torch.nn.functional.normalize(pooled, dim=1), method.gde_mean, method.gde_precision)
    (grad,) = torch.autograd.grad(score.sum(), pooled)
    hw = feats.shape[2] * feats.shape[3]
    cam = torch.relu((grad[:, :, None, None] / hw * feats).sum(dim=1))
    expected = torch.nn.functional.interpolate(cam[:, None], size=(64, 64), mode="bilinear")[:, 0]
    assert torch.allclose(pred.image_scores, score.detach(), rtol=1e-5)
    assert torch.allclose(pred.anomaly_maps, expected, rtol=1e-4, atol=1e-7)


TINY = ["data=toy", "data.category=brick", "progress=false", "method.image.resize=32", "method.image.crop=32",
        *TINY_METHODS["cutpaste"]]


def test_cutpaste_image_level_end_to_end(toy_root, tmp_path):
    overrides = ["method=cutpaste", f"data.root={toy_root}", f"results_dir={tmp_path}", *TINY]
    (record,) = run(compose(overrides))
    assert record["status"] == "ok", record.get("traceback")
    assert record["eval_resolution"] == 32 and 0.0 <= record["image_auroc"] <= 1.0
    assert 0.0 <= record["pixel_auroc"] <= 1.0 and record["timing_train_s"] > 0
    assert record["info_encoder"] == "test_resnet (random)"
    (again,) = run(compose([*overrides, "force=true"]))  # same seed → same numbers
    assert again["image_auroc"] == record["image_auroc"] and again["pixel_auroc"] == record["pixel_auroc"]


@pytest.mark.parametrize(("variant", "views"), [("binary", 2), ("scar", 2), ("union", 2), ("3way", 3)])
def test_variants_make_their_views(variant, views):
    method = CutPaste(variant=variant, encoder="test_resnet", image_jitter=0.0)
    clean = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    images, labels = method.augment(clean, torch.Generator().manual_seed(14))
    assert images.shape == (6 * views, 3, 32, 32)
    assert torch.equal(labels, torch.arange(views).repeat_interleave(6))
    assert torch.equal(images[:6], clean)
    changed = (images[6:12] != clean).flatten(1).any(dim=1)
    assert changed.sum() >= 5  # (a pasted patch can, rarely, land on identical pixels)
    assert method.net.out.out_features == views


def test_cutpaste_patch_level_end_to_end(toy_root, tmp_path):
    overrides = ["method=cutpaste_patch", f"data.root={toy_root}", f"results_dir={tmp_path}", *TINY,
                 "method.params.patch_size=16", "method.params.patch_stride=8",
                 "method.params.blur_sigma=1.0"]
    (record,) = run(compose(overrides))
    assert record["status"] == "ok", record.get("traceback")
    assert record["variant"] == "3way-patch64" and 0.0 <= record["pixel_auroc"] <= 1.0
    bad = run(compose([*overrides, "method.params.patch_size=15", "force=true"]))[0]  # (32 − 15) % 8 ≠ 0
    assert bad["status"] == "failed" and "patch_stride" in bad["error"]


def test_bad_variant_is_rejected():
    with pytest.raises(ValueError, match="variant"):
        CutPaste(variant="4way")


def test_shared_patch_gde_scores_every_patch_with_one_gaussian(toy_root):
    from adbench.datasets import build

    from adbench.data import ImageTransform, iterate_batches
    from adbench.method import Context

    category = build("toy", toy_root).load("brick")
    transform = ImageTransform(32, 32, None, None, square=True)
    ctx = Context(category=category, transform=transform, device=torch.device("cpu"), seed=0, progress=False)
    method = CutPaste(encoder="test_resnet", steps=1, batch_clean=4, head_layers=(16,), patch_size=16,
                      patch_stride=8, patch_gde="shared", blur_sigma=0.0)
    method.fit(ctx)
    method.eval()
    assert method.gde_mean.shape == (96,) and method.gde_precision.shape == (96, 96)
    batch = next(iter(iterate_batches(category.test, transform, 4)))
    pred = method.predict(batch, ctx)
    with torch.no_grad():
        embeds = method._patch_embeddings(batch.images)  # [4, 9, 96]
    scores = mahalanobis(embeds.reshape(-1, 96), method.gde_mean, method.gde_precision).view(4, 9)
    assert torch.allclose(pred.image_scores, scores.max(dim=1).values, rtol=1e-5)
    assert torch.allclose(pred.anomaly_maps, spread_patch_scores(scores, 32, 16, 8), rtol=1e-5)
    with pytest.raises(ValueError, match="patch_gde"):
        CutPaste(encoder="test_resnet", patch_gde="pooled")


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_frozen_encoder_batchnorm_keeps_its_statistics_but_trains_its_weights(toy_root, freeze_bn):
    from adbench.datasets import build

    from adbench.data import ImageTransform
    from adbench.method import Context

    category = build("toy", toy_root).load("brick")
    ctx = Context(category=category, transform=ImageTransform(32, 32, None, None, square=True),
                  device=torch.device("cpu"), seed=0, progress=False)
    method = CutPaste(encoder="test_resnet", steps=2, batch_clean=4, head_layers=(16,),
                      freeze_encoder_bn=freeze_bn)
    bn = next(m for m in method.net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats, weight = bn.running_mean.clone(), bn.weight.detach().clone()
    method.fit(ctx)
    assert torch.equal(bn.running_mean, stats) == freeze_bn  # statistics: pretrained ones kept iff frozen
    assert not torch.equal(bn.weight.detach(), weight)  # the affine weights train either way
    conv = next(m for m in method.net.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # the fast layout, kept by training


def test_a_collapsed_encoder_is_reported(caplog):
    gen = torch.Generator().manual_seed(4)
    healthy = torch.nn.functional.normalize(torch.randn(10, 6, generator=gen), dim=1)
    collapsed = torch.nn.functional.normalize(torch.ones(10, 6), dim=1) + 1e-7 * healthy
    with caplog.at_level("WARNING"):
        assert not warn_if_collapsed(healthy, "brick")
        assert not caplog.records
        assert warn_if_collapsed(collapsed, "grass")
    assert "collapsed on grass" in caplog.text and "method.params.lr" in caplog.text
    assert warn_if_collapsed(torch.stack([healthy, collapsed]), "per-position") is False  # one good position
