"""GLASS: projections, gradient ascent, training step, scoring, distribution choice, a tiny toy run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from adbench.methods.glass import GLASS, HYPERSPHERE_TABLE, spectrogram_judge
from conftest import TINY_METHODS

from adbench.components.synthesis.blend import denormalize
from adbench.config import compose
from adbench.data import DecodedImages
from adbench.runner import build_context, build_method, load_categories, run

DIM = 32
TINY = ["method=glass", "method.image.resize=32", "method.image.crop=32", "progress=false",
        *TINY_METHODS["glass"]]  # pretrain_dim = target_dim = DIM


def small_glass(hypersphere: bool = False, **kwargs) -> GLASS:
    method = GLASS(target_dim=DIM, pretrain_dim=DIM, dsc_hidden=16, **kwargs)
    method.hypersphere.fill_(hypersphere)
    method.adaptor_opt = torch.optim.Adam(method.adaptor.parameters(), 1e-4, weight_decay=1e-5)
    method.dsc_opt = torch.optim.AdamW(method.discriminator.parameters(), lr=2e-4)
    return method


def test_project_clamps_into_the_band():
    torch.manual_seed(0)
    method = small_glass()
    origin = torch.randn(200, DIM)
    points = origin + torch.randn(200, DIM) * torch.logspace(-2, 1, 200)[:, None]
    out = method.project(points, origin, 0.5, 1.0)
    norms = torch.linalg.vector_norm(out - origin, dim=1)
    assert norms.min() >= 0.5 - 1e-5 and norms.max() <= 1.0 + 1e-5
    inside = (torch.linalg.vector_norm(points - origin, dim=1) - 0.75).abs() < 0.25
    torch.testing.assert_close(out[inside], points[inside])  # points in the band do not move
    direction = F.cosine_similarity(out - origin, points - origin, dim=1)
    assert direction.min() > 0.9999  # only the length changes


@pytest.mark.parametrize("hypersphere", [False, True])
def test_gas_features_lie_in_their_band(hypersphere):
    torch.manual_seed(0)
    method = small_glass(hypersphere)
    true = torch.randn(64, DIM) * 3
    center = true.mean(dim=0, keepdim=True).repeat(64, 1) + 0.1
    r_t = torch.tensor(2.0)
    fake, true_loss, gas_loss = method.gas(true, center, r_t, torch.Generator().manual_seed(0))
    if hypersphere:
        norms, low, high = torch.linalg.vector_norm(fake - center, dim=1), 2.0, 4.0
    else:
        norms, low, high = torch.linalg.vector_norm(fake - true, dim=1), 0.5, 1.0
    assert norms.min() >= low - 1e-4 and norms.max() <= high + 1e-4
    assert torch.isfinite(true_loss) and torch.isfinite(gas_loss) and fake.shape == true.shape


def test_las_projection_band_and_manifold_passthrough():
    torch.manual_seed(0)
    fake, center = torch.randn(50, DIM) * 5, torch.randn(50, DIM)
    labels = torch.arange(50) % 3 == 0
    r_t = torch.tensor(1.5)
    out = small_glass(hypersphere=True).project_las(fake, labels, center, r_t)
    norms = torch.linalg.vector_norm(out[labels] - center[labels], dim=1)
    assert norms.min() >= 3.0 - 1e-4 and norms.max() <= 6.0 + 1e-4
    torch.testing.assert_close(out[~labels], fake[~labels])
    assert small_glass(hypersphere=False).project_las(fake, labels, center, r_t) is fake


def test_gradient_ascent_raises_the_discriminator_loss_on_gas_features():
    """Without projection, every ascent step moves g along ∇ BCE(D(g), 1): the loss goes up."""
    torch.manual_seed(0)
    method = small_glass(project_every=10**6, ascent_steps=0)
    method.discriminator.eval()  # fixed BN statistics: the loss is a function of g alone
    true = torch.randn(128, DIM)
    center = true.clone()
    losses = []
    for steps in (0, 1, 5, 20):
        method.ascent_steps = steps
        fake, _, gas_loss = method.gas(true, center, torch.tensor(1.0), torch.Generator().manual_seed(1))
        losses.append(gas_loss.item())
    assert losses[0] < losses[1] < losses[2] < losses[3]
    # the steps are normalised: 20 steps of 0.001 move every feature by at most 0.02
    noise = torch.randn(true.shape, generator=torch.Generator().manual_seed(1)) * method.noise_std
    assert torch.linalg.vector_norm(fake - (true + noise), dim=1).max() <= 0.02 + 1e-5


def test_train_step_updates_both_networks_and_uses_focal_on_the_hard_half():
    torch.manual_seed(0)
    method = small_glass(hypersphere=True, ascent_steps=5)
    method.train()
    normal, las = torch.randn(96, DIM), torch.randn(96, DIM) + 1.0
    labels = torch.arange(96) % 4 == 0
    center = normal.mean(dim=0, keepdim=True).repeat(96, 1)
    before = [p.detach().clone() for p in method.parameters()]
    running = method.discriminator.body[1].running_mean.clone()
    out = method.train_step(normal, las, labels, center, torch.Generator().manual_seed(0))
    assert all(np.isfinite(v) for v in out.values()) and out["r_t"] > 0
    assert out["loss"] == pytest.approx(out["true"] + out["gas"] + out["las"], rel=1e-5)
    assert all(not torch.equal(a, b) for a, b in zip(before, method.parameters()))
    assert not torch.equal(running, method.discriminator.body[1].running_mean)


def test_center_is_the_per_position_mean_of_adapted_features():
    method = small_glass()
    feats = [torch.randn(4, 6, 8, 8), torch.randn(4, 10, 4, 4)]
    emb, grid = method.embed({"layer2": feats[0], "layer3": feats[1]})
    assert grid == (8, 8) and emb.shape == (4 * 64, DIM)
    per_image = emb.reshape(4, 64, DIM)
    # position p of image i is row i·64 + p: the grid is row-major per image
    from adbench.components.embedding import patch_embedding

    ref = patch_embedding(feats, 3, DIM, DIM)  # [4, D, 8, 8]
    torch.testing.assert_close(per_image[2, 8 * 3 + 5], ref[2, :, 3, 5])


def test_distribution_table_and_spectrogram_rule():
    assert HYPERSPHERE_TABLE["mvtec"]["bottle"] and not HYPERSPHERE_TABLE["mvtec"]["carpet"]
    assert sum(HYPERSPHERE_TABLE["mvtec"].values()) == 5 and len(HYPERSPHERE_TABLE["mvtec"]) == 15
    assert sum(HYPERSPHERE_TABLE["visa"].values()) == 6 and len(HYPERSPHERE_TABLE["visa"]) == 12
    assert not any(HYPERSPHERE_TABLE["mpdd"].values())
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert spectrogram_judge(flat) is False  # only the DC term is bright
    yy, xx = np.mgrid[0:128, 0:128]
    stripes = (127 + 127 * np.sin(2 * np.pi * xx / 32))[..., None].repeat(3, axis=2).astype(np.uint8)
    assert spectrogram_judge(stripes) == spectrogram_judge(stripes[:, ::-1])  # mirror-invariant
    disc = np.where((yy - 64) ** 2 + (xx - 64) ** 2 < 40**2, 220, 20).astype(np.uint8)
    disc = disc[..., None].repeat(3, axis=2)
    assert spectrogram_judge(disc) is True  # a centred object: broad bright spectrum


def test_rejects_unknown_distribution():
    with pytest.raises(ValueError, match="distribution"):
        GLASS(distribution="sphere")


def fit_tiny(toy_root: Path, keep_decoded: bool = True) -> tuple[GLASS, object]:
    cfg = compose([*TINY, "data=toy", f"data.root={toy_root}", "data.category=brick"])
    (category,) = load_categories(cfg)
    method = build_method(cfg)
    ctx = build_context(cfg, method, category, torch.device("cpu"))
    if not keep_decoded:
        ctx.decoded = DecodedImages(max_bytes=0)  # decode every file on every visit
    torch.manual_seed(cfg.seed)  # the runner seeds everything before building the method
    method = build_method(cfg)
    method.train()
    method.fit(ctx)
    method.eval()
    return method, ctx


@pytest.fixture(scope="module")
def fitted(toy_root) -> tuple[GLASS, object]:
    return fit_tiny(toy_root)


def test_glass_toy_end_to_end_through_the_runner(toy_root, tmp_path):
    overrides = [*TINY, "data=toy", f"data.root={toy_root}", "data.category=brick", f"results_dir={tmp_path}"]
    (record,) = run(compose(overrides))
    assert record["status"] == "ok", record.get("traceback")
    assert 0.0 <= record["image_auroc"] <= 1.0 and 0.0 <= record["pixel_auroc"] <= 1.0
    assert record["timing_steps"] == 5 and record["timing_step_ms"] > 0  # 40 images, limit 392, batch 8
    assert len(record["train_loss"]) == 1 and record["train_loss"][0] > 0  # one epoch: its mean loss
    assert record["eval_resolution"] == 32 and record["n_params"] > 0


def test_same_seed_same_model(fitted, toy_root):
    """Also when every epoch decodes the training images again instead of reading them from memory."""
    method, _ = fitted
    again, _ = fit_tiny(toy_root, keep_decoded=False)
    for (name, a), b in zip(method.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_predict_scores_are_the_max_raw_patch_score(fitted):
    method, ctx = fitted
    assert "builtin" in method.info["texture_source"] and "table" not in method.info["distribution"]
    assert method.info["foreground"].startswith("auto")
    batch = next(ctx.train_batches())
    pred = method.predict(batch, ctx)
    emb, (h, w) = method.embed(ctx.features(batch))
    with torch.no_grad():
        raw = method.discriminator(method.adaptor(emb)).reshape(len(batch.paths), h, w)
    torch.testing.assert_close(pred.image_scores, raw.flatten(1).max(dim=1).values)
    assert pred.anomaly_maps.shape == (len(batch.paths), 32, 32)
    assert ((pred.anomaly_maps >= 0) & (pred.anomaly_maps <= 1)).all()


def test_synthesised_images_stay_in_pixel_range_and_keep_normal_pixels(fitted):
    method, ctx = fitted
    batch = next(ctx.train_batches())
    images, labels = method.synthesise(batch, ctx, (4, 4), torch.Generator().manual_seed(0))
    assert images.shape == batch.images.shape and labels.shape == (len(batch.paths), 4, 4)
    assert labels.flatten(1).any(dim=1).all()
    pixels = denormalize(images, ctx.transform.mean, ctx.transform.std)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    outside = ~F.interpolate(labels[:, None].float(), size=(32, 32), mode="nearest")[:, 0].bool()
    changed = (images - batch.images).abs().amax(dim=1) > 1e-5
    assert not (changed & outside).any()  # pixels outside every masked patch are untouched


@pytest.mark.parametrize(("category", "resize"), [("toothbrush", 329), ("wood", 329), ("bottle", 288)])
def test_official_preset_resizes_toothbrush_and_wood_to_329(category, resize):
    """GLASS's datasets/mvtec.py resizes toothbrush and wood to 329, then crops 288 (train and test)."""
    from adbench.config import compose
    from adbench.data import ImageTransform

    cfg = compose(["method=glass", "data=mvtec", f"data.category={category}"])
    transform = ImageTransform.from_config(cfg.method.image, category)
    assert (transform.resize, transform.crop) == (resize, 288)


