"""GLASS (Chen et al., ECCV 2024), faithful to the official code cqylunlun/GLASS.

Frozen backbone, layer2 + layer3 aggregated as PatchCore (:mod:`adbench.components.embedding`) to 1536-d;
feature adaptor Linear 1536 → 1536 (Adam 1e-4, wd 1e-5); discriminator Linear 1536 → 1024,
BatchNorm, LeakyReLU 0.2, Linear → 1 (no bias), sigmoid (AdamW 2e-4). Per epoch the per-position
centre c [h·w, D] is the mean adapted training feature. One training step on a batch of normal
images (``glass.py::_train_discriminator``):

* normal features u (cached backbone features) → BCE(D(u), 0);
* Global Anomaly Synthesis: g = u + N(0, 0.015²); 20 steps g += 0.001 · ∇/‖∇‖ of BCE(D(g), 1),
  truncated projection after every 5th step — manifold: ‖g − u‖ clamped to [0.5, 1.0];
  hypersphere: ‖g − c‖ clamped to [r_t, 2 r_t], r_t the 0.75-quantile of ‖v − c‖ over the normal
  features and the LAS features outside the mask → BCE(D(g), 1) of the 21st evaluation;
* Local Anomaly Synthesis: Perlin masks (:func:`~adbench.components.synthesis.perlin.glass_las_masks`)
  inside the foreground, a texture with 3 of 9 augmentations blended with β ~ N(0.5, 0.1²)
  clipped to [0.2, 0.8], the backbone run live on the result; labels = 8×8 max-pooled mask;
  hypersphere: masked features projected to ‖v − c‖ ∈ [2 r_t, 4 r_t]; focal loss (γ = 2) on the
  hardest 50 % of positions by (D − label)².

Scoring: discriminator map → bilinear to the input size → Gaussian σ = 4; image score = max of the
raw patch scores. A fixed number of epochs; the final model is evaluated (the official per-epoch
test-set checkpoint selection is not reproduced).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter
from torch import nn
from tqdm import tqdm

from adbench.components.embedding import patch_embedding
from adbench.components.losses import focal_loss, hardest_mask
from adbench.components.postprocess import gaussian_blur, upsample
from adbench.components.synthesis.augment import GLASS_AUGMENTATIONS, random_augment
from adbench.components.synthesis.blend import blend, denormalize, glass_beta, normalize
from adbench.components.synthesis.foreground import (
    candidate_foreground,
    finalize_foreground,
    foreground_from_folder,
    has_background,
)
from adbench.components.synthesis.perlin import glass_las_masks
from adbench.components.synthesis.textures import (
    build_texture_source,
    center_crop,
    draw_indices,
    resize_texture,
)
from adbench.data import Batch
from adbench.method import Context, Method, Prediction
from adbench.registry import register_method

# Official per-class choice of GLASS-j (datasets/excel/<dataset>_distribution.xlsx; spec glass-resad.md
# §1.9): True = hypersphere, False = manifold. Classes not listed use :func:`spectrogram_judge`.
_MVTEC_H = ("bottle", "cable", "pill", "screw", "transistor")
_MVTEC_M = (
    "carpet",
    "grid",
    "leather",
    "tile",
    "wood",
    "capsule",
    "hazelnut",
    "metal_nut",
    "toothbrush",
    "zipper",
)
_VISA_H = ("cashew", "fryum", "pcb1", "pcb2", "pcb4", "pipe_fryum")
_VISA_M = ("candle", "capsules", "chewinggum", "macaroni1", "macaroni2", "pcb3")
_MPDD_M = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")
HYPERSPHERE_TABLE: dict[str, dict[str, bool]] = {
    "mvtec": {**dict.fromkeys(_MVTEC_H, True), **dict.fromkeys(_MVTEC_M, False)},
    "visa": {**dict.fromkeys(_VISA_H, True), **dict.fromkeys(_VISA_M, False)},
    "mpdd": dict.fromkeys(_MPDD_M, False),
}
DISTRIBUTIONS = ("manifold", "hypersphere", "table")


def spectrogram_judge(mean_image: np.ndarray) -> bool:
    """GLASS ``utils.distribution_judge``: True (hypersphere) for a mean training image uint8 RGB [H, W, 3].

    289×289 bilinear resize → grey (0.299 R + 0.587 G + 0.114 B) → 39×39 box blur (reflect-101
    borders) → |DFT| (centred) in 20·ln units → points above 170. Hypersphere when (l1 or l2
    density of those points > 0.21) and their max radius > 12 and there are more than 60.
    """
    img = torch.from_numpy(np.ascontiguousarray(mean_image)).permute(2, 0, 1)[None].float()
    img = F.interpolate(img, size=(289, 289), mode="bilinear", align_corners=False)[0].round().clamp(0, 255)
    gray = np.round(0.299 * img[0].numpy() + 0.587 * img[1].numpy() + 0.114 * img[2].numpy())
    gray = np.round(uniform_filter(gray, size=39, mode="mirror"))
    spectrum = np.fft.fftshift(np.fft.fft2(gray.astype(np.float32)))
    with np.errstate(divide="ignore"):
        bright = 20 * np.log(np.abs(spectrum)) > 170
    height, width = bright.shape
    cy, cx = height // 2, width // 2
    ys, xs = np.nonzero(bright)
    if len(ys) == 0:
        return False
    dist = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    side_x, side_y, radius = np.abs(xs - cx).max(), np.abs(ys - cy).max(), dist.max()
    yy, xx = np.indices((2 * height, 2 * width))
    l1_density = len(dist) / (4 * max(side_x, 1) * max(side_y, 1))
    l2_density = len(dist) / (np.sum(np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) <= radius) + 1e-10)
    return bool((l1_density > 0.21 or l2_density > 0.21) and radius > 12 and len(dist) > 60)


class Discriminator(nn.Module):
    """D_ψ: Linear(d → hidden) → BatchNorm1d → LeakyReLU(0.2) → Linear(hidden → 1, no bias) → sigmoid.

    Xavier-normal weights as ``model.py::init_weight``. [N, d] → probabilities [N, 1].
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
        self.tail = nn.Sequential(nn.Linear(hidden, 1, bias=False), nn.Sigmoid())
        for layer in (self.body[0], self.tail[0]):
            nn.init.xavier_normal_(layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(x))


