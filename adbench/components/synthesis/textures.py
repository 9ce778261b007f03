"""Anomaly texture sources: DTD, any folder of images, and a built-in offline source.

Every source is a :class:`TextureSource`: ``len(source)`` images, ``source.image(i)`` → uint8
tensor [3, h, w] (RGB, the image's own size), ``source.draw(n, generator)`` → ``n`` random
indices (uniform, with replacement, as the official ``np.random.choice``), and
``source.describe()`` → a short string that a method records with its results (which source,
where, how many images).

* :class:`FolderTextures`: every image under a folder (``pattern``, default recursive);
* :func:`dtd_textures`: DTD r1.0.1 as DRAEM and GLASS read it (``<root>/images/*/*.jpg``), with
  an opt-in checksummed download (``download=True``) through :mod:`adbench.datasets.download`;
* :class:`BuiltinTextures`: 60 textures made with no download: 48 procedural ones (6 families
  — marble, warped stripes, checks/grids, dots, Voronoi cells, speckle — 8 each, seeded by
  index, so they are the same on every machine) and 12 scikit-image pictures bundled with the
  wheel that the toy dataset does not use.

:func:`build_texture_source` builds one from a method config (``builtin`` | ``dtd`` | ``folder``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from adbench.data import IMAGE_EXTENSIONS, DataError, load_image

BUILTIN_VERSION = "2"
BUILTIN_SIZE = 256
BUILTIN_FAMILIES = ("marble", "stripes", "checks", "dots", "cells", "speckle")
BUILTIN_PER_FAMILY = 8
# scikit-image pictures shipped inside the wheel and not used by the toy dataset
BUILTIN_PICTURES = (
    "astronaut.png",
    "camera.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "moon.png",
    "retina.jpg",
    "motorcycle_left.png",
    "text.png",
    "color.png",
    "cell.png",
    "microaneurysms.png",
    "chessboard_RGB.png",
)


class TextureSource(Protocol):
    """A set of anomaly-source images."""

    def __len__(self) -> int: ...

    def image(self, index: int) -> torch.Tensor:
        """uint8 [3, h, w] RGB image ``index``."""
        ...

    def describe(self) -> str:
        """Short text recorded with results: source kind, location/version, image count."""
        ...


def draw_indices(source: TextureSource, n: int, generator: torch.Generator) -> list[int]:
    """``n`` indices of ``source`` drawn uniformly with replacement from ``generator``."""
    if len(source) == 0:
        raise DataError(f"texture source {source.describe()} has no images")
    return torch.randint(0, len(source), (n,), generator=generator).tolist()


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL RGB image → uint8 tensor [3, h, w]."""
    return (
        torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    )


