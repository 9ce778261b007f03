"""PaDiM (Defard et al., ICPR 2020 workshops), faithful to the reference reimplementation
(xiahaifeng1995/PaDiM-Anomaly-Detection-Localization-master ``main.py``; there is no official code).

Layers 1–3 of a frozen backbone, the deeper two nearest-upsampled to the first layer's grid and
concatenated (layer1 channels first); a random subset of ``n_features`` channels drawn once with a
fixed seed and stored with the model; one Gaussian per grid position with the unbiased covariance
+ ``epsilon``·I; Mahalanobis distance (square root) per position; bilinear upsampling to the input
size, Gaussian blur σ = 4; image score = max of the map.

Memory: mean and covariance are accumulated batch by batch (Chan et al.'s pairwise update of the
mean and the centred second moment, per position), never the whole training embedding; the
covariance is inverted in place, position chunk by position chunk, and only the inverse is kept.
Peak memory is one [P, d, d] float32 buffer plus chunk-sized float64 temporaries.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from tqdm import tqdm

from adbench.components.postprocess import gaussian_blur, upsample
from adbench.data import Batch
from adbench.method import Context, Method, Prediction
from adbench.registry import register_method

PAPER_FEATURES = {"resnet18": 100, "wide_resnet50_2": 550}  # Rd100 / Rd550 (paper §4; spec §3.1)
CHUNK_BYTES = 64 * 2**20  # float64 workspace per position chunk


def default_n_features(backbone: str, total: int) -> int:
    """Channels kept by PaDiM: the paper's 100 (ResNet-18) / 550 (WRN-50-2); for other backbones
    all channels if ``total`` ≤ 100, else max(100, round(total · 550 / 1792)) (the WRN-50 ratio,
    but never fewer than ResNet-18's 100)."""
    name = backbone.split(".")[0]
    if name in PAPER_FEATURES:
        return min(PAPER_FEATURES[name], total)
    if total <= 100:
        return total
    return min(total, max(100, round(total * 550 / 1792)))


def concat_embedding(features: list[torch.Tensor]) -> torch.Tensor:
    """Layer maps [B, C_l, h_l, w_l] (finest first) → [B, ΣC_l, h_0, w_0], deeper layers
    nearest-upsampled to the first layer's grid (the reference ``embedding_concat``)."""
    grid = features[0].shape[-2:]
    return torch.cat([f if f.shape[-2:] == grid else F.interpolate(f, size=grid, mode="nearest")
                      for f in features], dim=1)


class GaussianAccumulator:
    """Streaming mean and covariance of one d-dimensional Gaussian per position.

    ``update(x)`` with x [P, n, d] (n new samples at each of P positions) merges the batch's mean
    and centred second moment into the running ones (Chan, Golub & LeVeque's pairwise update,
    float64 per chunk of positions, stored in float32). ``covariance()`` → [P, d, d], unbiased
    (divides by N − 1), equal to ``numpy.cov`` of all samples.
    """

    def __init__(self, positions: int, dim: int, device: torch.device) -> None:
        self.count = 0
        self.mean = torch.zeros(positions, dim, dtype=torch.float64, device=device)
        self.moment = torch.zeros(positions, dim, dim, dtype=torch.float32, device=device)
        self.chunk = max(1, CHUNK_BYTES // (8 * dim * dim))

    def update(self, x: torch.Tensor) -> None:
        n_new = x.shape[1]
        total = self.count + n_new
        for start in range(0, x.shape[0], self.chunk):
            part = x[start : start + self.chunk].double()  # [p, n, d]
            batch_mean = part.mean(dim=1)
            centred = part - batch_mean[:, None]
            moment = centred.transpose(1, 2) @ centred  # [p, d, d]
            delta = batch_mean - self.mean[start : start + self.chunk]
            moment += delta[:, :, None] * delta[:, None, :] * (self.count * n_new / total)
            self.moment[start : start + self.chunk] += moment.float()
            self.mean[start : start + self.chunk] += delta * (n_new / total)
        self.count = total

    def covariance(self) -> torch.Tensor:
        if self.count < 2:
            raise ValueError(f"PaDiM needs at least 2 training images, got {self.count}")
        return self.moment / (self.count - 1)

    def precision(self, epsilon: float) -> torch.Tensor:
        """(Σ + ε·I)⁻¹ per position, [P, d, d] float32, computed in place of the moment buffer."""
        if self.count < 2:
            raise ValueError(f"PaDiM needs at least 2 training images, got {self.count}")
        eye = torch.eye(self.moment.shape[-1], dtype=torch.float64, device=self.moment.device)
        for start in range(0, self.moment.shape[0], self.chunk):
            cov = self.moment[start : start + self.chunk].double() / (self.count - 1) + epsilon * eye
            self.moment[start : start + self.chunk] = torch.linalg.inv(cov).float()
        precision, self.moment = self.moment, torch.empty(0)
        return precision


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """sqrt((x − μ)ᵀ Σ⁻¹ (x − μ)) per sample and position: x [P, n, d], mean [P, d], precision
    [P, d, d] → [P, n] (clamped at 0 before the square root)."""
    delta = x - mean[:, None]
    squared = ((delta @ precision) * delta).sum(dim=-1)
    return squared.clamp_min(0).sqrt()


@register_method("padim")
class PaDiM(Method):
    """PaDiM with the reference defaults (layers 1–3, Rd100 / Rd550, ε = 0.01, σ = 4)."""

    uses_backbone = True

    def __init__(
        self,
        n_features: int | None = None,
        channel_seed: int | None = 1024,
        epsilon: float = 0.01,
        blur_sigma: float = 4.0,
    ) -> None:
        super().__init__()
        if n_features is not None and n_features < 1:
            raise ValueError(f"method.params.n_features={n_features} must be ≥ 1 (or null for the default)")
        self.n_features = n_features
        self.channel_seed = channel_seed
        self.epsilon = epsilon
        self.blur_sigma = blur_sigma
        self.register_buffer("channel_index", torch.empty(0, dtype=torch.long))
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("precision", torch.empty(0))

    def draw_channels(self, backbone: str, total: int, seed: int) -> torch.Tensor:
        """The reference draw: ``random.seed(s); random.sample(range(total), d)`` → long [d]."""
        d = self.n_features if self.n_features is not None else default_n_features(backbone, total)
        if d > total:
            raise ValueError(f"method.params.n_features={d} exceeds the {total} channels of layers 1-3")
        return torch.tensor(random.Random(seed).sample(range(total), d), dtype=torch.long)

    def embed(self, batch: Batch, ctx: Context) -> torch.Tensor:
        """Batch → selected embedding [B, d, h, w] (float32) on ``ctx.device``."""
        feats = ctx.features(batch)
        emb = concat_embedding([feats[name] for name in ctx.features.layers])
        return emb.index_select(1, self.channel_index.to(emb.device))

    def fit(self, ctx: Context) -> None:
        assert ctx.features is not None
        total = sum(ctx.features.backbone.channels)
        seed = ctx.seed if self.channel_seed is None else self.channel_seed
        self.channel_index = self.draw_channels(ctx.features.backbone.spec, total, seed).to(ctx.device)
        accumulator: GaussianAccumulator | None = None
        batches = tqdm(ctx.train_batches(), desc="padim: fit", disable=not ctx.progress, leave=False)
        for batch in batches:
            emb = self.embed(batch, ctx)
            b, d, h, w = emb.shape
            if accumulator is None:
                accumulator = GaussianAccumulator(h * w, d, ctx.device)
            accumulator.update(emb.reshape(b, d, h * w).permute(2, 0, 1))
        assert accumulator is not None, "empty training set"
        self.mean = accumulator.mean.float()
        self.precision = accumulator.precision(self.epsilon)

    @torch.no_grad()
    def predict(self, batch: Batch, ctx: Context) -> Prediction:
        if self.precision.numel() == 0:
            raise RuntimeError("PaDiM.predict called before fit")
        emb = self.embed(batch, ctx)
        b, d, h, w = emb.shape
        x = emb.reshape(b, d, h * w).permute(2, 0, 1)  # [P, B, d]
        chunk = max(1, CHUNK_BYTES // (4 * d * d))
        dist = torch.cat([
            mahalanobis(x[s : s + chunk], self.mean[s : s + chunk], self.precision[s : s + chunk])
            for s in range(0, h * w, chunk)
        ])  # [P, B]
        maps = upsample(dist.T.reshape(b, h, w), batch.images.shape[-2:])
        maps = gaussian_blur(maps, self.blur_sigma)
        return Prediction(maps.reshape(b, -1).max(dim=1).values.cpu(), maps.cpu())
