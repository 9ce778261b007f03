"""The common sample table, image/mask loading and the evaluation transform.

Every dataset loader (``adbench.datasets``) produces :class:`Category` objects made of
:class:`Sample` rows. Methods never open files themselves: the runner turns samples into
:class:`Batch` objects with :class:`ImageTransform`, which defines the evaluation resolution.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TIFF_EXTENSIONS = (".tif", ".tiff")
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # Pillow modes of > 8 bits per sample
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, tifffile.TiffFileError)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(ValueError):
    """Bad dataset input: the message names the file or key and the fix."""


@dataclass(frozen=True)
class Sample:
    """One row of the sample table.

    ``label`` is 0 for normal and 1 for anomalous; ``mask_path`` is None for normal images and
    for anomalous images of datasets without pixel annotations; ``split`` is "train" or "test".
    """

    image_path: str
    label: int
    mask_path: str | None
    defect_type: str
    category: str
    split: str


@dataclass
class Category:
    """One category of one dataset: train samples (normal only) and test samples."""

    dataset: str
    name: str
    root: str
    train: list[Sample]
    test: list[Sample]
    mask_binarize: str = "gt127"  # "gt127" for 0/255 masks, "nonzero" for VisA's class-id masks
    info: dict = field(default_factory=dict)

    @property
    def has_masks(self) -> bool:
        """True when every anomalous test sample has a mask (pixel metrics are defined)."""
        anomalous = [s for s in self.test if s.label == 1]
        return bool(anomalous) and all(s.mask_path is not None for s in anomalous)

    def validate(self) -> None:
        """Raise :class:`DataError` on an empty train set, a train set with anomalies, or a test set
        without both normal and anomalous images (AUROC is undefined on one class)."""
        where = f"{self.dataset}/{self.name}"
        if not self.train:
            raise DataError(
                f"{where}: the train set under {self.root} is empty; "
                "put normal training images in <category>/train/<normal folder>/"
            )
        if any(s.label != 0 for s in self.train):
            raise DataError(f"{where}: train samples must all be normal")
        if not self.test:
            raise DataError(f"{where}: the test set under {self.root} is empty")
        labels = {s.label for s in self.test}
        if len(labels) == 1:
            missing = "anomalous images (test/<defect>/)" if labels == {0} else "normal images"
            raise DataError(
                f"{where}: the test set under {self.root} has no {missing}; the metrics need normal and "
                "anomalous test images"
            )

    def verify_files(self) -> None:
        """Decode every test image and mask (sizes must match) and read every train image's header;
        DataError naming the first bad file. Seconds for a category, next to minutes of fitting."""
        for sample in self.train:
            image_size(sample.image_path)
        for sample in self.test:
            size = load_image(sample.image_path).size
            if sample.mask_path is not None:
                load_mask(sample.mask_path, size, self.mask_binarize)

    def to_records(self) -> list[dict]:
        return [asdict(s) for s in self.train + self.test]


def read_pixels(path: str | os.PathLike) -> Image.Image | np.ndarray:
    """The pixels of an image file: a Pillow image when its samples have at most 8 bits, else their
    array [H, W] or [H, W, C] in the file's own dtype.

    TIFFs of more than 8 bits per sample are read with tifffile (exact dtype, multi-channel too);
    16-bit PNGs give uint16. Pillow reduces 16-bit RGB(A) PNGs to 8 bits itself (the high byte,
    within one level of :func:`to_uint8`). Raises what the readers raise (see :data:`UNREADABLE`).
    """
    if Path(path).suffix.lower() in TIFF_EXTENSIONS:  # not a TIFF inside after all: Pillow reads it
        with contextlib.suppress(tifffile.TiffFileError), tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if page.bitspersample > 8:
                pixels = page.asarray()
                return np.moveaxis(pixels, page.axes.index("S"), -1) if "S" in page.axes else pixels
    with Image.open(path) as img:
        img.load()
        if img.mode not in HIGH_DEPTH_MODES:
            return img
        pixels = np.asarray(img)
        return pixels.astype(np.uint16) if img.format == "PNG" else pixels  # PNG: <= 16 bits per sample


def to_uint8(pixels: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Samples of any depth → uint8 of the same shape, by one rule: an integer sample v becomes
    round(v · 255 / M), M the largest value of its dtype (16-bit: v / 257; uint8 unchanged); a float
    sample must lie in [0, 1] and becomes round(v · 255). DataError naming ``path`` for negative
    integers, floats outside [0, 1] (or NaN) and other sample types."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == bool:
        return pixels.astype(np.uint8) * 255
    if pixels.dtype.kind in "ui":
        if pixels.dtype.kind == "i" and pixels.size and pixels.min() < 0:
            raise DataError(f"image {path} has negative {pixels.dtype} samples; save it with unsigned ones")
        return np.rint(pixels * (255 / np.iinfo(pixels.dtype).max)).astype(np.uint8)
    if pixels.dtype.kind == "f":
        if not np.all((pixels >= 0) & (pixels <= 1)):
            raise DataError(
                f"float image {path} has samples outside [0, 1] (min {np.nanmin(pixels):g}, max "
                f"{np.nanmax(pixels):g}); adbench reads float images as intensities in [0, 1]: rescale "
                "it, or save it with 8- or 16-bit integer samples"
            )
        return np.rint(pixels * 255.0).astype(np.uint8)
    raise DataError(f"image {path} has {pixels.dtype} samples; save it with 8- or 16-bit integer samples")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image as 8-bit RGB; DataError if unreadable.

    Grayscale and palette images are converted; samples of more than 8 bits (16-bit PNGs, 16/32-bit
    integer and float TIFFs, grayscale or multi-channel) are scaled by :func:`to_uint8`. A gray +
    alpha array keeps its gray channel, more than three channels their first three.
    """
    try:
        pixels = read_pixels(path)
    except UNREADABLE as err:
        raise DataError(f"cannot read image {path}: {err}; replace or remove the file") from err
    if isinstance(pixels, Image.Image):
        return pixels.convert("RGB")
    samples = to_uint8(pixels, path)
    if samples.ndim == 2 or samples.shape[2] < 3:
        samples = np.repeat(samples.reshape(*samples.shape[:2], -1)[..., :1], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(samples[..., :3]))