class FolderTextures:
    """Every image file under ``root`` matching ``pattern`` (glob, default ``**/*`` = recursive),
    sorted by path. DataError if there is none."""

    def __init__(self, root: str | Path, pattern: str = "**/*", name: str = "folder") -> None:
        self.root = Path(root).expanduser()
        self.name = name
        if not self.root.is_dir():
            raise DataError(
                f"texture folder {self.root} does not exist; point the method's texture_root at a "
                "folder of images, or use texture_source=builtin (no download)"
            )
        self.paths = sorted(
            p for p in self.root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.paths:
            raise DataError(
                f"no images matching {pattern!r} under {self.root}; expected e.g. "
                "<root>/<class>/<image>.jpg, or use texture_source=builtin (no download)"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> torch.Tensor:
        return pil_to_uint8(load_image(self.paths[index]))

    def describe(self) -> str:
        return f"{self.name}:{self.root} ({len(self)} images)"


def dtd_textures(
    root: str | Path | None = None, download: bool = False, progress: bool = True
) -> FolderTextures:
    """DTD r1.0.1 at ``root`` (default ``$ADBENCH_DATA/dtd``), read as the official code does
    (``<root>/images/*/*.jpg``, 5,640 images). ``download=True`` fetches and checks the archive
    (sha256 of :data:`adbench.datasets.download.DTD`) when the folder is missing; otherwise a
    missing DTD raises DataError naming the URL, checksum and layout."""
    from adbench.datasets import data_home
    from adbench.datasets.download import DTD, ensure_dataset

    base = Path(root).expanduser() if root else data_home() / "dtd"
    ensure_dataset(DTD, base, download, base / "images", progress=progress)
    return FolderTextures(base / "images", pattern="*/*.jpg", name="dtd-r1.0.1")


def _colour_ramp(values: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] [H, W] through a piecewise-linear ramp of K colours [K, 3] → [H, W, 3]."""
    k = len(colours) - 1
    pos = np.clip(values, 0, 1) * k
    low = np.minimum(pos.astype(int), k - 1)
    frac = (pos - low)[..., None]
    return colours[low] * (1 - frac) + colours[low + 1] * frac


def _fractal(rng: np.random.Generator, size: int, octaves: tuple[int, ...]) -> np.ndarray:
    """Fractal value noise: octaves of uniform noise on a cells × cells lattice, bicubically
    upsampled to size × size, amplitude halving per octave, scaled to [0, 1]. [size, size]."""
    total = torch.zeros(size, size, dtype=torch.float64)
    for i, cells in enumerate(octaves):
        lattice = torch.from_numpy(rng.random((1, 1, cells + 1, cells + 1)))
        total += 0.5**i * F.interpolate(lattice, size=(size, size), mode="bicubic", align_corners=True)[0, 0]
    values = total.numpy()
    return (values - values.min()) / (np.ptp(values) + 1e-12)


def _procedural(family: str, seed: int, size: int) -> np.ndarray:
    """One procedural texture: float [size, size, 3] in [0, 1]."""
    rng = np.random.default_rng([int(BUILTIN_VERSION), BUILTIN_FAMILIES.index(family), seed])
    colours = rng.random((int(rng.integers(2, 5)), 3))
    yy, xx = np.mgrid[0:size, 0:size] / size
    if family == "marble":
        values = _fractal(rng, size, (2, 4, 8, 16))
    elif family == "stripes":
        angle = rng.uniform(0, math.pi)
        warp = rng.uniform(0.0, 3.0) * _fractal(rng, size, (2, 4))
        freq = rng.uniform(4, 20)
        values = 0.5 + 0.5 * np.sin(
            2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + 2 * warp
        )
    elif family == "checks":
        period = rng.uniform(0.04, 0.2)
        cells = (np.floor(xx / period) + np.floor(yy / period)) % 2
        line = (np.minimum(xx % period, yy % period) < period * rng.uniform(0.05, 0.3)).astype(float)
        values = np.where(rng.random() < 0.5, cells, line) * 0.8 + 0.2 * _fractal(rng, size, (8, 32))
    elif family == "dots":
        values = np.zeros((size, size))
        for _ in range(int(rng.integers(20, 120))):
            cy, cx, radius = rng.random(), rng.random(), rng.uniform(0.01, 0.06)
            values = np.maximum(values, ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2) * rng.uniform(0.5, 1.0))
    elif family == "cells":
        points = rng.random((int(rng.integers(10, 80)), 2))
        dist = np.sqrt((yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2)
        nearest = np.partition(dist, 1, axis=-1)
        shade = rng.random(len(points))[dist.argmin(axis=-1)]
        values = np.where(nearest[..., 1] - nearest[..., 0] < rng.uniform(0.005, 0.02), 0.0, shade)
    else:  # speckle
        fine = _fractal(rng, size, (16, 32, 64))
        values = (fine > rng.uniform(0.45, 0.65)).astype(float) * 0.7 + 0.3 * _fractal(rng, size, (4,))
    return _colour_ramp(values, colours)


@lru_cache(maxsize=128)
def _builtin_image(index: int) -> torch.Tensor:
    n_procedural = len(BUILTIN_FAMILIES) * BUILTIN_PER_FAMILY
    if index < n_procedural:
        family = BUILTIN_FAMILIES[index // BUILTIN_PER_FAMILY]
        arr = _procedural(family, index % BUILTIN_PER_FAMILY, BUILTIN_SIZE)
        return torch.from_numpy(np.round(arr * 255).astype(np.uint8)).permute(2, 0, 1).contiguous()
    import skimage.data

    path = Path(skimage.data.data_dir) / BUILTIN_PICTURES[index - n_procedural]
    with Image.open(path) as img:
        img.load()
        return pil_to_uint8(img.convert("RGB"))


class BuiltinTextures:
    """The offline source: 48 procedural textures and 12 bundled scikit-image pictures (see the
    module docstring). Images are made on first use and cached; identical on every machine."""

    def __len__(self) -> int:
        return len(BUILTIN_FAMILIES) * BUILTIN_PER_FAMILY + len(BUILTIN_PICTURES)

    def image(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"builtin texture {index} out of range 0..{len(self) - 1}")
        return _builtin_image(index)

    def describe(self) -> str:
        return (
            f"builtin-v{BUILTIN_VERSION} ({len(BUILTIN_FAMILIES) * BUILTIN_PER_FAMILY} procedural textures + "
            f"{len(BUILTIN_PICTURES)} scikit-image pictures, offline)"
        )


def build_texture_source(
    kind: str = "builtin", root: str | Path | None = None, download: bool = False, progress: bool = True
) -> TextureSource:
    """``builtin`` (no download), ``dtd`` (``root`` or ``$ADBENCH_DATA/dtd``; ``download`` fetches
    it with its checksum) or ``folder`` (every image under ``root``)."""
    if kind == "builtin":
        return BuiltinTextures()
    if kind == "dtd":
        return dtd_textures(root, download=download, progress=progress)
    if kind == "folder":
        if not root:
            raise DataError("texture_source=folder needs texture_root=<folder of images>")
        return FolderTextures(root)
    raise DataError(f"unknown texture source {kind!r}; use builtin, dtd or folder")


def resize_texture(image: torch.Tensor, size: int, mode: str = "shorter") -> torch.Tensor:
    """Resize a uint8 texture [3, h, w] for synthesis.

    ``shorter``: shorter side → ``size``, aspect kept (torchvision ``Resize(size)``, GLASS);
    ``square``: both sides → ``size`` (DRAEM's ``cv2.resize`` to size × size). Bilinear
    with antialiasing, rounded back to uint8.
    """
    h, w = image.shape[-2:]
    if mode == "square":
        new = (size, size)
    elif mode == "shorter":
        new = (size, max(1, int(size * w / h))) if h <= w else (max(1, int(size * h / w)), size)
    else:
        raise ValueError(f"resize mode {mode!r}; use 'shorter' or 'square'")
    if (h, w) == new:
        return image
    out = F.interpolate(image[None].float(), size=new, mode="bilinear", align_corners=False, antialias=True)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop [..., h, w] → [..., size, size] (torchvision ``CenterCrop`` offsets)."""
    h, w = image.shape[-2:]
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return image[..., top : top + size, left : left + size]
