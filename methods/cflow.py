"""CFLOW-AD (Gudovskiy et al., WACV 2022), faithful to gudovskiy/cflow-ad (``train.py``,
``model.py``, ``config.py``, ``custom_models/utils.py``) except for the map normalisation.

One conditional flow (:func:`adbench.components.flows.conditional_flow`: 8 × FrEIA ``AllInOneBlock``, clamp
1.9, subnet Linear(in → 2·in) → ReLU → Linear) per pooled layer, conditioned on the 128-d 2-D
sin/cos positional encoding. Training: per image batch and per layer, all B·H·W feature vectors
("fibres") with their encodings are shuffled and cut into fibre batches of 256; one Adam step per
fibre batch (one optimiser over all decoders) on −logsigmoid(log p / C). The learning rate warms
up linearly from lr/10 over the first meta-epochs and decays with a cosine per meta-epoch to
lr·10⁻³. The final model is evaluated (the official code reports the best epoch on the test set).

Anomaly map. The official code subtracts, per layer, the maximum log-likelihood over the whole
*test set* before ``exp`` and inverts the summed maps with the test-set maximum, so the weighting
of the scales depends on the test set (cflow-ad issue #24). Here both constants come from the
training images after training (``normalizer="train_max"``, the only one implemented): per layer
p_l = exp(log p_l − max_train log p_l), bilinearly upsampled (align_corners=True) to the input size
and summed; anomaly = max over training maps of Σ_l p_l − Σ_l p_l. Image score = max of the map.

Augmentation: ``rotation_degrees`` > 0 is the official RandomRotation(±5°) on train images; the
backbone then runs live on the rotated images every step. With 0, training fibres come from the
feature cache and no meta-epoch re-runs the backbone.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from adbench.components.flows import conditional_flow, flow_log_prob, positional_encoding_2d
from adbench.components.postprocess import upsample
from adbench.data import Batch
from adbench.method import Context, Method, Prediction
from adbench.registry import register_method

NORMALIZERS = ("train_max",)
INFERENCE_FIBRES = 4096  # feature vectors per flow call at inference (memory only; no effect on values)


def cflow_learning_rate(lr: float, meta_epoch: int, meta_epochs: int, progress: float,
                        warmup_meta_epochs: int, decay_rate: float = 0.1) -> float:
    """The official schedule (train.py ``adjust_learning_rate`` + ``warmup_learning_rate``).

    Cosine per meta-epoch from ``lr`` to η_min = lr·decay_rate³; during the first
    ``warmup_meta_epochs`` a linear ramp from lr/10 to the cosine value at the end of warm-up,
    where ``progress`` ∈ [0, 1) is the fraction of the current meta-epoch's image batches done.
    """
    eta_min = lr * decay_rate**3
    if meta_epoch < warmup_meta_epochs:
        warm_to = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * warmup_meta_epochs / meta_epochs)) / 2
        fraction = (meta_epoch + progress) / warmup_meta_epochs
        return lr / 10 + fraction * (warm_to - lr / 10)
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * meta_epoch / meta_epochs)) / 2


def rotate(images: torch.Tensor, degrees: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Rotate images [B, 3, H, W] about their centre by ``degrees`` [B] (counter-clockwise), nearest
    sampling, uncovered pixels set to ``fill`` [3] (torchvision RandomRotation's defaults)."""
    theta = -torch.deg2rad(degrees.float())  # affine_grid maps output to input coordinates
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    matrix = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    grid = F.affine_grid(matrix.to(images.device), list(images.shape), align_corners=False)
    shifted = images - fill.view(1, -1, 1, 1)
    out = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out + fill.view(1, -1, 1, 1)


