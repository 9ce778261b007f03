"""CutPaste (Li, Sohn, Yoon, Pfister — CVPR 2021). No official code exists; the defaults follow the
paper where it is known and Runinho/pytorch-cutpaste otherwise (spec draem-cutpaste-datasets.md §2).

Self-supervised training: an encoder (ResNet-18 from scratch as the paper's Table 1, or an
ImageNet-pretrained timm CNN), an MLP projection head (Linear + BatchNorm + ReLU per layer) and a
linear classifier learn to tell clean images from CutPaste / Scar augmentations of the same images
(variants ``binary``, ``scar``, ``union``, ``3way``). SGD with cosine decay over a fixed number of
steps; the final model is used (``freeze_encoder_bn``: the encoder's BatchNorm layers keep their
pretrained running statistics while everything trains, as for small-batch fine-tuning; see the CPU
presets for why). Scoring: a Gaussian density estimator (mean + Ledoit-Wolf
covariance) of the L2-normalised pooled encoder embeddings of the clean training images;
anomaly score = Mahalanobis distance.

Two localisation modes, so pixel metrics exist:

* image-level model (``patch_size`` null): GradCAM of the GDE score on the encoder's last feature
  map (the paper's image-level localisation, its pixel AUROC 88.3), bilinearly upsampled;
* patch-level model (``patch_size`` set, paper: 64 px patches of 256 px images): trained on random
  patches; at test time every patch at stride ``patch_stride`` is embedded, scored by a Gaussian
  of its own position (``patch_gde: position``, the issue's reading of the paper; P·D² floats of
  precision matrices) or by one Gaussian of all training patches (``shared``), each score is spread
  uniformly over the patch's pixels (mean of the patches covering a pixel) and smoothed with a
  Gaussian σ = ``blur_sigma``. Image score = max patch score.
"""

from __future__ import annotations

import logging
import math
import time

import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from adbench.backbones import resolve_weights
from adbench.components.gaussian import fit_gaussian, mahalanobis
from adbench.components.postprocess import gaussian_blur, upsample
from adbench.components.synthesis.cutpaste import color_jitter, cutpaste, scar
from adbench.data import Batch
from adbench.method import Context, Method, Prediction
from adbench.registry import register_method

VARIANT_CLASSES = {"binary": 2, "scar": 2, "union": 2, "3way": 3}
log = logging.getLogger(__name__)


def warn_if_collapsed(embeddings: torch.Tensor, category: str) -> bool:
    """Log a warning and return True when training embeddings [..., N, D] are nearly identical
    (largest per-dimension std < 1e-3 on unit vectors): fine-tuning collapsed the encoder, and test
    scores carry little signal (toy_dev grass, 300 steps: std 9e-5, AUROC 50-65)."""
    spread = float(embeddings.std(dim=-2).max()) if embeddings.shape[-2] > 1 else float("inf")
    if spread < 1e-3:
        log.warning("cutpaste: the encoder collapsed on %s (embedding std %.1e): test scores will be"
                    " nearly equal; lower method.params.lr or method.params.steps", category, spread)
        return True
    return False