@register_method("glass")
class GLASS(Method):
    """GLASS with the official code's defaults; ``distribution`` picks GLASS-m / -h / -j."""

    uses_backbone = True

    def __init__(
        self,
        distribution: str = "table",
        epochs: int = 640,
        samples_per_epoch: int = 392,
        patch_size: int = 3,
        pretrain_dim: int = 1536,
        target_dim: int = 1536,
        dsc_hidden: int = 1024,
        lr: float = 1e-4,
        adaptor_weight_decay: float = 1e-5,
        noise_std: float = 0.015,
        ascent_steps: int = 20,
        ascent_step_size: float = 0.001,
        project_every: int = 5,
        manifold_radius: float = 0.5,
        radius_quantile: float = 0.75,
        hard_quantile: float = 0.5,
        focal_gamma: float = 2.0,
        beta_mean: float = 0.5,
        beta_std: float = 0.1,
        beta_range: tuple[float, float] = (0.2, 0.8),
        n_augment: int = 3,
        texture_source: str = "builtin",
        texture_root: str | None = None,
        texture_download: bool = False,
        foreground: str = "auto",
        blur_sigma: float = 4.0,
        feature_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"method.params.distribution={distribution!r}; use one of {DISTRIBUTIONS}")
        self.distribution = distribution
        self.epochs = epochs
        self.samples_per_epoch = samples_per_epoch
        self.patch_size = patch_size
        self.pretrain_dim = pretrain_dim
        self.target_dim = target_dim
        self.lr = lr
        self.adaptor_weight_decay = adaptor_weight_decay
        self.noise_std = noise_std
        self.ascent_steps = ascent_steps
        self.ascent_step_size = ascent_step_size
        self.project_every = project_every
        self.manifold_radius = manifold_radius
        self.radius_quantile = radius_quantile
        self.hard_quantile = hard_quantile
        self.focal_gamma = focal_gamma
        self.beta_mean = beta_mean
        self.beta_std = beta_std
        self.beta_range = tuple(beta_range)
        self.n_augment = n_augment
        self.texture_source = texture_source
        self.texture_root = texture_root
        self.texture_download = texture_download
        self.foreground = foreground
        self.blur_sigma = blur_sigma
        self.feature_scale = feature_scale
        self.adaptor = nn.Linear(target_dim, target_dim)
        nn.init.xavier_normal_(self.adaptor.weight)
        self.discriminator = Discriminator(target_dim, dsc_hidden)
        self.register_buffer("hypersphere", torch.tensor(False))

    # --- features ---------------------------------------------------------------------------

    def embed(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Backbone features → PatchCore-aggregated patch features [B·h·w, target_dim] (row-major
        positions per image), times ``feature_scale`` (1 = official), and the grid (h, w)."""
        emb = patch_embedding(list(feats.values()), self.patch_size, self.pretrain_dim, self.target_dim)
        emb = emb * self.feature_scale if self.feature_scale != 1.0 else emb
        b, d, h, w = emb.shape
        return emb.permute(0, 2, 3, 1).reshape(b * h * w, d), (h, w)

    @torch.no_grad()
    def _center(self, ctx: Context) -> torch.Tensor:
        """Per-position mean adapted feature [h·w, D]: mean over batches of batch means (official)."""
        total, n_batches = None, 0
        for batch in ctx.train_batches():
            emb, _ = self.embed(ctx.features(batch))
            mean = self.adaptor(emb).reshape(batch.images.shape[0], -1, self.target_dim).mean(dim=0)
            total = mean if total is None else total + mean
            n_batches += 1
        return total / n_batches

    # --- set-up: distribution, foreground, textures -----------------------------------------

    def _mean_image(self, ctx: Context) -> np.ndarray:
        """Mean of the (normalised) training images, as uint8 RGB [S, S, 3] in pixel space."""
        total, n_batches = None, 0
        for batch in ctx.train_batches():
            mean = batch.images.mean(dim=0)
            total = mean if total is None else total + mean
            n_batches += 1
        pixels = denormalize((total / n_batches)[None], ctx.transform.mean, ctx.transform.std)[0]
        return (pixels.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()

    def _choose_distribution(self, ctx: Context) -> None:
        dataset, name = ctx.category.dataset, ctx.category.name
        if self.distribution != "table":
            hypersphere, how = self.distribution == "hypersphere", "forced"
        elif name in HYPERSPHERE_TABLE.get(dataset, {}):
            hypersphere, how = HYPERSPHERE_TABLE[dataset][name], f"official {dataset} table"
        else:
            hypersphere, how = (
                spectrogram_judge(self._mean_image(ctx)),
                "spectrogram rule on the training images",
            )
        self.hypersphere.fill_(hypersphere)
        self.info["distribution"] = f"{'hypersphere' if hypersphere else 'manifold'} ({how})"

    def _foreground_masks(self, ctx: Context) -> dict[str, torch.Tensor]:
        """Foreground mask bool [S, S] per training image path: ``none`` (whole image), ``auto``
        (:mod:`adbench.components.synthesis.foreground` rule) or a folder
        ``<foreground>/<category>/<file>``."""
        paths = [s.image_path for s in ctx.category.train]
        size = ctx.transform.crop
        if self.foreground == "none":
            self.info["foreground"] = "none (whole image)"
            return {p: torch.ones(size, size, dtype=torch.bool) for p in paths}
        if self.foreground != "auto":
            folder = f"{self.foreground}/{ctx.category.name}"
            self.info["foreground"] = f"masks from {folder}"
            return dict(zip(paths, foreground_from_folder(paths, folder, ctx.transform)))
        candidates, order = [], []
        for batch in ctx.train_batches():
            pixels = denormalize(batch.images, ctx.transform.mean, ctx.transform.std).clamp(0, 1)
            candidates.append(candidate_foreground(pixels))
            order += batch.paths
        masks = torch.cat(candidates)
        background = has_background(masks)
        self.info["foreground"] = "auto: " + ("object on a background" if background else "whole image")
        return dict(zip(order, finalize_foreground(masks, background)))

    def _textures(self, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` augmented textures float [n, 3, size, size] in [0, 1]: Resize(size) (shorter side)
        → 3 of 9 augmentations → CenterCrop(size), as ``rand_augmenter``."""
        out = []
        for index in draw_indices(self._source, n, generator):
            image = resize_texture(self._source.image(index), size, "shorter")
            image = random_augment(image, GLASS_AUGMENTATIONS, generator, self.n_augment)
            out.append(center_crop(image, size))
        return torch.stack(out).float() / 255.0

    def synthesise(
        self, batch: Batch, ctx: Context, grid: tuple[int, int], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """LAS images (normalised like ``batch.images``) [B, 3, S, S] and feature-level labels bool [B, h, w].

        Blending is done in [0, 1] pixel space (un-normalise → blend → re-normalise), which equals
        the official blending of normalised tensors since the weights sum to one."""
        b, _, size, _ = batch.images.shape
        foreground = torch.stack([self._fg[p] for p in batch.paths])
        pixel_masks, feature_masks = glass_las_masks(foreground, grid, generator)
        beta = glass_beta(b, generator, self.beta_mean, self.beta_std, *self.beta_range)
        pixels = denormalize(batch.images, ctx.transform.mean, ctx.transform.std)
        mixed = blend(pixels, self._textures(b, size, generator), pixel_masks, beta)
        return normalize(mixed, ctx.transform.mean, ctx.transform.std), feature_masks

    # --- training -----------------------------------------------------------------------------

    def project(
        self,
        points: torch.Tensor,
        origin: torch.Tensor,
        low: float | torch.Tensor,
        high: float | torch.Tensor,
    ) -> torch.Tensor:
        """Truncated projection: rescale points − origin [N, D] to norm clamp(‖·‖, low, high)."""
        offset = points - origin
        norm = torch.linalg.vector_norm(offset, dim=1)
        scale = torch.clamp(norm, low, high) / (norm + 1e-10)
        return origin + scale[:, None] * offset

    def project_las(
        self, fake: torch.Tensor, labels: torch.Tensor, center: torch.Tensor, r_t: torch.Tensor
    ) -> torch.Tensor:
        """LAS features [N, D] with, under the hypersphere setting, the masked ones (labels bool [N])
        moved to ‖v − c‖ ∈ [2 r_t, 4 r_t]; unchanged under the manifold setting (official code)."""
        if not self.hypersphere or not labels.any():
            return fake
        fake = fake.clone()
        fake[labels] = self.project(fake[labels], center[labels], 2 * r_t, 4 * r_t)
        return fake

    def gas(
        self, true: torch.Tensor, center: torch.Tensor, r_t: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global Anomaly Synthesis from adapted normal features [N, D] (center [N, D]).

        Returns (GAS features [N, D], BCE on normal, BCE on GAS) of the final discriminator call."""
        noise = torch.randn(true.shape, generator=generator).to(true.device) * self.noise_std
        fake = true + noise
        if not fake.requires_grad:  # no adaptor graph (pre_proj = 0 in the code): ascend on a leaf
            fake.requires_grad_(True)
        for step in range(self.ascent_steps + 1):
            scores = self.discriminator(torch.cat([true, fake]))
            true_loss = F.binary_cross_entropy(scores[: len(true)], torch.zeros_like(scores[: len(true)]))
            gas_loss = F.binary_cross_entropy(scores[len(true) :], torch.ones_like(scores[len(true) :]))
            if step == self.ascent_steps:
                break
            (grad,) = torch.autograd.grad(gas_loss, [fake])
            grad = grad / (torch.linalg.vector_norm(grad, dim=1, keepdim=True) + 1e-10)
            with torch.no_grad():
                fake.add_(self.ascent_step_size * grad)
            if (step + 1) % self.project_every == 0:
                if self.hypersphere:
                    fake = self.project(fake, center, r_t, 2 * r_t)
                else:
                    fake = self.project(fake, true, self.manifold_radius, 2 * self.manifold_radius)
        return fake, true_loss, gas_loss

    def train_step(
        self,
        normal: torch.Tensor,
        las: torch.Tensor,
        labels: torch.Tensor,
        center: torch.Tensor,
        generator: torch.Generator,
    ) -> dict[str, float]:
        """One optimisation step. normal, las: aggregated features [N, D] (N = B·h·w); labels bool [N];
        center: per-position centre repeated per image [N, D]. Returns loss values and r_t."""
        self.adaptor_opt.zero_grad()
        self.dsc_opt.zero_grad()
        true, fake = self.adaptor(normal), self.adaptor(las)
        with torch.no_grad():
            points = torch.cat([fake[~labels], true]) - torch.cat([center[~labels], center])
            r_t = torch.quantile(torch.linalg.vector_norm(points, dim=1), self.radius_quantile)
        _, true_loss, gas_loss = self.gas(true, center, r_t, generator)
        scores = self.discriminator(self.project_las(fake, labels, center, r_t))
        target = labels.float()[:, None]
        keep = (
            hardest_mask((scores - target) ** 2, self.hard_quantile)
            if self.hard_quantile > 0
            else torch.ones_like(scores, dtype=torch.bool)
        )
        kept = scores[keep][:, None]
        las_loss = focal_loss(torch.cat([1 - kept, kept], dim=1), target[keep], gamma=self.focal_gamma)
        loss = true_loss + gas_loss + las_loss
        loss.backward()
        self.adaptor_opt.step()
        self.dsc_opt.step()
        return {
            "loss": loss.item(),
            "true": true_loss.item(),
            "gas": gas_loss.item(),
            "las": las_loss.item(),
            "r_t": r_t.item(),
        }

    def fit(self, ctx: Context) -> None:
        self.adaptor_opt = torch.optim.Adam(
            self.adaptor.parameters(), self.lr, weight_decay=self.adaptor_weight_decay
        )
        self.dsc_opt = torch.optim.AdamW(self.discriminator.parameters(), lr=2 * self.lr)
        generator = torch.Generator().manual_seed(ctx.seed)
        start = time.perf_counter()
        self._choose_distribution(ctx)
        self._fg = self._foreground_masks(ctx)
        self._source = build_texture_source(
            self.texture_source, self.texture_root, self.texture_download, progress=ctx.progress
        )
        self.info["texture_source"] = self._source.describe()
        self.timings["setup_s"] = time.perf_counter() - start
        synth_s, steps, history = 0.0, 0, []
        start = time.perf_counter()
        self.loss_history = []
        for epoch in tqdm(range(self.epochs), desc="glass: epochs", disable=not ctx.progress, leave=False):
            first_step = steps
            self.adaptor.eval()
            center = self._center(ctx)
            self.adaptor.train()
            self.discriminator.train()
            seen = 0
            for batch in ctx.train_batches(shuffle=True, seed=ctx.seed + epoch):
                normal, grid = self.embed(ctx.features(batch))
                tick = time.perf_counter()
                las_images, labels = self.synthesise(batch, ctx, grid, generator)
                synth_s += time.perf_counter() - tick
                las, _ = self.embed(ctx.features.live(las_images))
                reps = center.repeat(batch.images.shape[0], 1)
                history.append(
                    self.train_step(normal, las, labels.reshape(-1).to(normal.device), reps, generator)
                )
                steps += 1
                seen += batch.images.shape[0]
                if seen > self.samples_per_epoch:
                    break
            self.loss_history.append(float(np.mean([h["loss"] for h in history[first_step:]])))
        self.timings.update(
            {
                "train_s": time.perf_counter() - start,
                "synthesis_s": synth_s,
                "steps": steps,
                "step_ms": 1000 * (time.perf_counter() - start) / max(steps, 1),
            }
        )
        last = history[-min(len(history), 5) :]
        self.timings.update({f"final_{k}": float(np.mean([h[k] for h in last])) for k in last[0]})

    @torch.no_grad()
    def predict(self, batch: Batch, ctx: Context) -> Prediction:
        emb, (h, w) = self.embed(ctx.features(batch))
        scores = self.discriminator(self.adaptor(emb)).reshape(batch.images.shape[0], h, w)
        maps = gaussian_blur(upsample(scores, batch.images.shape[-2:]), self.blur_sigma)
        return Prediction(scores.flatten(1).max(dim=1).values.cpu(), maps.cpu())