@register_method("cflow")
class CFlow(Method):
    """CFLOW-AD with the official defaults (3 layers, 8 blocks, α = 1.9, P = 128, N = 256, 25 × 8)."""

    uses_backbone = True

    def __init__(
        self,
        n_blocks: int = 8,
        clamp: float = 1.9,
        cond_channels: int = 128,
        permute_soft: bool = True,
        fiber_batch: int = 256,
        image_batch: int = 32,
        lr: float = 2e-4,
        meta_epochs: int = 25,
        sub_epochs: int = 8,
        warmup_meta_epochs: int = 2,
        rotation_degrees: float = 5.0,
        normalizer: str = "train_max",
        zero_grad_set_to_none: bool = False,
    ) -> None:
        super().__init__()
        if normalizer not in NORMALIZERS:
            raise ValueError(
                f"method.params.normalizer={normalizer!r}: only {NORMALIZERS} is implemented; the official "
                "test-set maximum is deliberately not available (it makes scores depend on the test set)"
            )
        if cond_channels % 4 != 0:
            raise ValueError(f"method.params.cond_channels={cond_channels} must be divisible by 4")
        self.n_blocks = n_blocks
        self.clamp = clamp
        self.cond_channels = cond_channels
        self.permute_soft = permute_soft
        self.fiber_batch = fiber_batch
        self.image_batch = image_batch
        self.lr = lr
        self.meta_epochs = meta_epochs
        self.sub_epochs = sub_epochs
        self.warmup_meta_epochs = warmup_meta_epochs
        self.rotation_degrees = rotation_degrees
        self.normalizer = normalizer
        self.zero_grad_set_to_none = zero_grad_set_to_none
        self.decoders = nn.ModuleList()
        self.register_buffer("layer_log_prob_max", torch.empty(0))
        self.register_buffer("score_max", torch.empty(0))

    def build(self, channels: list[int], seed: int) -> None:
        """One flow per layer; the permutations come from numpy's global RNG (FrEIA), seeded here."""
        state = np.random.get_state()
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.decoders = nn.ModuleList(
            conditional_flow(c, self.cond_channels, self.n_blocks, self.clamp, self.permute_soft)
            for c in channels
        )
        np.random.set_state(state)

    def build_for_state(self, state: dict[str, torch.Tensor]) -> None:
        n_layers = len({key.split(".")[1] for key in state if key.startswith("decoders.")})
        self.build([state[f"decoders.{i}.module_list.0.global_scale"].shape[1] for i in range(n_layers)], 0)

    def _conditions(self, feature: torch.Tensor) -> torch.Tensor:
        """Positional encodings of every position of [B, C, H, W] → [B·H·W, P] (row-major per image)."""
        b, _, h, w = feature.shape
        enc = positional_encoding_2d(self.cond_channels, h, w).to(feature.device)
        return enc.reshape(self.cond_channels, h * w).T.repeat(b, 1)

    def layer_log_prob(self, layer: int, feature: torch.Tensor) -> torch.Tensor:
        """Per-dimension log-likelihood of every position: [B, C, H, W] → [B, H, W]."""
        b, c, h, w = feature.shape
        x = feature.permute(0, 2, 3, 1).reshape(-1, c)
        cond = self._conditions(feature)
        step = INFERENCE_FIBRES
        out = [flow_log_prob(self.decoders[layer], x[s : s + step], cond[s : s + step])
               for s in range(0, x.shape[0], step)]
        return torch.cat(out).reshape(b, h, w)

    def fit(self, ctx: Context) -> None:
        assert ctx.features is not None
        layers = ctx.features.layers
        device = ctx.device
        generator = torch.Generator().manual_seed(ctx.seed)
        images, feats = self._training_data(ctx)
        n_images = len(images) if images is not None else len(feats[layers[0]])
        channels = list(ctx.features.backbone.channels)
        self.build(channels, ctx.seed)
        self.to(device)
        optimizer = torch.optim.Adam(self.decoders.parameters(), lr=self.lr)
        batch = min(self.image_batch, n_images)
        per_sub_epoch = n_images // batch  # drop_last=True as the official loader
        fill = None
        if images is not None:
            mean, std = ctx.transform.mean or (0.0, 0.0, 0.0), ctx.transform.std or (1.0, 1.0, 1.0)
            fill = -torch.tensor(mean) / torch.tensor(std)  # black after normalisation
        total = self.meta_epochs * self.sub_epochs
        bar = tqdm(total=total, desc="cflow: train", disable=not ctx.progress, leave=False)
        start = time.perf_counter()
        self.loss_history = []  # mean training loss per sub-epoch (all layers' fibre batches)
        for meta_epoch in range(self.meta_epochs):
            for sub_epoch in range(self.sub_epochs):
                losses: list[torch.Tensor] = []
                order = torch.randperm(n_images, generator=generator)
                for i in range(per_sub_epoch):
                    progress = (i + sub_epoch * per_sub_epoch) / (per_sub_epoch * self.sub_epochs)
                    for group in optimizer.param_groups:
                        group["lr"] = cflow_learning_rate(self.lr, meta_epoch, self.meta_epochs, progress,
                                                          self.warmup_meta_epochs)
                    chosen = order[i * batch : (i + 1) * batch]
                    if images is not None:
                        uniform = torch.rand(len(chosen), generator=generator)
                        angles = (uniform * 2 - 1) * self.rotation_degrees
                        batch_feats = ctx.features.live(rotate(images[chosen], angles, fill))
                    else:
                        batch_feats = {name: feats[name][chosen.to(feats[name].device)] for name in layers}
                    for layer, name in enumerate(layers):
                        feature = batch_feats[name].float().to(device)
                        losses += self._train_layer(layer, feature, optimizer, generator)
                self.loss_history.append(torch.stack(losses).mean().item())
                bar.update()
                bar.set_postfix(loss=f"{self.loss_history[-1]:.4f}")
        bar.close()
        self.timings["train_s"] = time.perf_counter() - start
        self.eval()
        start = time.perf_counter()
        self._fit_normalizer(ctx)
        self.timings["normalizer_s"] = time.perf_counter() - start

    def _training_data(self, ctx: Context) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Without augmentation: every training image's cached features (fp16, on the device).
        With rotation: the transformed training images [N, 3, S, S] on the CPU."""
        assert ctx.features is not None
        if self.rotation_degrees > 0:
            return torch.cat([b.images for b in ctx.train_batches()]), {}
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in ctx.features.layers}
        for batch in ctx.train_batches():
            for name, tensor in ctx.features(batch).items():
                parts[name].append(tensor.half())
        return None, {name: torch.cat(tensors) for name, tensors in parts.items()}

    def _train_layer(self, layer: int, feature: torch.Tensor, optimizer: torch.optim.Optimizer,
                     generator: torch.Generator) -> list[torch.Tensor]:
        """One pass over the shuffled fibres of one layer of one image batch (one step per fibre
        batch); returns the (detached) loss of every step."""
        c = feature.shape[1]
        x = feature.permute(0, 2, 3, 1).reshape(-1, c)
        cond = self._conditions(feature)
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        n_fibre_batches = x.shape[0] // self.fiber_batch
        if n_fibre_batches == 0:
            raise ValueError(f"cflow: {x.shape[0]} fibres in layer {layer} < fiber_batch={self.fiber_batch}; "
                             "use a larger image batch or input size")
        losses = []
        for f in range(n_fibre_batches):
            idx = perm[f * self.fiber_batch : (f + 1) * self.fiber_batch]
            log_prob = flow_log_prob(self.decoders[layer], x[idx], cond[idx])
            loss = -F.logsigmoid(log_prob).mean()
            optimizer.zero_grad(set_to_none=self.zero_grad_set_to_none)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return losses

    @torch.no_grad()
    def _fit_normalizer(self, ctx: Context) -> None:
        """Per-layer max log-likelihood and the max summed map over the (unaugmented) training images."""
        assert ctx.features is not None
        per_layer: list[list[torch.Tensor]] = [[] for _ in ctx.features.layers]
        sizes = []
        for batch in ctx.train_batches():
            feats = ctx.features(batch)
            for layer, name in enumerate(ctx.features.layers):
                per_layer[layer].append(self.layer_log_prob(layer, feats[name]))
            sizes.append(batch.images.shape[-2:])
        maxima = torch.stack([torch.cat(maps).max() for maps in per_layer])
        self.layer_log_prob_max = maxima
        self.score_max = torch.stack([self._summed_probability(list(maps), size).max()
                                      for size, *maps in zip(sizes, *per_layer)]).max()

    def _summed_probability(self, log_probs: list[torch.Tensor], size: torch.Size) -> torch.Tensor:
        """Σ_l upsample(exp(log p_l − max_l)) at ``size`` → float64 [B, H, W].

        float64 as the official code (train.py: ``torch.tensor(test_dist[l], dtype=torch.double)``
        before ``exp``): float32 ``exp`` underflows to 0 below about −87 nats/dim under the maximum, so
        every pixel past that would tie.
        """
        total = None
        for layer, log_prob in enumerate(log_probs):
            prob = torch.exp(log_prob.double() - self.layer_log_prob_max[layer].double())
            prob = upsample(prob, tuple(size), align_corners=True)
            total = prob if total is None else total + prob
        assert total is not None
        return total

    @torch.no_grad()
    def predict(self, batch: Batch, ctx: Context) -> Prediction:
        if self.score_max.numel() == 0:
            raise RuntimeError("CFlow.predict called before fit")
        assert ctx.features is not None
        feats = ctx.features(batch)
        log_probs = [self.layer_log_prob(i, feats[name]) for i, name in enumerate(ctx.features.layers)]
        maps = self.score_max - self._summed_probability(log_probs, batch.images.shape[-2:])
        return Prediction(maps.reshape(maps.shape[0], -1).max(dim=1).values.cpu(), maps.cpu())