class ProjectionNet(nn.Module):
    """Encoder → pooled embedding [B, D]; head (Linear + BN + ReLU per width) → linear classifier."""

    def __init__(self, encoder: nn.Module, head_layers: list[int], num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        layers: list[nn.Module] = []
        width = encoder.num_features
        for neurons in head_layers:
            layers += [nn.Linear(width, neurons), nn.BatchNorm1d(neurons), nn.ReLU(inplace=True)]
            width = neurons
        self.head = nn.Sequential(*layers)
        self.out = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, H, W] normalised → (embeddings [B, D], logits [B, classes])."""
        embeds = self.encoder(images)
        return embeds, self.out(self.head(embeds))


def spread_patch_scores(scores: torch.Tensor, side: int, patch: int, stride: int) -> torch.Tensor:
    """Receptive-field upsampling: scores [B, n·n] of the patches at stride ``stride`` (row-major) →
    maps [B, side, side], each pixel the mean score of the patches that contain it."""
    spread = scores.unsqueeze(1).expand(-1, patch * patch, -1)  # every patch covers patch × patch pixels
    total = F.fold(spread, (side, side), patch, stride=stride)
    cover = F.fold(torch.ones_like(spread[:1]), (side, side), patch, stride=stride)
    return (total / cover).squeeze(1)


@register_method("cutpaste")
class CutPaste(Method):
    """CutPaste with a GDE on encoder embeddings; image-level (GradCAM maps) or patch-level model."""

    normalize = "none"  # the encoder's own mean/std, applied in the method

    def __init__(
        self,
        variant: str = "3way",
        encoder: str = "resnet18",
        encoder_weights: str | None = "random",
        head_layers: tuple[int, ...] = (512, 128),
        steps: int = 65536,
        batch_clean: int = 32,
        lr: float = 0.03,
        momentum: float = 0.9,
        weight_decay: float = 3e-5,
        freeze_encoder_steps: int = 20,
        freeze_encoder_bn: bool = False,
        area_ratio: tuple[float, float] = (0.02, 0.15),
        aspect_ratio: float = 0.3,
        scar_width: tuple[float, float] = (2.0, 16.0),
        scar_height: tuple[float, float] = (10.0, 25.0),
        scar_rotation: tuple[float, float] = (-45.0, 45.0),
        scar_reference_size: int = 256,
        jitter: float = 0.1,
        image_jitter: float = 0.1,
        patch_size: int | None = None,
        patch_stride: int = 4,
        patch_gde: str = "position",
        blur_sigma: float = 4.0,
        embed_batch: int = 256,
    ) -> None:
        super().__init__()
        if variant not in VARIANT_CLASSES:
            raise ValueError(f"method.params.variant={variant!r}; choose one of {sorted(VARIANT_CLASSES)}")
        if steps < 1 or batch_clean < 2:
            raise ValueError("method.params.steps must be ≥ 1 and batch_clean ≥ 2 (BatchNorm)")
        self.variant = variant
        self.encoder_name = encoder
        self.steps = steps
        self.batch_clean = batch_clean
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.area_ratio = tuple(area_ratio)
        self.aspect_ratio = aspect_ratio
        self.scar_width = tuple(scar_width)
        self.scar_height = tuple(scar_height)
        self.scar_rotation = tuple(scar_rotation)
        self.scar_reference_size = scar_reference_size
        self.jitter = jitter
        self.image_jitter = image_jitter
        if patch_gde not in ("position", "shared"):
            raise ValueError(f"method.params.patch_gde={patch_gde!r}; choose 'position' or 'shared'")
        self.patch_size = patch_size
        self.patch_stride = patch_stride
        self.patch_gde = patch_gde
        self.blur_sigma = blur_sigma
        self.embed_batch = embed_batch
        full = timm.create_model(encoder, pretrained=False)
        self.weights = resolve_weights(full, encoder, encoder_weights, hub=False)
        self.freeze_encoder_steps = freeze_encoder_steps if self.weights.tag != "random" else 0
        self.freeze_encoder_bn = freeze_encoder_bn
        full.reset_classifier(0)
        # channels-last: the same maths (round-off may differ), ~1.4x faster depthwise/1x1 convolutions on CPU
        self.net = ProjectionNet(full, list(head_layers), VARIANT_CLASSES[variant]).to(
            memory_format=torch.channels_last)
        self.register_buffer("pixel_mean", torch.tensor(self.weights.mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(self.weights.std).view(1, 3, 1, 1))
        self.register_buffer("gde_mean", torch.empty(0))
        self.register_buffer("gde_precision", torch.empty(0))
        self.info["encoder"] = f"{encoder} ({self.weights.tag})"

    # ---------------------------------------------------------------- training
    def augment(self, clean: torch.Tensor, generator: torch.Generator,
                image_side: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of clean images [B, 3, h, w] in [0, 1] → (images [V·B, 3, h, w], labels [V·B]).

        binary: (clean, CutPaste); scar: (clean, Scar); union: (clean, CutPaste or Scar with
        probability ½ each); 3way: (clean, CutPaste, Scar) with labels 0, 1, 2. Every view starts
        from the same colour-jittered image. ``image_side``: side of the full image the views were
        cropped from (patch-level model; scar sizes are tied to it), None = h.
        """
        clean = color_jitter(clean, self.image_jitter, generator)
        b, _, h, _ = clean.shape
        reference = self.scar_reference_size * h / (image_side or h)
        views = [clean]
        if self.variant in ("binary", "union", "3way"):
            views.append(cutpaste(clean, generator, self.area_ratio, self.aspect_ratio, self.jitter).images)
        if self.variant in ("scar", "union", "3way"):
            scarred = scar(clean, generator, self.scar_width, self.scar_height, self.scar_rotation,
                           reference, self.jitter).images
            if self.variant == "union":
                pick = (torch.rand(b, generator=generator) < 0.5).to(clean.device).view(-1, 1, 1, 1)
                views[1] = torch.where(pick, views[1], scarred)
            else:
                views.append(scarred)
        labels = torch.arange(len(views), device=clean.device).repeat_interleave(b)
        return torch.cat(views), labels

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, h, w] in [0, 1] → encoder input, channels-last like the network."""
        return ((images - self.pixel_mean) / self.pixel_std).contiguous(memory_format=torch.channels_last)

    def _draw_batch(self, train: torch.Tensor, generator: torch.Generator, order: list[int]) -> torch.Tensor:
        """``batch_clean`` training images (reshuffled epochs), cropped to random patches if patch-level."""
        while len(order) < self.batch_clean:
            order += torch.randperm(train.shape[0], generator=generator).tolist()
        chosen = [order.pop(0) for _ in range(self.batch_clean)]
        images = train[chosen]
        if not self.patch_size:
            return images
        side, p = images.shape[-1], self.patch_size
        top = torch.randint(0, side - p + 1, (len(chosen),), generator=generator)
        left = torch.randint(0, side - p + 1, (len(chosen),), generator=generator)
        corners = zip(top.tolist(), left.tolist())
        return torch.stack([img[:, t : t + p, s : s + p] for img, (t, s) in zip(images, corners)])

    def make_optimiser(self) -> torch.optim.Optimizer:
        """SGD with momentum and weight decay over encoder, head and classifier."""
        return torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor, optimiser: torch.optim.Optimizer
    ) -> float:
        """One cross-entropy update on views [V·B, 3, h, w] in [0, 1] with labels [V·B]; returns the loss."""
        _, logits = self.net(self._normalise(images))
        loss = F.cross_entropy(logits, labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss.item()

    def fit(self, ctx: Context) -> None:
        train = torch.cat([b.images for b in ctx.train_batches()]).to(ctx.device)
        side = train.shape[-1]
        if self.patch_size and (side - self.patch_size) % self.patch_stride:
            raise ValueError(
                f"image side {side} − patch_size {self.patch_size} must be a multiple of "
                f"patch_stride {self.patch_stride} so the patches tile the image"
            )
        generator = torch.Generator().manual_seed(ctx.seed)
        optimiser = self.make_optimiser()
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, self.steps) / self.steps))
        )
        self.net.train()
        if self.freeze_encoder_bn:  # pretrained running statistics stay (module docstring)
            for module in self.net.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        order: list[int] = []
        aug_s, start = 0.0, time.perf_counter()
        for step in tqdm(range(self.steps), desc="cutpaste: train", disable=not ctx.progress, leave=False):
            self.net.encoder.requires_grad_(step >= self.freeze_encoder_steps)
            tick = time.perf_counter()
            images, labels = self.augment(self._draw_batch(train, generator, order), generator, side)
            aug_s += time.perf_counter() - tick
            self.train_step(images, labels, optimiser)
            schedule.step()
        self.timings.update(train_s=time.perf_counter() - start, augment_s=aug_s)
        self.net.eval()
        tick = time.perf_counter()
        with torch.no_grad():
            embeds = self._patch_embeddings(train) if self.patch_size else self._image_embeddings(train)
        # image-level [N, D] and patch-level "shared" [N·P, D] → one Gaussian; "position" [P, N, D] → one each
        if embeds.dim() == 3:
            embeds = embeds.transpose(0, 1) if self.patch_gde == "position" else embeds.flatten(0, 1)
        warn_if_collapsed(embeds, ctx.category.name)
        self.gde_mean, self.gde_precision = self._fit_gaussians(embeds)
        self.timings["gde_s"] = time.perf_counter() - tick

    def _fit_gaussians(self, samples: torch.Tensor, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """samples [N, D] or [P, N, D] (L2-normalised) → mean [(P,) D], precision [(P,) D, D]."""
        if samples.dim() == 2:
            return fit_gaussian(samples)
        parts = [fit_gaussian(samples[i : i + chunk]) for i in range(0, samples.shape[0], chunk)]
        return torch.cat([m for m, _ in parts]), torch.cat([p for _, p in parts])

    # ---------------------------------------------------------------- embeddings
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, h, w] in [0, 1] → pooled encoder embeddings [N, D], in chunks of ``embed_batch``."""
        return torch.cat([self.net.encoder(self._normalise(images[i : i + self.embed_batch]))
                          for i in range(0, images.shape[0], self.embed_batch)])

    def _image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, S, S] in [0, 1] → L2-normalised pooled embeddings [N, D]."""
        return F.normalize(self._encode(images), dim=1)

    def _patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, S, S] in [0, 1] → L2-normalised embeddings of every patch [N, P, D], where
        P = n × n positions, n = (S − patch_size) / patch_stride + 1, in row-major order."""
        p, stride = self.patch_size, self.patch_stride
        out = []
        for image in images:  # one image at a time: its n² patches are already a large batch
            patches = image.unfold(1, p, stride).unfold(2, p, stride)  # [3, n, n, p, p]
            flat = patches.permute(1, 2, 0, 3, 4).reshape(-1, 3, p, p)
            out.append(F.normalize(self._encode(flat), dim=1))
        return torch.stack(out)

    # ---------------------------------------------------------------- scoring
    def predict(self, batch: Batch, ctx: Context) -> Prediction:
        if self.gde_mean.numel() == 0:
            raise RuntimeError("CutPaste.predict called before fit (no Gaussian density)")
        images = batch.images.to(ctx.device)
        if self.patch_size:
            with torch.no_grad():
                return self._predict_patches(images)
        return self._predict_gradcam(images)

    def _predict_patches(self, images: torch.Tensor) -> Prediction:
        """Per-position Mahalanobis of every patch → receptive-field upsampling → Gaussian blur."""
        side, p, stride = images.shape[-1], self.patch_size, self.patch_stride
        embeds = self._patch_embeddings(images)  # [B, P, D]
        if self.patch_gde == "position":
            scores = mahalanobis(embeds.transpose(0, 1), self.gde_mean, self.gde_precision).transpose(0, 1)
        else:
            scores = mahalanobis(embeds, self.gde_mean, self.gde_precision)
        maps = gaussian_blur(spread_patch_scores(scores, side, p, stride), self.blur_sigma)
        return Prediction(scores.max(dim=1).values.cpu(), maps.cpu())

    def _predict_gradcam(self, images: torch.Tensor) -> Prediction:
        """GDE score of the pooled embedding; map = ReLU(Σ_c α_c A_c), α_c = spatial mean of
        ∂score/∂A_c on the encoder's last feature map A, bilinearly upsampled (unnormalised)."""
        with torch.no_grad():
            feats = self.net.encoder.forward_features(self._normalise(images))
        with torch.enable_grad():
            feats = feats.detach().requires_grad_(True)
            embeds = F.normalize(self.net.encoder.forward_head(feats), dim=1)
            scores = mahalanobis(embeds, self.gde_mean, self.gde_precision)
            (grad,) = torch.autograd.grad(scores.sum(), feats)
        cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * feats).sum(dim=1)).detach()
        return Prediction(scores.detach().cpu(), upsample(cam, images.shape[-2:]).cpu())
