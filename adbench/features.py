"""Shared backbone feature extraction with a cache, so a sweep extracts each image once.

Key of one image's features = sha256 of (backbone spec + weight identity + layers, transform
parameters, image path + size + mtime). Tier 1 keeps tensors in the run's device memory (LRU,
bounded by ``max_gb``) and lives for the whole process, so the methods of a Hydra multirun share
it. A changed image, transform or weight file changes the key, so stale features are never
returned.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from adbench.backbones import Backbone
from adbench.data import Batch, ImageTransform, file_fingerprint


@dataclass
class CacheStats:
    """Counters recorded with every run: images served from cache / extracted, seconds spent."""

    hits: int = 0
    misses: int = 0
    extract_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"cache_hits": self.hits, "cache_misses": self.misses, "extract_s": round(self.extract_s, 4)}


@dataclass
class MemoryTier:
    """LRU of per-image feature dicts in device memory, bounded in bytes."""

    max_bytes: int
    entries: OrderedDict = field(default_factory=OrderedDict)
    used: int = 0

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        item = self.entries.get(key)
        if item is not None:
            self.entries.move_to_end(key)
        return item

    def put(self, key: str, feats: dict[str, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in feats.values())
        if size > self.max_bytes or key in self.entries:
            return
        while self.used + size > self.max_bytes and self.entries:
            _, old = self.entries.popitem(last=False)
            self.used -= sum(t.numel() * t.element_size() for t in old.values())
        self.entries[key] = feats
        self.used += size

    def clear(self) -> None:
        self.entries.clear()
        self.used = 0


_MEMORY_TIERS: dict[str, MemoryTier] = {}


def memory_tier(device: torch.device, max_gb: float) -> MemoryTier:
    """The process-wide memory tier of ``device`` (shared by every run in this process)."""
    key = str(device)
    tier = _MEMORY_TIERS.get(key)
    if tier is None:
        tier = _MEMORY_TIERS[key] = MemoryTier(int(max_gb * 2**30))
    tier.max_bytes = int(max_gb * 2**30)
    return tier


class FeatureExtractor:
    """Backbone features for batches of images, cached per image.

    ``extractor(batch)`` → dict layer → float32 tensor [B, C_l, h_l, w_l] on ``device``.
    ``extractor.live(images)`` runs the backbone on tensors that have no file (synthesised or
    augmented images) and never caches.
    """

    def __init__(
        self,
        backbone: Backbone,
        transform: ImageTransform,
        device: torch.device,
        enabled: bool = True,
        max_gb: float = 4.0,
    ) -> None:
        self.backbone = backbone.to(device)
        self.transform = transform
        self.device = device
        self.enabled = enabled
        self.memory = memory_tier(device, max_gb) if enabled else None
        self.stats = CacheStats()
        self._prefix = backbone.identity() + "|" + transform.identity()

    @property
    def layers(self) -> list[str]:
        return self.backbone.requested

    def key(self, path: str) -> str:
        """Cache key of one image file under this backbone and transform."""
        return hashlib.sha256((self._prefix + "|" + file_fingerprint(path)).encode()).hexdigest()

    @torch.no_grad()
    def live(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the backbone on images [B, 3, H, W] (already normalised); no caching."""
        return self.backbone(images.to(self.device, non_blocking=True))

    @torch.no_grad()
    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if not self.enabled:
            return self._extract(batch.images)
        keys = [self.key(p) for p in batch.paths]
        found = [self.memory.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        self.stats.hits += len(keys) - len(missing)
        if missing:
            feats = self._extract(batch.images[missing])
            for j, i in enumerate(missing):
                found[i] = {name: t[j].clone() for name, t in feats.items()}
                self.memory.put(keys[i], found[i])
        return {name: torch.stack([f[name] for f in found]) for name in self.layers}

    def _extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        feats = self.live(images)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats.extract_s += time.perf_counter() - start
        self.stats.misses += images.shape[0]
        return feats