@pytest.mark.parametrize(
    ("experiment", "foreground"),
    [("paper_mvtec", "/data/mv/fg_mask"), ("paper_visa", "/data/mv/fg_mask"), ("paper_mpdd", "none")],
)
def test_paper_sweeps_run_glass_as_the_official_scripts(experiment, foreground):
    """shell/run-{mvtec,visa}.sh: DTD textures and --fg 1 (fg_mask/<class>/); run-mpdd.sh: --fg 0. The
    other methods of the sweep compose without GLASS's keys; the offline default stays builtin/auto."""
    from adbench.config import compose

    for method in ("glass_j", "glass_m"):
        cfg = compose([f"+experiment={experiment}", f"method={method}", "data.root=/data/mv"])
        params = cfg.method.params
        assert (params.texture_source, params.foreground) == ("dtd", foreground)
    compose([f"+experiment={experiment}", "method=patchcore", "data.root=/data/mv"])
    default = compose(["method=glass"]).method.params
    assert (default.texture_source, default.foreground) == ("builtin", "auto")


def test_missing_official_foreground_folder_names_it_and_the_fix(tmp_path):
    from adbench.components.synthesis.foreground import foreground_from_folder
    from adbench.data import DataError, ImageTransform

    with pytest.raises(DataError, match=r"fg_mask/bottle does not exist.*foreground=auto"):
        foreground_from_folder([], tmp_path / "fg_mask" / "bottle", ImageTransform())


