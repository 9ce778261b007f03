"""Shared backbone feature extraction with a two-tier cache, so a sweep extracts each image once.

One cache entry is one layer of one image. Its key is the sha256 of (cache format, backbone spec,
weight identity, the resolved layer module, the transform parameters incl. normalisation, and the
image's resolved path + size + mtime): a changed image, transform or weight file changes the key,
so stale features are never returned.

Tier 1 keeps fp16 tensors in the run's device memory (GPU when present), LRU, bounded by
``max_gb``; it lives for the whole process, so the methods of a Hydra multirun share it.
Tier 2 keeps one file per entry under ``cache_dir`` (fp16, read memory-mapped, written atomically
through a temporary file + rename); every file carries its shape, byte count and a CRC-32 of the
payload, and a truncated or corrupt file is deleted and recomputed, never loaded. With
``max_disk_gb`` the tier is bounded: a hit refreshes the file's mtime, and when the files exceed the
bound the least recently used are deleted down to 90 % of it (processes sharing the folder each
rescan it before deleting, so the bound holds approximately while they write at once).

On a miss, the extractor computes the union of the method's layers and ``cache_layers`` (default
layer1..layer4) in one backbone pass, so methods with different layer lists (PatchCore layer2+3,
PaDiM layer1–3, CFlow layer2–4) share one extraction.

Features are always rounded to fp16 (the storage precision), also with the cache disabled, so
whether a feature came from the cache changes it by at most one fp16 rounding step (CPU kernels
can round differently for another batch composition, which may flip a rounding).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adbench.backbones import CANONICAL_STRIDES, Backbone
from adbench.data import Batch, ImageTransform, file_fingerprint
from adbench.devices import synchronize

log = logging.getLogger("adbench")
CACHE_FORMAT = "adbench-features-v1"
FILE_MAGIC = b"ADBFEAT1"
HEADER_ALIGN = 64


@dataclass
class CacheStats:
    """Counters recorded with every run.

    hits: images whose requested layers were all served from a cache tier (disk_hits of them from
    disk); misses: images that ran the backbone; extract_s: seconds in backbone passes for misses;
    corrupt: disk entries found damaged and recomputed; live_s: seconds in uncached ``live`` passes
    (augmented or synthesised images).
    """

    hits: int = 0
    misses: int = 0
    extract_s: float = 0.0
    disk_hits: int = 0
    corrupt: int = 0
    live_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "cache_hits": self.hits, "cache_misses": self.misses, "extract_s": round(self.extract_s, 4),
            "cache_disk_hits": self.disk_hits, "cache_corrupt": self.corrupt, "live_s": round(self.live_s, 4),
        }


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


@dataclass
class MemoryTier:
    """LRU of per-(image, layer) feature tensors in device memory, bounded in bytes."""

    max_bytes: int
    entries: OrderedDict = field(default_factory=OrderedDict)
    used: int = 0

    def get(self, key: str) -> torch.Tensor | None:
        item = self.entries.get(key)
        if item is not None:
            self.entries.move_to_end(key)
        return item

    def put(self, key: str, tensor: torch.Tensor) -> None:
        size = _nbytes(tensor)
        if size > self.max_bytes or key in self.entries:
            return
        while self.used + size > self.max_bytes and self.entries:
            _, old = self.entries.popitem(last=False)
            self.used -= _nbytes(old)
        self.entries[key] = tensor
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


class DiskTier:
    """One file per entry: ``<dir>/<key[:2]>/<key>.feat``.

    Layout: 8-byte magic, 4-byte little-endian header length, JSON header (shape, dtype, nbytes,
    crc32 of the payload) padded to 64 bytes, then the raw fp16 payload (C order).
    """

    def __init__(self, root: str | os.PathLike, max_bytes: int | None = None) -> None:
        self.root = Path(root).expanduser()
        self.max_bytes = max_bytes
        self._used: int | None = None  # bytes under root, known after the first scan

    def entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size in bytes, path) of every entry file, oldest first."""
        found = []
        for path in self.root.glob("??/*.feat"):
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((stat.st_mtime, stat.st_size, path))
        return sorted(found)

    def prune(self) -> int:
        """Delete the least recently used entries until they take at most 90 % of ``max_bytes``;
        returns the bytes deleted (0 without a bound)."""
        entries = self.entries()
        used, freed = sum(size for _, size, _ in entries), 0
        target = 0.9 * self.max_bytes if self.max_bytes is not None else float("inf")
        for _, size, path in entries:
            if used <= target:
                break
            try:
                path.unlink(missing_ok=True)
            except OSError:
                continue
            used, freed = used - size, freed + size
        self._used = used
        return freed

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.feat"

    def get(self, key: str) -> np.ndarray | None:
        """The stored fp16 array, or None when absent; raises ValueError on a damaged entry."""
        path = self.path(key)
        try:
            with open(path, "rb") as fh:
                prefix = fh.read(len(FILE_MAGIC) + 4)
                if len(prefix) < len(FILE_MAGIC) + 4 or prefix[: len(FILE_MAGIC)] != FILE_MAGIC:
                    raise ValueError(f"{path}: bad magic")
                (header_len,) = struct.unpack("<I", prefix[len(FILE_MAGIC):])
                header = json.loads(fh.read(header_len).rstrip(b" ").decode())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, struct.error) as err:
            raise ValueError(f"{path}: unreadable header ({err})") from err
        offset = len(FILE_MAGIC) + 4 + header_len
        nbytes = int(header.get("nbytes", -1))
        shape = tuple(int(s) for s in header.get("shape", ()))
        if header.get("dtype") != "float16" or nbytes != 2 * int(np.prod(shape)):
            raise ValueError(f"{path}: inconsistent header {header}")
        if path.stat().st_size != offset + nbytes:
            raise ValueError(f"{path}: size {path.stat().st_size} != {offset + nbytes} (truncated?)")
        payload = np.memmap(path, dtype=np.float16, mode="r", offset=offset, shape=shape)
        if zlib.crc32(payload) != int(header.get("crc32", -1)):
            raise ValueError(f"{path}: checksum mismatch")
        if self.max_bytes is not None:
            try:
                os.utime(path)  # recently used: pruned last
            except OSError:
                pass
        return np.array(payload)

    def put(self, key: str, array: np.ndarray) -> None:
        """Write ``array`` (fp16) atomically: a temporary file in the same folder, then rename."""
        array = np.ascontiguousarray(array, dtype=np.float16)
        payload = array.tobytes()
        header = json.dumps({"shape": list(array.shape), "dtype": "float16", "nbytes": len(payload),
                             "crc32": zlib.crc32(payload)}).encode()
        pad = (-(len(FILE_MAGIC) + 4 + len(header))) % HEADER_ALIGN
        header += b" " * pad
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(FILE_MAGIC + struct.pack("<I", len(header)) + header + payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self.max_bytes is not None:
            if self._used is None:
                self._used = sum(size for _, size, _ in self.entries())
            else:
                self._used += path.stat().st_size
            if self._used > self.max_bytes:
                self.prune()

    def discard(self, key: str) -> None:
        """Delete an entry (a damaged one); an undeletable file is left to be overwritten."""
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError:
            pass


def _to_fp16(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Round features to fp16; ValueError if a finite value overflows the fp16 range."""
    half = tensor.half()
    if not torch.isfinite(half).all() and torch.isfinite(tensor).all():
        raise ValueError(f"features of layer {name} exceed the fp16 range (|x| > 65504); cannot cache them")
    return half


class FeatureExtractor:
    """Backbone features for batches of images, cached per (image, layer).

    ``extractor(batch)`` → dict layer → float32 tensor [B, C_l, h_l, w_l] on ``device`` (values
    rounded to fp16). ``extractor.live(images)`` runs ``backbone`` (the method's layers only) on
    tensors that have no file (synthesised or augmented images) and never caches.

    ``cache_layers`` (canonical names ``layer1..layer4``) are extracted and cached together with
    the method's layers on a miss; ``backbone_factory(layers)`` builds the backbone for that union
    (lazily, on the first miss). Without a factory, or when the method asks for non-canonical
    layers, only the method's own layers are extracted.
    """

    def __init__(
        self,
        backbone: Backbone,
        transform: ImageTransform,
        device: torch.device,
        enabled: bool = True,
        max_gb: float = 4.0,
        cache_dir: str | os.PathLike | None = None,
        max_disk_gb: float | None = None,
        cache_layers: Sequence[str] = (),
        backbone_factory: Callable[[list[str]], Backbone] | None = None,
    ) -> None:
        self.backbone = backbone.to(device)
        self.transform = transform
        self.device = device
        self.enabled = enabled
        self.memory = memory_tier(device, max_gb) if enabled else None
        disk_bytes = None if max_disk_gb is None else int(max_disk_gb * 2**30)
        self.disk = DiskTier(cache_dir, disk_bytes) if enabled and cache_dir else None
        self.stats = CacheStats()
        shared = enabled and backbone_factory is not None
        self.extract_layers = self._union_layers(cache_layers) if shared else self.layers
        self._factory = backbone_factory
        self._extract_backbone = self.backbone if self.extract_layers == self.layers else None
        self._prefix = f"{CACHE_FORMAT}|{backbone.spec}|{backbone.weights.identity}|{transform.identity()}"
        self._layer_module = dict(zip(backbone.requested, backbone.layers))

    @property
    def layers(self) -> list[str]:
        """The method's layers, in the order of the returned dicts."""
        return self.backbone.requested

    def _union_layers(self, cache_layers: Sequence[str]) -> list[str]:
        canonical = list(CANONICAL_STRIDES)
        if not all(layer in canonical for layer in self.layers):
            return self.layers
        union = set(self.layers) | {layer for layer in cache_layers if layer in canonical}
        return sorted(union, key=canonical.index)

    def _module_of(self, layer: str) -> str:
        if layer not in self._layer_module and self._extract_backbone is not None:
            self._layer_module.update(zip(self._extract_backbone.requested, self._extract_backbone.layers))
        return self._layer_module.get(layer, layer)

    def key(self, path: str, layer: str | None = None) -> str:
        """Cache key of one layer (default: the method's first) of one image file."""
        return self._key(file_fingerprint(path), layer or self.layers[0])

    def _key(self, fingerprint: str, layer: str) -> str:
        return hashlib.sha256(f"{self._prefix}|{self._module_of(layer)}|{fingerprint}".encode()).hexdigest()

    @torch.no_grad()
    def live(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the backbone on images [B, 3, H, W] (already normalised); no caching, no rounding."""
        start = time.perf_counter()
        feats = self.backbone(images.to(self.device, non_blocking=True))
        synchronize(self.device)
        self.stats.live_s += time.perf_counter() - start
        return feats

    @torch.no_grad()
    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if not self.enabled:
            feats = self._extract(batch.images, self.layers)
            return {name: feats[name].float() for name in self.layers}
        found: list[dict[str, torch.Tensor]] = []
        missing: list[int] = []
        for i, path in enumerate(batch.paths):
            entry = self._lookup(path)
            if entry is None:
                missing.append(i)
                found.append({})
            else:
                found.append(entry)
        self.stats.hits += len(batch.paths) - len(missing)
        if missing:
            if self._extract_backbone is None:
                self._extract_backbone = self._factory(self.extract_layers).to(self.device)  # type: ignore[misc]
            feats = self._extract(batch.images[missing], self.extract_layers)
            for j, i in enumerate(missing):
                fingerprint = file_fingerprint(batch.paths[i])
                for name in self.extract_layers:
                    tensor = feats[name][j].clone()
                    key = self._key(fingerprint, name)
                    self.memory.put(key, tensor)  # type: ignore[union-attr]
                    if self.disk is not None:
                        self._write(key, tensor)
                    if name in self.layers:
                        found[i][name] = tensor
        return {name: torch.stack([f[name] for f in found]).float() for name in self.layers}

    def _write(self, key: str, tensor: torch.Tensor) -> None:
        """Store one entry on disk; a failing disk (full, read-only) turns the disk tier off, not the run."""
        try:
            self.disk.put(key, tensor.cpu().numpy())  # type: ignore[union-attr]
        except OSError as err:
            log.warning("feature cache: cannot write %s (%s); disk tier off", self.disk.root, err)
            self.disk = None

    def _lookup(self, path: str) -> dict[str, torch.Tensor] | None:
        """All of the method's layers of one image from memory, else disk; None if any is missing."""
        entry: dict[str, torch.Tensor] = {}
        from_disk = False
        fingerprint = file_fingerprint(path)
        for name in self.layers:
            key = self._key(fingerprint, name)
            tensor = self.memory.get(key)  # type: ignore[union-attr]
            if tensor is None and self.disk is not None:
                try:
                    array = self.disk.get(key)
                except ValueError:
                    self.stats.corrupt += 1
                    self.disk.discard(key)
                    array = None
                if array is not None:
                    tensor = torch.from_numpy(array).to(self.device)
                    self.memory.put(key, tensor)  # type: ignore[union-attr]
                    from_disk = True
            if tensor is None:
                return None
            entry[name] = tensor
        self.stats.disk_hits += int(from_disk)
        return entry

    def _extract(self, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """One backbone pass for a miss → dict layer → fp16 [B, C, h, w] on ``device``."""
        backbone = self._extract_backbone if self._extract_backbone is not None else self.backbone
        start = time.perf_counter()
        feats = backbone(images.to(self.device, non_blocking=True))
        feats = {name: _to_fp16(name, feats[name]) for name in layers}
        synchronize(self.device)
        self.stats.extract_s += time.perf_counter() - start
        self.stats.misses += images.shape[0]
        return feats