def image_size(path: str | os.PathLike, kind: str = "image") -> tuple[int, int]:
    """(width, height) of an image or mask file from its header (no decoding); DataError if unreadable."""
    try:
        if Path(path).suffix.lower() in TIFF_EXTENSIONS:  # also those Pillow cannot open (float RGB)
            with contextlib.suppress(tifffile.TiffFileError), tifffile.TiffFile(path) as tif:
                return int(tif.pages[0].imagewidth), int(tif.pages[0].imagelength)
        with Image.open(path) as img:
            return img.size
    except UNREADABLE as err:
        raise DataError(f"cannot read {kind} {path}: {err}; replace or remove the file") from err


def load_mask(path: str | os.PathLike, size: tuple[int, int] | None, binarize: str = "gt127") -> np.ndarray:
    """Read a ground-truth mask as a bool array of shape [H, W].

    ``size`` is the (width, height) of its image; a mask of another size is an error (None: any
    size, for masks the caller resizes, such as GLASS's foreground masks). Masks are
    binarised before any resizing: ``gt127`` (0/255 masks) keeps samples above half their range
    (> 127 after :func:`to_uint8`, so a 16-bit mask splits at 32767), ``nonzero`` (class-id masks)
    keeps every sample that is not 0. A multi-channel mask is the maximum of its channels.
    """
    try:
        pixels = read_pixels(path)
    except UNREADABLE as err:
        raise DataError(f"cannot read mask {path}: {err}; replace or remove the file") from err
    if isinstance(pixels, Image.Image):
        pixels = np.asarray(pixels if pixels.mode in ("L", "P") else pixels.convert("L"))
    if pixels.ndim == 3:
        pixels = pixels.max(axis=2)
    if size is not None and (pixels.shape[1], pixels.shape[0]) != tuple(size):
        raise DataError(
            f"mask {path} is {pixels.shape[1]}x{pixels.shape[0]} but its image is {size[0]}x{size[1]}; "
            "masks must have the size of their image"
        )
    return pixels != 0 if binarize == "nonzero" else to_uint8(pixels, path) > 127


