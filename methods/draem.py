"""DRAEM (Zavrtanik, Kristan, Skočaj — ICCV 2021), faithful to the official code VitjanZ/DRAEM
(``model_unet.py``, ``train_DRAEM.py``, ``loss.py``, ``test_DRAEM.py``; spec
draem-cutpaste-datasets.md §1).

A reconstructive encoder–decoder (no skips, base width 128) learns to restore clean images from
images with synthetic anomalies (:mod:`adbench.components.synthesis.draem`); a discriminative U-Net (skips,
base width 64) reads [reconstruction, image] and segments the anomaly (2 logits). Loss = L2 + (1 −
SSIM) between reconstruction and clean image + focal loss (γ 2) of the softmax map against the
synthetic mask. One Adam (lr 1e-4) over both networks, MultiStepLR ×0.2 at 80 % and 90 % of the
epochs (official) — the paper's ×0.1 at epochs 400 and 600 is the ``draem_paper`` variant.
Images in [0, 1], no ImageNet normalisation. Scoring: softmax channel 1 is the anomaly map; image
score = max of the map after a 21 × 21 mean filter (stride 1, zero padding counted).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from adbench.components.losses import focal_loss, ssim_loss
from adbench.components.precision import autocast, check_precision
from adbench.components.prefetch import background
from adbench.components.synthesis.draem import DraemBatch, DraemSynthesis
from adbench.components.synthesis.textures import build_texture_source
from adbench.data import Batch
from adbench.method import Context, Method, Prediction
from adbench.registry import register_method


def double_conv(in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    """2 × (Conv 3×3 pad 1 → BatchNorm → ReLU)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, 3, padding=1), nn.BatchNorm2d(mid_channels), nn.ReLU(True),
        nn.Conv2d(mid_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(True),
    )


def up_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Bilinear ×2 (align_corners=True) → Conv 3×3 → BatchNorm → ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(True),
    )


