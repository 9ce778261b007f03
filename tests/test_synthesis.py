"""adbench.components.synthesis (Perlin masks, textures, augmentations, blending, foreground) and
adbench.components.losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from adbench.components.losses import focal_loss, hardest_mask
from adbench.components.synthesis.augment import (
    DRAEM_AUGMENTATIONS,
    GLASS_AUGMENTATIONS,
    apply_ops,
    autocontrast_cutoff,
    draw_ops,
    hsv_to_rgb,
    random_augment,
    rgb_to_hsv,
)
from adbench.components.synthesis.blend import blend, denormalize, glass_beta, normalize, uniform_beta
from adbench.components.synthesis.foreground import (
    estimate_foreground,
    foreground_from_folder,
    otsu_threshold,
)
from adbench.components.synthesis.perlin import (
    combine_masks,
    glass_las_masks,
    perlin_masks,
    perlin_noise,
    rotate,
)
from adbench.components.synthesis.textures import (
    BuiltinTextures,
    FolderTextures,
    build_texture_source,
    center_crop,
    draw_indices,
    resize_texture,
)
from adbench.data import DataError, ImageTransform


def rand_perlin_2d_np(shape, res, angles):
    """Literal transcription of the official rand_perlin_2d_np (DRAEM/GLASS perlin.py), angles given."""

    def fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    def lerp(x, y, w):
        return (y - x) * w + x

    delta = (res[0] / shape[0], res[1] / shape[1])
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = np.mgrid[0 : res[0] : delta[0], 0 : res[1] : delta[1]].transpose(1, 2, 0) % 1
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)

    def tile(s1, s2):
        return np.repeat(np.repeat(gradients[s1[0] : s1[1], s2[0] : s2[1]], d[0], axis=0), d[1], axis=1)

    def dot(grad, shift):
        g = grid[: shape[0], : shape[1]]
        shifted = np.stack((g[..., 0] + shift[0], g[..., 1] + shift[1]), axis=-1)
        return (shifted * grad[: shape[0], : shape[1]]).sum(-1)

    n00 = dot(tile([0, -1], [0, -1]), [0, 0])
    n10 = dot(tile([1, None], [0, -1]), [-1, 0])
    n01 = dot(tile([0, -1], [1, None]), [0, -1])
    n11 = dot(tile([1, None], [1, None]), [-1, -1])
    t = fade(grid[: shape[0], : shape[1]])
    return math.sqrt(2) * lerp(lerp(n00, n10, t[..., 0]), lerp(n01, n11, t[..., 0]), t[..., 1])


@pytest.mark.parametrize("res", [(1, 1), (2, 8), (32, 4), (16, 16)])
def test_perlin_noise_matches_the_official_function(res):
    rng = np.random.default_rng(sum(res))
    angles = 2 * math.pi * rng.random((res[0] + 1, res[1] + 1))
    expected = rand_perlin_2d_np((64, 96), res, angles)
    padded = np.zeros((1, 33, 33))
    padded[0, : res[0] + 1, : res[1] + 1] = angles
    ours = perlin_noise(torch.tensor([res[0]]), torch.tensor([res[1]]), (64, 96), torch.from_numpy(padded))
    np.testing.assert_allclose(ours[0].numpy(), expected, atol=2e-6)


def test_rotation_is_about_the_centre_and_zero_filled():
    maps = torch.zeros(1, 33, 33)
    maps[0, 16, 16:30] = 1.0  # a ray from the centre to the right
    turned = rotate(maps, torch.tensor([90.0]))[0]
    assert turned[16, 16] > 0.9 and turned[16, 25] < 0.1  # centre stays, the ray left the row
    assert turned[16:30, 16].sum() > 10 or turned[3:16, 16].sum() > 10  # ... and lies on the column
    full = rotate(torch.ones(1, 32, 48), torch.tensor([45.0]))[0]
    assert full[0, 0] == 0 and full[16, 24] == pytest.approx(1.0)


def test_perlin_masks_are_binary_seeded_and_empty_at_the_documented_rate():
    masks = perlin_masks(400, 64, torch.Generator().manual_seed(0))
    assert masks.dtype == torch.bool and masks.shape == (400, 64, 64)
    empty = (~masks.flatten(1).any(dim=1)).float().mean().item()
    assert 0.02 <= empty <= 0.10  # documented: 5-6 %
    assert 0.02 <= masks.float().mean().item() <= 0.08  # documented: about 4-5 % of the image
    again = perlin_masks(400, 64, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)
    assert not torch.equal(masks, perlin_masks(400, 64, torch.Generator().manual_seed(1)))


def test_perlin_scale_exponents_follow_the_official_range():
    """randint(0, 6) per axis: a 1x1 lattice is drawn, so is 32x32, and nothing beyond 32 cells."""
    gen = torch.Generator().manual_seed(0)
    exps = torch.randint(0, 6, (10000,), generator=gen)
    assert set(exps.tolist()) == {0, 1, 2, 3, 4, 5}


def test_glass_las_masks_are_non_empty_and_respect_the_foreground():
    gen = torch.Generator().manual_seed(3)
    fg = torch.zeros(16, 64, 64, dtype=torch.bool)
    fg[:, 16:48, 8:40] = True
    pixel, feature = glass_las_masks(fg, 8, gen)
    assert pixel.shape == (16, 64, 64) and feature.shape == (16, 8, 8)
    assert not (pixel & ~fg).any()
    assert feature.flatten(1).any(dim=1).all()
    pooled = torch.nn.functional.max_pool2d(pixel[:, None].float(), 8)[:, 0] > 0
    assert torch.equal(pooled, feature)


def test_glass_mask_combination_rule():
    first = torch.tensor([[[True, True, False, False]]]).repeat(3, 1, 1)
    second = torch.tensor([[[True, False, True, False]]]).repeat(3, 1, 1)
    out = combine_masks(first, second, torch.tensor([0.9, 0.5, 0.1]))
    assert out[0].tolist() == [[True, True, True, False]]  # union
    assert out[1].tolist() == [[True, False, False, False]]  # intersection
    assert out[2].tolist() == [[True, True, False, False]]  # first alone
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(RuntimeError, match="foreground"):
        glass_las_masks(torch.zeros(2, 32, 32, dtype=torch.bool), 4, gen, max_tries=3)


def test_blend_formula_and_normalisation_round_trip():
    gen = torch.Generator().manual_seed(0)
    images, textures = torch.rand(4, 3, 8, 8, generator=gen), torch.rand(4, 3, 8, 8, generator=gen)
    masks = torch.rand(4, 8, 8, generator=gen) > 0.5
    beta = torch.tensor([0.2, 0.5, 0.8, 0.3])
    out = blend(images, textures, masks, beta)
    for i in range(4):
        m = masks[i].float()
        expected = images[i] * (1 - m) + (1 - beta[i]) * textures[i] * m + beta[i] * images[i] * m
        torch.testing.assert_close(out[i], expected)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    torch.testing.assert_close(denormalize(normalize(images, mean, std), mean, std), images)
    # blending normalised tensors (GLASS) equals blending pixels and normalising
    torch.testing.assert_close(
        blend(normalize(images, mean, std), normalize(textures, mean, std), masks, beta),
        normalize(out, mean, std),
    )


def test_beta_ranges():
    gen = torch.Generator().manual_seed(0)
    beta = glass_beta(20000, gen)
    assert beta.min() >= 0.2 and beta.max() <= 0.8
    assert abs(beta.mean().item() - 0.5) < 0.005 and 0.095 < beta.std().item() < 0.103
    u = uniform_beta(20000, gen, 0.0, 0.8)
    assert u.min() >= 0.0 and u.max() < 0.8 and abs(u.mean().item() - 0.4) < 0.01


def test_builtin_textures_work_offline_and_are_deterministic():
    source = build_texture_source("builtin")
    assert isinstance(source, BuiltinTextures) and len(source) == 60
    assert "builtin" in source.describe() and "offline" in source.describe()
    for index in (0, 33, 59):  # marble, dots, the chessboard picture
        img = source.image(index)
        assert img.dtype == torch.uint8 and img.shape[0] == 3 and min(img.shape[1:]) >= 64
        assert img.float().std() > 5  # not a flat image
    assert torch.equal(BuiltinTextures().image(33), source.image(33))
    with pytest.raises(IndexError):
        source.image(60)
    idx = draw_indices(source, 1000, torch.Generator().manual_seed(0))
    assert min(idx) == 0 and max(idx) == 59


def test_folder_and_dtd_sources(tmp_path):
    for cls in ("banded", "dotted"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(2):
            image = Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8))
            image.save(tmp_path / "images" / cls / f"{cls}_{i}.jpg")
    (tmp_path / "images" / "readme.txt").write_text("not an image")
    folder = build_texture_source("folder", tmp_path)
    assert len(folder) == 4 and folder.image(0).shape == (3, 20, 30)
    dtd = build_texture_source("dtd", tmp_path)
    assert len(dtd) == 4 and dtd.describe().startswith("dtd-r1.0.1:")
    with pytest.raises(DataError, match="e42855a52a4950a3"):  # names the checksum, downloads nothing
        build_texture_source("dtd", tmp_path / "missing")
    with pytest.raises(DataError):
        FolderTextures(tmp_path / "images" / "nothing")
    with pytest.raises(DataError):
        build_texture_source("imagenet")


def test_resize_and_crop_like_torchvision():
    img = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    assert resize_texture(img, 20).shape == (3, 20, 30)
    assert resize_texture(img, 20, "square").shape == (3, 20, 20)
    assert center_crop(resize_texture(img, 20), 20).shape == (3, 20, 20)
    assert torch.equal(center_crop(img, 40), img[:, :, 10:50])


@pytest.mark.parametrize("pool", [GLASS_AUGMENTATIONS, DRAEM_AUGMENTATIONS])
def test_every_augmentation_keeps_shape_and_dtype(pool):
    gen = torch.Generator().manual_seed(0)
    img = resize_texture(BuiltinTextures().image(5), 48)
    for name in pool:
        out = apply_ops(img, [name], pool, gen)
        assert out.dtype == torch.uint8 and out.shape == img.shape, name
    with pytest.raises(ValueError):
        apply_ops(img.float(), ["hflip"], GLASS_AUGMENTATIONS, gen)


def test_augmentation_lists_and_draws():
    assert len(GLASS_AUGMENTATIONS) == 9 and len(DRAEM_AUGMENTATIONS) == 10
    gen = torch.Generator().manual_seed(0)
    draws = [tuple(draw_ops(DRAEM_AUGMENTATIONS, 3, gen)) for _ in range(300)]
    assert all(len(set(d)) == 3 for d in draws)
    assert {name for d in draws for name in d} == set(DRAEM_AUGMENTATIONS)
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    a = random_augment(img, GLASS_AUGMENTATIONS, torch.Generator().manual_seed(5))
    b = random_augment(img, GLASS_AUGMENTATIONS, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_individual_ops_against_known_values():
    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    assert torch.equal(GLASS_AUGMENTATIONS["hflip"](img, gen), img.flip(-1))
    assert torch.equal(GLASS_AUGMENTATIONS["vflip"](img, gen), img.flip(-2))
    assert torch.equal(DRAEM_AUGMENTATIONS["invert"](img, gen), 255 - img)
    gray = GLASS_AUGMENTATIONS["grayscale"](img, gen)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    ramp = torch.arange(50, 150, dtype=torch.uint8).repeat(3, 1).reshape(3, 10, 10)
    stretched = autocontrast_cutoff(ramp, 0)
    assert stretched.min() == 0 and stretched.max() == 255
    cut = autocontrast_cutoff(ramp, 10)  # 10 % of 100 values clipped at each end
    assert (cut == 0).sum() == 3 * 11 and (cut == 255).sum() == 3 * 11
    rgb = torch.rand(3, 8, 8)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-5, rtol=0)


def focal_loss_reference(logit, target, gamma=2.0, smooth=1e-5):
    """Literal transcription of DRAEM/GLASS loss.py FocalLoss.forward with alpha=None."""
    num_class = logit.shape[1]
    if logit.dim() > 2:
        logit = logit.view(logit.size(0), logit.size(1), -1)
        logit = logit.permute(0, 2, 1).contiguous()
        logit = logit.view(-1, logit.size(-1))
    target = torch.squeeze(target, 1)
    target = target.view(-1, 1)
    alpha = torch.ones(num_class, 1)
    idx = target.cpu().long()
    one_hot_key = torch.FloatTensor(target.size(0), num_class).zero_()
    one_hot_key = one_hot_key.scatter_(1, idx, 1)
    one_hot_key = torch.clamp(one_hot_key, smooth / (num_class - 1), 1.0 - smooth)
    pt = (one_hot_key * logit).sum(1) + smooth
    logpt = pt.log()
    alpha = torch.squeeze(alpha[idx])
    loss = -1 * alpha * torch.pow((1 - pt), gamma) * logpt
    return loss.mean()


def test_focal_loss_matches_the_official_class():
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 1, generator=gen)
    labels = (torch.rand(50, 1, generator=gen) > 0.5).float()
    probs = torch.cat([1 - scores, scores], dim=1)  # GLASS
    torch.testing.assert_close(focal_loss(probs, labels), focal_loss_reference(probs, labels))
    softmax = torch.softmax(torch.randn(2, 2, 5, 5, generator=gen), dim=1)  # DRAEM
    mask = (torch.rand(2, 1, 5, 5, generator=gen) > 0.7).float()
    torch.testing.assert_close(focal_loss(softmax, mask), focal_loss_reference(softmax, mask))
    # γ = 0 and no smoothing: plain cross-entropy
    torch.testing.assert_close(
        focal_loss(probs, labels, gamma=0.0, smooth=0.0),
        torch.nn.functional.binary_cross_entropy(scores, labels),
    )
    # one element by hand: target 1, p = 0.9 -> p_t = 0.9 (1 - 1e-5) + 0.1e-5 + 1e-5
    right = focal_loss(torch.tensor([[0.1, 0.9]]), torch.tensor([1]), reduction="none")
    p_t = 0.9 * (1 - 1e-5) + 0.1 * 1e-5 + 1e-5
    assert right.item() == pytest.approx(-((1 - p_t) ** 2) * math.log(p_t), rel=1e-5)


def test_hardest_mask_keeps_the_hardest_half():
    errors = torch.tensor([0.1, 0.9, 0.3, 0.7, 0.5, 0.2])
    assert hardest_mask(errors, 0.5).tolist() == [False, True, False, True, True, False]
    scores = torch.rand(1000)
    target = (torch.rand(1000) > 0.8).float()
    err = (scores - target) ** 2
    kept = hardest_mask(err, 0.5)
    assert kept.sum() == 500 and err[kept].min() >= err[~kept].max()


def test_otsu_separates_two_modes():
    gen = torch.Generator().manual_seed(0)
    low = 0.2 + 0.01 * torch.randn(100, generator=gen)
    high = 0.8 + 0.01 * torch.randn(50, generator=gen)
    assert low.max() < otsu_threshold(torch.cat([low, high])) <= high.min()


def test_estimate_foreground_object_and_texture():
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disc = ((yy - 32) ** 2 + (xx - 30) ** 2 < 15**2).float()
    objects = 0.1 + 0.02 * torch.rand(6, 3, 64, 64, generator=gen) + 0.7 * disc
    masks, has_background = estimate_foreground(objects)
    assert has_background
    iou = (masks & disc.bool()).sum() / (masks | disc.bool()).sum()
    assert iou > 0.7 and masks[:, disc.bool()].float().mean() > 0.99
    texture = torch.rand(6, 3, 64, 64, generator=gen)
    masks, has_background = estimate_foreground(texture)
    assert not has_background and masks.all()


def test_foreground_from_folder(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "fg").mkdir()
    paths = []
    for i in range(2):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "img" / f"{i:03d}.png")
        mask = np.zeros((40, 40), np.uint8)
        mask[10:30, 5 + i : 20] = 1  # class ids, not 0/255
        Image.fromarray(mask).save(tmp_path / "fg" / f"{i:03d}.png")
        paths.append(str(tmp_path / "img" / f"{i:03d}.png"))
    masks = foreground_from_folder(paths, tmp_path / "fg", ImageTransform(resize=20, crop=20))
    assert masks.shape == (2, 20, 20) and masks.dtype == torch.bool
    assert masks[0, 5:15, 3:10].all() and not masks[0, :4].any()
    with pytest.raises(DataError, match="foreground"):
        foreground_from_folder([str(tmp_path / "img" / "000.png")], tmp_path / "nope", ImageTransform())
