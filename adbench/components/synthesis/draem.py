"""DRAEM's training-sample synthesis (official ``data_loader.py::MVTecDRAEMTrainDataset``), batched.

Per sample (spec draem-cutpaste-datasets.md §1.2):

1. with probability ``p_rotate`` (code: 0.3) the clean image is rotated by U(−90°, 90°) (bilinear,
   zero fill); the rotated image is also the reconstruction target;
2. with probability 1 − ``p_anomaly`` (code: 0.5) the sample stays normal (mask all zero);
3. otherwise: a random texture of the source, resized to H × W ignoring the aspect ratio, gets
   ``k`` (3) distinct ops of DRAEM's 10 augmentations; a Perlin mask (lattice 2^{0..5}, rotation
   ±90°, threshold 0.5) selects where it is blended in with β (``blend`` convention: β = weight of
   the original image; code: β ~ U[0, 0.8)); a sample whose mask is empty is labelled normal.

The paper writes β as the texture's opacity, in [0.1, 1]: ``beta_is_opacity=True`` draws it from
``beta_range`` and blends with image weight 1 − β.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adbench.components.synthesis.augment import DRAEM_AUGMENTATIONS, random_augment
from adbench.components.synthesis.blend import blend, uniform_beta
from adbench.components.synthesis.perlin import perlin_masks, rotate
from adbench.components.synthesis.textures import TextureSource, draw_indices, resize_texture


@dataclass
class DraemBatch:
    """One synthesised batch: ``inputs`` float [B, 3, H, W] (with anomalies), ``targets`` float
    [B, 3, H, W] (clean images, rotated when drawn so), ``masks`` float [B, 1, H, W] in {0, 1},
    ``labels`` float [B] (1 = the sample holds an anomaly). All images in [0, 1]."""

    inputs: torch.Tensor
    targets: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor


@dataclass
class DraemSynthesis:
    """DRAEM's synthesis rule with its parameters; ``__call__`` draws a batch from clean images."""

    source: TextureSource
    beta_range: tuple[float, float] = (0.0, 0.8)
    beta_is_opacity: bool = False
    p_anomaly: float = 0.5
    p_rotate: float = 0.3
    rotate_degrees: float = 90.0
    perlin_threshold: float = 0.5
    n_augmentations: int = 3
    cache_size: int = 256

    def __post_init__(self) -> None:
        self._textures: dict[tuple[int, int, int], torch.Tensor] = {}

    def texture(self, index: int, height: int, width: int) -> torch.Tensor:
        """Source image ``index`` resized to H × W ignoring its aspect (``cv2.resize``): uint8 [3, H, W]."""
        key = (index, height, width)
        if key not in self._textures:
            if len(self._textures) >= self.cache_size:
                self._textures.pop(next(iter(self._textures)))
            image = self.source.image(index)
            if height == width:
                image = resize_texture(image, height, mode="square")
            else:
                image = torch.nn.functional.interpolate(
                    image[None].float(), size=(height, width), mode="bilinear", antialias=True
                )[0].round().clamp(0, 255).to(torch.uint8)
            self._textures[key] = image
        return self._textures[key]

    def __call__(self, clean: torch.Tensor, generator: torch.Generator) -> DraemBatch:
        """clean: float [B, 3, H, W] in [0, 1] → :class:`DraemBatch` on the same device."""
        b, _, h, w = clean.shape
        device = clean.device
        rotate_now = torch.rand(b, generator=generator) < self.p_rotate
        degrees = (2 * torch.rand(b, generator=generator) - 1) * self.rotate_degrees
        targets = clean
        if rotate_now.any():
            chosen = rotate_now.nonzero().flatten()
            turned = rotate(clean[chosen.to(device)].reshape(-1, h, w), degrees[chosen].repeat_interleave(3))
            targets = clean.clone()
            targets[chosen.to(device)] = turned.view(-1, 3, h, w).clamp(0, 1)
        anomalous = torch.rand(b, generator=generator) < self.p_anomaly
        masks = torch.zeros(b, h, w, dtype=torch.bool, device=device)
        inputs = targets
        chosen = anomalous.nonzero().flatten()
        if len(chosen):
            k = len(chosen)
            masks[chosen.to(device)] = perlin_masks(k, (h, w), generator, threshold=self.perlin_threshold,
                                                    max_degrees=90.0, device=device)
            textures = torch.stack([
                random_augment(self.texture(i, h, w), DRAEM_AUGMENTATIONS, generator, self.n_augmentations)
                for i in draw_indices(self.source, k, generator)
            ]).to(device, clean.dtype) / 255.0
            beta = uniform_beta(k, generator, *self.beta_range)
            if self.beta_is_opacity:
                beta = 1.0 - beta
            idx = chosen.to(device)
            inputs = targets.clone()
            inputs[idx] = blend(targets[idx], textures, masks[idx], beta)
        labels = masks.flatten(1).any(dim=1).float()
        return DraemBatch(inputs, targets, masks[:, None].float(), labels)

    def describe(self) -> str:
        """Text recorded with results: the texture source and the β convention."""
        kind = "opacity" if self.beta_is_opacity else "image weight"
        return f"{self.source.describe()}; beta {kind} U{list(self.beta_range)}"