class ReconstructiveSubNetwork(nn.Module):
    """Encoder (5 double-conv blocks, 4 max-pools) → decoder (4 up-convs + double convs) → Conv 3×3
    to 3 channels, linear output. images [B, 3, H, W] → reconstruction [B, 3, H, W]; H, W % 16 == 0."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_width: int = 128) -> None:
        super().__init__()
        w = base_width
        widths = [(in_channels, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w), (8 * w, 8 * w)]
        self.encoder = nn.ModuleList(double_conv(a, b, b) for a, b in widths)
        self.ups = nn.ModuleList(up_conv(c, c) for c in (8 * w, 4 * w, 2 * w, w))
        self.decoder = nn.ModuleList([
            double_conv(8 * w, 8 * w, 4 * w), double_conv(4 * w, 4 * w, 2 * w),
            double_conv(2 * w, 2 * w, w), double_conv(w, w, w),
        ])
        self.final = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
        for up, block in zip(self.ups, self.decoder):
            x = block(up(x))
        return self.final(x)


class DiscriminativeSubNetwork(nn.Module):
    """U-Net: 6 double-conv encoder blocks (5 max-pools), 5 up-stages each concatenating the matching
    encoder feature, Conv 3×3 to ``out_channels`` logits. [B, in, H, W] → [B, out, H, W]; H, W % 32 == 0."""

    def __init__(self, in_channels: int = 6, out_channels: int = 2, base_width: int = 64) -> None:
        super().__init__()
        w = base_width
        widths = [(in_channels, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w), (8 * w, 8 * w)]
        widths.append((8 * w, 8 * w))
        self.encoder = nn.ModuleList(double_conv(a, b, b) for a, b in widths)
        # (up-conv in → out, then double conv of [up, skip] → out), deepest first
        stages = [(8 * w, 8 * w, 8 * w), (8 * w, 4 * w, 8 * w), (4 * w, 2 * w, 4 * w), (2 * w, w, 2 * w)]
        stages.append((w, w, w))
        self.ups = nn.ModuleList(up_conv(a, b) for a, b, _ in stages)
        self.decoder = nn.ModuleList(double_conv(b + skip, b, b) for _, b, skip in stages)
        self.final = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.final(x)


def draem_init(module: nn.Module) -> None:
    """Official ``weights_init``: conv weights ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02), bias 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def mean_filter_max(maps: torch.Tensor, size: int = 21) -> torch.Tensor:
    """Image score of DRAEM's test code: maps [B, H, W] → max over the ``size`` × ``size`` mean-filtered
    map (stride 1, zero padding size // 2, padded zeros counted) → [B]."""
    pooled = F.avg_pool2d(maps.unsqueeze(1), size, stride=1, padding=size // 2, count_include_pad=True)
    return pooled.flatten(1).max(dim=1).values


@register_method("draem")
class Draem(Method):
    """DRAEM: reconstructive + discriminative networks trained on synthetic anomalies."""

    normalize = "none"  # data_loader.py: images / 255 in [0, 1]
    synthesis_in_background: bool | None = None  # None: on CUDA only (components.prefetch); same numbers

    def __init__(
        self,
        epochs: int = 700,
        batch_size: int = 8,
        lr: float = 1e-4,
        lr_milestones: tuple[float, ...] = (0.8, 0.9),
        lr_gamma: float = 0.2,
        recon_width: int = 128,
        disc_width: int = 64,
        texture_source: str = "dtd",
        texture_root: str | None = None,
        texture_download: bool = False,
        n_augmentations: int = 3,
        beta_range: tuple[float, float] = (0.0, 0.8),
        beta_is_opacity: bool = False,
        p_anomaly: float = 0.5,
        p_rotate: float = 0.3,
        perlin_threshold: float = 0.5,
        score_filter: int = 21,
        focal_gamma: float = 2.0,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        self.precision = check_precision(precision)
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_milestones = tuple(lr_milestones)
        self.lr_gamma = lr_gamma
        self.texture = (texture_source, texture_root, texture_download)
        self.synthesis_options = dict(
            beta_range=tuple(beta_range), beta_is_opacity=beta_is_opacity, p_anomaly=p_anomaly,
            p_rotate=p_rotate, perlin_threshold=perlin_threshold, n_augmentations=n_augmentations,
        )
        self.score_filter = score_filter
        self.focal_gamma = focal_gamma
        self.reconstructive = ReconstructiveSubNetwork(3, 3, recon_width)
        self.discriminative = DiscriminativeSubNetwork(6, 2, disc_width)
        self.reconstructive.apply(draem_init)
        self.discriminative.apply(draem_init)
        self.to(memory_format=torch.channels_last)  # see forward

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, H, W] in [0, 1] → (reconstruction [B, 3, H, W], logits [B, 2, H, W]), float32.

        Runs channels-last (faster convolutions, the same maths up to round-off) and, with
        ``precision="bf16"``, under bfloat16 autocast (:mod:`adbench.components.precision`)."""
        images = images.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, self.precision):
            reconstruction = self.reconstructive(images)
            logits = self.discriminative(torch.cat([reconstruction, images.to(reconstruction.dtype)], dim=1))
        return reconstruction.float(), logits.float()

    def milestones(self) -> list[int]:
        """Epochs after which the LR is multiplied by ``lr_gamma`` (fractions of ``epochs``, rounded)."""
        return [round(f * self.epochs) for f in self.lr_milestones]

    def make_optimiser(self) -> torch.optim.Optimizer:
        """One Adam over both networks (train_DRAEM.py: two parameter groups with the same lr)."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def train_step(self, batch: DraemBatch, optimiser: torch.optim.Optimizer) -> float:
        """One update: L2 + (1 − SSIM) of reconstruction vs clean target + focal loss of the softmax
        map vs the synthetic mask (all weights 1, as train_DRAEM.py). Returns the loss."""
        reconstruction, logits = self(batch.inputs)
        loss = (
            F.mse_loss(reconstruction, batch.targets)
            + ssim_loss(reconstruction, batch.targets)
            + focal_loss(torch.softmax(logits, dim=1), batch.masks, gamma=self.focal_gamma)
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss.item()

    def fit(self, ctx: Context) -> None:
        train = torch.cat([b.images for b in ctx.train_batches()]).to(ctx.device)
        side = train.shape[-1]
        if side % 32:
            raise ValueError(f"DRAEM needs an image side divisible by 32 (5 poolings); got {side}")
        kind, root, download = self.texture
        source = build_texture_source(kind, root, download, ctx.progress)
        synthesis = DraemSynthesis(source, **self.synthesis_options)
        self.info["synthesis"] = synthesis.describe()
        generator = torch.Generator().manual_seed(ctx.seed)
        optimiser = self.make_optimiser()
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, self.milestones(), gamma=self.lr_gamma)
        n = train.shape[0]
        steps_per_epoch = math.ceil(n / self.batch_size)
        synth_s = 0.0

        def synthesised() -> Iterator[DraemBatch]:
            nonlocal synth_s
            for _ in range(self.epochs):
                for step in range(steps_per_epoch):
                    size = min(self.batch_size, n - step * self.batch_size)  # an epoch's last batch: smaller
                    tick = time.perf_counter()
                    chosen = torch.randint(0, n, (size,), generator=generator)  # sampled with replacement
                    batch = synthesis(train[chosen.to(ctx.device)], generator)
                    synth_s += time.perf_counter() - tick
                    yield batch

        overlap = self.synthesis_in_background
        if overlap is None:
            overlap = ctx.device.type == "cuda"
        batches = background(synthesised()) if overlap else synthesised()
        self.train()
        start = time.perf_counter()
        self.loss_history = []
        try:
            for _ in tqdm(range(self.epochs), desc="draem: epochs", disable=not ctx.progress, leave=False):
                losses = [self.train_step(next(batches), optimiser) for _ in range(steps_per_epoch)]
                self.loss_history.append(sum(losses) / len(losses))
                schedule.step()
        finally:  # also when a step fails: stops the background producer
            batches.close()
        self.timings.update(train_s=time.perf_counter() - start, synthesis_s=synth_s)
        self.info["synthesis_thread"] = "background" if overlap else "inline"

    @torch.no_grad()
    def predict(self, batch: Batch, ctx: Context) -> Prediction:
        _, logits = self(batch.images.to(ctx.device))
        maps = torch.softmax(logits, dim=1)[:, 1]
        return Prediction(mean_filter_max(maps, self.score_filter).cpu(), maps.cpu())
