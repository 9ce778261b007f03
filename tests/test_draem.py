"""DRAEM: SSIM against a literal reference, network shapes and sizes, the 21×21 score filter,
synthesis rules, masks that keep their defect pixels after resizing, and a tiny end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from adbench.methods.draem import (
    DiscriminativeSubNetwork,
    Draem,
    ReconstructiveSubNetwork,
    mean_filter_max,
)

from adbench.components.losses import ssim, ssim_loss
from adbench.components.synthesis.draem import DraemSynthesis
from adbench.config import compose
from adbench.data import ImageTransform, iterate_batches
from adbench.runner import run


def literal_ssim(
    a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5, value_range: float = 1.0
) -> float:
    """Per-pixel loops: Gaussian-weighted means/variances over the zero-padded window."""
    x = np.arange(size) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    window = np.outer(g, g)
    pad = size // 2
    c1, c2 = (0.01 * value_range) ** 2, (0.03 * value_range) ** 2
    values = []
    for n in range(a.shape[0]):
        for c in range(a.shape[1]):
            pa = np.pad(a[n, c], pad)
            pb = np.pad(b[n, c], pad)
            for i in range(a.shape[2]):
                for j in range(a.shape[3]):
                    wa, wb = pa[i : i + size, j : j + size], pb[i : i + size, j : j + size]
                    mu_a, mu_b = (window * wa).sum(), (window * wb).sum()
                    var_a = (window * wa * wa).sum() - mu_a**2
                    var_b = (window * wb * wb).sum() - mu_b**2
                    cov = (window * wa * wb).sum() - mu_a * mu_b
                    values.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                                  / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_ssim_equals_a_literal_reference():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 14, 13, generator=gen, dtype=torch.float64)
    b = (a + 0.2 * torch.randn(2, 3, 14, 13, generator=gen, dtype=torch.float64)).clamp(0, 1)
    assert float(ssim(a, b)) == pytest.approx(literal_ssim(a.numpy(), b.numpy()), rel=1e-9)
    assert float(ssim_loss(a, a)) == pytest.approx(0.0, abs=1e-12)
    # value range inferred from the first image as the official code does: > 128 → 255
    assert float(ssim(a * 255, b * 255)) == pytest.approx(literal_ssim(a.numpy() * 255, b.numpy() * 255,
                                                                       value_range=255.0), rel=1e-9)


def test_networks_shapes_sizes_and_init():
    recon, disc = ReconstructiveSubNetwork(), DiscriminativeSubNetwork()
    # spec §1.1 analytic counts: ≈ 69.0 M and ≈ 28.4 M parameters
    assert sum(p.numel() for p in recon.parameters()) == pytest.approx(69.0e6, rel=0.002)
    assert sum(p.numel() for p in disc.parameters()) == pytest.approx(28.4e6, rel=0.002)
    model = Draem(recon_width=8, disc_width=4)
    x = torch.rand(2, 3, 64, 64)
    reconstruction, logits = model(x)
    assert reconstruction.shape == (2, 3, 64, 64) and logits.shape == (2, 2, 64, 64)
    conv = model.reconstructive.encoder[0][0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # the fast layout (forward)
    bn = model.reconstructive.encoder[0][1]
    weight, gamma, beta = conv.weight.detach(), bn.weight.detach(), bn.bias.detach()
    assert abs(float(weight.std()) - 0.02) < 0.005 and abs(float(gamma.mean()) - 1) < 0.02
    assert float(beta.abs().max()) == 0.0


def test_bf16_precision_matches_fp32_and_returns_float32():
    torch.manual_seed(0)
    fp32 = Draem(recon_width=8, disc_width=4).eval()
    bf16 = Draem(recon_width=8, disc_width=4, precision="bf16").eval()
    bf16.load_state_dict(fp32.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        (r32, l32), (r16, l16) = fp32(x), bf16(x)
    assert r16.dtype == l16.dtype == torch.float32
    # bf16 keeps 8 mantissa bits: outputs agree to ~1 % of their spread, not exactly
    assert not torch.equal(l16, l32)
    assert (l16 - l32).abs().max() < 0.05 * l32.std() + 1e-3
    assert (r16 - r32).abs().max() < 0.05 * r32.std() + 1e-3
    with pytest.raises(ValueError, match=r"method\.params\.precision='fp16'"):
        Draem(precision="fp16")


def test_mean_filter_21_on_known_maps():
    maps = torch.zeros(4, 64, 64)
    maps[0, 30, 30] = 1.0  # a single hot pixel is diluted to 1/441
    maps[1, 10:31, 20:41] = 1.0  # a 21×21 block keeps its value at its centre
    maps[2, 0, 0] = 1.0  # zero padding is counted at the border
    maps[3] = 0.5
    maps[3, 5, 5] = 1.0  # a uniform map with a spike: the filter averages the spike away
    scores = mean_filter_max(maps, 21)
    expected = torch.tensor([1 / 441, 1.0, 1 / 441, 0.5 + 0.5 / 441])
    assert torch.allclose(scores, expected, atol=1e-6)
    assert float(maps[3].max()) == 1.0  # (the plain maximum would have been 1)


class ConstantTextures:
    """A texture source of one flat colour, so the blend weight can be read back."""

    colour = (0.9, 0.1, 0.5)

    def __len__(self) -> int:
        return 1

    def image(self, index: int) -> torch.Tensor:
        flat = (torch.tensor(self.colour).view(3, 1, 1) * 255).round().to(torch.uint8)
        return flat.expand(3, 40, 40).clone()

    def describe(self) -> str:
        return "constant"


@pytest.mark.parametrize(("opacity", "low", "high"), [(False, 0.0, 0.8), (True, 0.0, 0.9)])
def test_synthesis_rules(opacity, low, high):
    beta_range = (0.1, 1.0) if opacity else (0.0, 0.8)  # paper: opacity in [0.1, 1]; code: image weight
    synth = DraemSynthesis(ConstantTextures(), beta_range=beta_range, beta_is_opacity=opacity,
                           n_augmentations=0)
    clean = torch.full((400, 3, 32, 32), 0.3)
    batch = synth(clean, torch.Generator().manual_seed(1))
    assert torch.equal(batch.labels, (batch.masks.flatten(1).amax(dim=1) > 0).float())
    assert 0.40 < float(batch.labels.mean()) < 0.55  # half kept normal, some Perlin masks are empty
    rotated = (batch.targets != clean).flatten(1).any(dim=1).float().mean()
    assert 0.22 < float(rotated) < 0.38  # p = 0.3 (a rotated flat image differs by its zero corners)
    outside = batch.masks.expand(-1, 3, -1, -1) == 0
    assert torch.equal(batch.inputs[outside], batch.targets[outside])
    texture = (torch.tensor(ConstantTextures.colour) * 255).round() / 255
    inside = batch.masks[:, 0] > 0
    for i in inside.flatten(1).any(dim=1).nonzero().flatten().tolist():
        y, x = inside[i].nonzero()[0].tolist()
        target, got = batch.targets[i, 0, y, x], batch.inputs[i, 0, y, x]
        weight = (got - texture[0]) / (target - texture[0])  # inputs = w·target + (1 − w)·texture
        assert low - 1e-5 <= float(weight) < high + 1e-5


def test_synthesis_is_deterministic_per_seed():
    from adbench.components.synthesis.textures import BuiltinTextures

    synth = DraemSynthesis(BuiltinTextures())
    clean = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    a = synth(clean, torch.Generator().manual_seed(3))
    b = synth(clean, torch.Generator().manual_seed(3))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.masks, b.masks)


def test_masks_keep_their_defect_pixels_when_resized(toy_root):
    # a thin defect at 1024 px: nearest resizing keeps it; DRAEM's bilinear → /255 → uint8 drops it
    mask = np.zeros((1024, 1024), dtype=bool)
    mask[98:102, 200:800] = True  # a 4-px scratch whose edges fall between the 4× bilinear samples
    mask[501:521, 501:521] = True  # a 20-px blob
    resized = ImageTransform(256, 256, None, None, square=True).mask(mask).numpy()
    assert resized[24, 50:200].all() and resized[125:130, 125:130].all()
    assert int(resized.sum()) == mask.sum() // 16
    scaled = F.interpolate(torch.from_numpy(mask * 255.0)[None, None], size=(256, 256), mode="bilinear")[0, 0]
    official = (scaled / 255).to(torch.uint8).numpy()  # only pixels that stay exactly 1.0
    assert not official[20:30].any() and official.sum() == 25  # the scratch is gone, the blob stays
    # every defective toy image keeps defect pixels at the CPU preset's resolution
    from adbench.datasets import build

    category = build("toy", toy_root).load("brick")
    transform = ImageTransform(64, 64, None, None, square=True)
    for batch in iterate_batches(category.test, transform, 16):
        assert (batch.masks.flatten(1).any(dim=1) == (batch.labels == 1)).all()


def test_schedules_official_and_paper():
    assert Draem(recon_width=4, disc_width=4).milestones() == [560, 630]
    paper = compose(["method=draem_paper"]).method
    model = Draem(**{**paper.params, "recon_width": 4, "disc_width": 4})
    assert model.milestones() == [400, 600] and model.lr_gamma == pytest.approx(0.1)
    assert paper.params.beta_is_opacity and list(paper.params.beta_range) == [0.1, 1.0]
    assert math.isclose(compose(["method=draem"]).method.params.lr_gamma, 0.2)


def test_draem_end_to_end_tiny(toy_root, tmp_path):
    overrides = ["method=draem_cpu", "data=toy", f"data.root={toy_root}", "data.category=brick",
                 f"results_dir={tmp_path}", "progress=false", "method.image.resize=32",
                 "method.image.crop=32", "method.params.epochs=1", "method.params.recon_width=4",
                 "method.params.disc_width=4"]
    (record,) = run(compose(overrides))
    assert record["status"] == "ok", record.get("traceback")
    assert record["eval_resolution"] == 32 and 0.0 <= record["pixel_auroc"] <= 1.0
    assert record["backbone"] == "none" and record["timing_train_s"] > 0
    assert len(record["train_loss"]) == record["config"]["method"]["params"]["epochs"]
    assert record["info_synthesis"].startswith("builtin-v")
    assert "image weight U[0.0, 0.8]" in record["info_synthesis"]
    bad = run(compose([*overrides, "method.image.resize=48", "method.image.crop=48", "force=true"]))[0]
    assert bad["status"] == "failed" and "divisible by 32" in bad["error"]


def test_paper_preset_names_the_code_augmentations_it_keeps():
    """The paper lists 7 augmentations, the code 10; the paper preset keeps the code's and says so."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "conf/method/draem_paper.yaml").read_text()
    header = text.split("defaults:")[0]
    assert "10 imgaug ops" in header and "7 ops" in header
    assert "n_augmentations" not in text.split("params:")[1]  # the code's 3 of 10, inherited from draem.yaml