@dataclass(frozen=True)
class ImageTransform:
    """Resize (shorter side, or both sides when ``square``) → centre crop → normalise.

    ``resize`` and ``crop`` are in pixels; the evaluation resolution is ``crop`` × ``crop``.
    ``mean``/``std`` of None leave pixel values in [0, 1] (DRAEM).
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    square: bool = False
    interpolation: str = "bilinear"

    @classmethod
    def from_config(
        cls, image: Mapping[str, Any], category: str | None,
        mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
    ) -> ImageTransform:
        """The transform of a ``method.image`` config for ``category``. ``resize_by_category``
        (category → resize) overrides ``resize`` for the categories it names (GLASS's code resizes
        toothbrush and wood to 329 before its 288 crop). ``center_crop: false`` (``data=folder``'s
        default) keeps the whole image: both sides resized to ``crop``, the evaluation resolution."""
        crop = int(image["crop"])
        whole = not image.get("center_crop", True)
        resize = crop if whole else (image.get("resize_by_category") or {}).get(category, image["resize"])
        return cls(resize=int(resize), crop=crop, mean=mean, std=std,
                   square=whole or bool(image.get("square", False)),
                   interpolation=str(image.get("interpolation", "bilinear")))

    def identity(self) -> str:
        """A stable string that changes whenever the transform does (part of cache keys)."""
        return json.dumps(asdict(self), sort_keys=True)

    def _resize_pil(self, img: Image.Image, resample: int) -> Image.Image:
        w, h = img.size
        if self.square:
            new = (self.resize, self.resize)
        elif w <= h:
            new = (self.resize, int(self.resize * h / w))
        else:
            new = (int(self.resize * w / h), self.resize)
        return img.resize(new, resample)

    def _crop(self, arr: np.ndarray) -> np.ndarray:
        h, w = arr.shape[:2]
        top = round((h - self.crop) / 2.0)
        left = round((w - self.crop) / 2.0)
        return arr[top : top + self.crop, left : left + self.crop]

    def image(self, img: Image.Image) -> torch.Tensor:
        """PIL RGB image → float tensor [3, crop, crop], normalised."""
        resample = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC}[
            self.interpolation
        ]
        arr = self._crop(np.asarray(self._resize_pil(img, resample), dtype=np.float32) / 255.0)
        tensor = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean).view(3, 1, 1)
            std = torch.tensor(self.std).view(3, 1, 1)
            tensor = (tensor - mean) / std
        return tensor

    def mask(self, mask: np.ndarray, dilate: bool = False) -> torch.Tensor:
        """Bool mask [H, W] → bool tensor [crop, crop], resized with nearest neighbour; with ``dilate``
        bilinearly, keeping every pixel above 0 (GLASS's foreground masks: ``torch.ceil`` of the
        bilinear ``transforms.Resize``), so a mask of any size lands on the crop's grid."""
        img = Image.fromarray(mask.astype(np.uint8) * 255)
        resized = np.asarray(self._resize_pil(img, Image.BILINEAR if dilate else Image.NEAREST))
        arr = self._crop(resized > (0 if dilate else 127))
        return torch.from_numpy(np.ascontiguousarray(arr))


@dataclass
class Batch:
    """A batch handed to a method.

    images: float [B, 3, S, S] (S = evaluation resolution); masks: bool [B, S, S] (all False
    where no mask exists); labels: int [B]; paths: the image files (feature-cache keys).
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    defect_types: list[str]


class DecodedImages:
    """In-memory store of decoded, transformed samples (image path → (image, mask) tensors), so a
    method that iterates its training images every epoch decodes each file once. Bounded by
    ``max_bytes``: once full, further samples are decoded on every visit. Holds one transform's
    outputs (its owner, a :class:`~adbench.method.Context`, has one transform)."""

    def __init__(self, max_bytes: int = 2 * 2**30) -> None:
        self.max_bytes, self.nbytes = max_bytes, 0
        self.items: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, path: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.items.get(path)

    def put(self, path: str, image: torch.Tensor, mask: torch.Tensor) -> None:
        size = image.nbytes + mask.nbytes
        if self.nbytes + size <= self.max_bytes:
            self.items[path] = (image, mask)
            self.nbytes += size


class SampleDataset(torch.utils.data.Dataset):
    """Samples → (image, mask, label, index) tensors under one :class:`ImageTransform`, read from
    ``decoded`` when it holds them (and stored there after decoding)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: ImageTransform,
        binarize: str = "gt127",
        decoded: DecodedImages | None = None,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.binarize = binarize
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        sample = self.samples[index]
        stored = self.decoded.get(sample.image_path) if self.decoded is not None else None
        if stored is not None:
            return stored[0], stored[1], sample.label, index
        img = load_image(sample.image_path)
        if sample.mask_path is not None:
            mask = self.transform.mask(load_mask(sample.mask_path, img.size, self.binarize))
        else:
            mask = torch.zeros(self.transform.crop, self.transform.crop, dtype=torch.bool)
        image = self.transform.image(img)
        if self.decoded is not None:
            self.decoded.put(sample.image_path, image, mask)
        return image, mask, sample.label, index


def iterate_batches(
    samples: Sequence[Sample],
    transform: ImageTransform,
    batch_size: int = 8,
    binarize: str = "gt127",
    num_workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    decoded: DecodedImages | None = None,
) -> Iterator[Batch]:
    """Yield :class:`Batch` objects over ``samples`` in order (or shuffled with ``seed``); with
    ``decoded`` (only used when ``num_workers`` is 0) each file is decoded once across calls."""
    dataset = SampleDataset(samples, transform, binarize, decoded if num_workers == 0 else None)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, generator=generator
    )
    for images, masks, labels, index in loader:
        rows = [dataset.samples[i] for i in index.tolist()]
        yield Batch(images, masks, labels, [r.image_path for r in rows], [r.defect_type for r in rows])


def file_fingerprint(path: str | os.PathLike) -> str:
    """Path, size and mtime of a file: what the feature cache keys an image on."""
    st = Path(path).stat()
    return f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def stable_hash(obj: object, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj``, truncated to ``length`` hex digits."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