@pytest.mark.parametrize("mask_size", [(40, 30), (80, 60), (160, 120)])
def test_foreground_masks_of_any_size_resize_as_the_official_loader(tmp_path, mask_size):
    """GLASS's datasets/mvtec.py reads fg_mask/<class>/<file> through Resize(resize) (bilinear),
    CenterCrop, ToTensor and torch.ceil, whatever the mask's own size: written with torchvision."""
    import numpy as np
    from PIL import Image
    from torchvision import transforms

    from adbench.components.synthesis.foreground import foreground_from_folder
    from adbench.data import ImageTransform

    image = tmp_path / "img" / "000.png"
    image.parent.mkdir()
    Image.new("RGB", (80, 60)).save(image)
    rng = np.random.default_rng(0)
    mask = np.zeros(mask_size[::-1], dtype=np.uint8)
    mask[mask_size[1] // 4 : mask_size[1] // 2, mask_size[0] // 3 : mask_size[0] // 2] = 255
    mask[rng.random(mask.shape) < 0.01] = 255
    (tmp_path / "fg" / "cat").mkdir(parents=True)
    Image.fromarray(mask).save(tmp_path / "fg" / "cat" / "000.png")
    transform = ImageTransform(resize=40, crop=32)
    ours = foreground_from_folder([str(image)], tmp_path / "fg" / "cat", transform)[0]
    official = transforms.Compose([transforms.Resize(40), transforms.CenterCrop(32), transforms.ToTensor()])
    expected = torch.ceil(official(Image.fromarray(mask))[0]) > 0
    assert torch.equal(ours, expected)
