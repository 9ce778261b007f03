"""``toy``: a small MVTec-style dataset generated offline from scikit-image's bundled pictures.

Eight categories, each built from one picture that scikit-image ships inside the wheel (read
from ``skimage.data.data_dir``; nothing is downloaded):

========  =======================  ======  ===========================
category  source file              mode    kind
========  =======================  ======  ===========================
brick     brick.png                gray    regular texture
grass     grass.png                gray    stochastic texture
gravel    gravel.png               gray    stochastic texture
tissue    ihc.png                  colour  stained-tissue texture
coins     coins.png                gray    repeated objects
page      page.png                 gray    printed text
coffee    coffee.png               colour  object (cup on a table)
cat       chelsea.png              colour  object (a cat's face)
========  =======================  ======  ===========================

Normal images (toy version 2) are placed in one of two ways, then resized to ``image_size`` (128)
and given a ±6% brightness jitter:

* textures (brick, grass, gravel, tissue) and page are random crops: any position, side within ±10%
  of a per-category fraction of the picture, random flips (none for page: printed text is not
  mirror-symmetric). Page counts as a texture: a line of text has no fixed place on a page;
* objects (cat, coffee, coins) are registered like MVTec AD's object categories: a centred crop of
  the object, shifted by at most ±3% of the crop side in x and y and rotated by at most ±5 degrees
  (resampled from inside the picture, so no corner is empty), never flipped: a flip moves
  off-centre parts (the cat's eyes, the cup's handle, the coin grid) elsewhere, which a per-position
  model such as PaDiM would see as a second mode.

Defective test images get one drawn defect whose mask is exactly the set of pixels the defect wrote:

* ``scratch``: a thin 2-3 px polyline, light on dark regions and dark on light ones;
* ``hole``: a dark filled (rotated) ellipse, placed on a region that is not already dark;
* ``stain``: an irregular blob where the texture is blurred and tinted (a colour on colour
  categories, a darker or lighter tone on gray ones, so no defect is "colour only");
* ``cut``: a polygonal piece replaced by a piece from elsewhere in the image, zoomed 2x,
  rotated and brightness-shifted, with a dark cut outline.

Sizes and positions vary. Gray categories are saved as single-channel PNGs (converted to RGB by
:func:`adbench.data.load_image`, like MVTec's grid/screw/zipper). Default counts per category:
40 train, 130 good test and 130 defective test images (33 scratch, 33 hole, 32 stain, 32 cut: the
kinds take turns). The test counts are sized for the statistics: at 130 + 130 test images the 95 %
percentile-bootstrap interval of an image AUROC of 0.95 is about ±2.4 points (binormal scores,
1000 resamples, mean over 100 simulated test sets; 50 + 50 gives ±3.9, 120 + 120 ±2.5, version 1's
12 + 18 ±6.5). (Version 1 had 12 good + 18 defective test images and took the objects as random
crops too; its trees are regenerated on first use.)

The tree is generated on first :meth:`ToyDataset.load` into the root (default
``$ADBENCH_DATA/toy``), deterministically (seeded by category name), in a temporary folder
renamed into place; the marker file ``.toy_version`` records :data:`TOY_VERSION` and the options
and a mismatch regenerates the tree. Options: ``image_size``, ``n_train``, ``n_test_good``,
``n_test_defect``, ``version`` (must equal :data:`TOY_VERSION`; the data configs set it, so it is
part of every toy job's config hash), plus those of :class:`~adbench.datasets.folder.FolderDataset`.

``toy_dev`` is a second, independent draw (seed 1, root ``$ADBENCH_DATA/toy_dev``) of the same
categories; its option ``draw`` = k > 1 gives further draws (seed k, dataset ``toy_dev_draw<k>``).
The CPU presets' budgets are chosen on toy_dev draws, and their numbers are reported on toy, so no
choice looks at the toy test images.

Source/target split for few-shot protocols (:data:`TOY_SOURCE`, :data:`TOY_TARGET`): each group
holds two textures and two structured pictures, one colour category each, and no category is in
both, so a model trained on the source group meets unseen categories in the target group.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from adbench.datasets.folder import FolderDataset
from PIL import Image, ImageDraw, ImageFilter

from adbench.data import DataError
from adbench.registry import register_dataset

TOY_VERSION = "2"
MARKER = ".toy_version"
REGISTRATION_SHIFT = 0.03  # registered objects: largest shift, as a fraction of the crop side
REGISTRATION_DEGREES = 5.0  # registered objects: largest rotation, degrees


class ToySource(NamedTuple):
    """How one category's normal images are cut from its picture."""

    file: str  # in skimage.data.data_dir
    fraction: float  # crop side as a fraction of the picture's shorter side
    flips: str = ""  # random crops: allowed flips, "h" horizontal, "v" vertical
    centre: tuple[float, float] | None = None  # registered object: its centre (x, y) as fractions
    # of the picture's width and height; None: random crops


TOY_SOURCES: dict[str, ToySource] = {
    "brick": ToySource("brick.png", 0.45, "hv"),
    "grass": ToySource("grass.png", 0.4, "hv"),
    "gravel": ToySource("gravel.png", 0.4, "hv"),
    "tissue": ToySource("ihc.png", 0.4, "hv"),
    "coins": ToySource("coins.png", 0.6, centre=(0.5, 0.5)),
    "page": ToySource("page.png", 0.7),
    "coffee": ToySource("coffee.png", 0.85, centre=(0.47, 0.5)),
    "cat": ToySource("chelsea.png", 0.85, centre=(0.55, 0.5)),
}
TOY_CATEGORIES = tuple(TOY_SOURCES)
TOY_SOURCE = ("brick", "grass", "tissue", "coins")
TOY_TARGET = ("gravel", "page", "coffee", "cat")
STAIN_COLOURS = ((0.55, 0.3, 0.1), (0.15, 0.25, 0.7), (0.2, 0.55, 0.15), (0.7, 0.1, 0.3))


def _source_picture(category: str) -> Image.Image:
    import skimage.data

    path = Path(skimage.data.data_dir) / TOY_SOURCES[category].file
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy()
    except OSError as err:
        raise DataError(f"toy/{category}: cannot read {path} from scikit-image: {err}") from err


def _normal_image(picture: Image.Image, category: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One normal image of ``category`` cut from ``picture``: uint8 [size, size, C].

    A registered object crop or a random crop (see the module docstring), then a ±6% brightness jitter.
    """
    source = TOY_SOURCES[category]
    if source.centre is None:
        arr = _random_crop(picture, source, size, rng)
    else:
        arr = _registered_crop(picture, source, size, rng)
    arr = arr * rng.uniform(0.94, 1.06)
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def _random_crop(picture: Image.Image, source: ToySource, size: int, rng: np.random.Generator) -> np.ndarray:
    """Crop anywhere in ``picture`` (side ±10%), flipped as ``source.flips`` allows: float [size, size, C]."""
    width, height = picture.size
    side = round(min(width, height) * source.fraction * rng.uniform(0.9, 1.1))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    arr = _as_array(picture.resize((size, size), Image.LANCZOS, box=(left, top, left + side, top + side)))
    if rng.random() < 0.5 and "h" in source.flips:
        arr = arr[:, ::-1]
    if rng.random() < 0.5 and "v" in source.flips:
        arr = arr[::-1]
    return arr


def _registered_crop(
    picture: Image.Image, source: ToySource, size: int, rng: np.random.Generator
) -> np.ndarray:
    """The object's centred crop, shifted by at most ``REGISTRATION_SHIFT`` of its side and rotated by at
    most ``REGISTRATION_DEGREES``: float [size, size, C].

    The picture is first scaled (LANCZOS) so the crop side becomes ``size`` pixels, then the rotated,
    shifted square is resampled from it (bicubic). The square reaches at most 0.572 crop sides from
    the object's centre (half its rotated extent, 0.542, plus the shift); ``TOY_SOURCES`` leaves that
    much picture on every side, so the corners are picture, never fill.
    """
    width, height = picture.size
    side = min(width, height) * source.fraction
    scaled = picture.resize((round(width * size / side), round(height * size / side)), Image.LANCZOS)
    scale_x, scale_y = scaled.width / width, scaled.height / height
    shift = rng.uniform(-1, 1, 2) * REGISTRATION_SHIFT * side
    centre_x, centre_y = (np.array(source.centre) * (width, height) + shift) * (scale_x, scale_y)
    radians = np.deg2rad(rng.uniform(-REGISTRATION_DEGREES, REGISTRATION_DEGREES))
    cos, sin = np.cos(radians), np.sin(radians)
    # output pixel centre (x, y) -> scaled-picture point: the centre plus the offset from the output's
    # centre, rotated by the angle
    offset_x, offset_y = size / 2 * (cos - sin), size / 2 * (sin + cos)
    affine = (cos, -sin, centre_x - offset_x, sin, cos, centre_y - offset_y)
    return _as_array(scaled.transform((size, size), Image.AFFINE, affine, resample=Image.BICUBIC))


def _as_array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float32)
    return arr[..., None] if arr.ndim == 2 else arr


def _draw(size: int, shape: str, points: list[tuple[float, float]], width: int = 1) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "line":
        draw.line(points, fill=1, width=width, joint="curve")
    else:
        draw.polygon(points, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _ellipse(
    cx: float, cy: float, a: float, b: float, angle: float, n: int = 48
) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = a * np.cos(t), b * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return [(cx + c * xi - s * yi, cy + s * xi + c * yi) for xi, yi in zip(x, y)]


def _luma(arr: np.ndarray) -> np.ndarray:
    return arr.mean(axis=2) / 255.0


def _scratch(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = base.shape[0]
    length, width = rng.uniform(50, 90) * size / 128, int(rng.integers(2, 4))
    segments = int(rng.integers(2, 5))
    headings = rng.uniform(0, 2 * np.pi) + np.cumsum(np.r_[0.0, rng.uniform(-0.5, 0.5, segments - 1)])
    steps = np.stack([np.cos(headings), np.sin(headings)], axis=1) * length / segments
    pts = np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    pts -= pts.min(axis=0)
    room = np.maximum(size - 5 - pts.max(axis=0), 0)
    pts = np.minimum(pts + 2 + rng.uniform(0, 1, 2) * room, size - 3)
    mask = _draw(size, "line", [tuple(p) for p in pts], width)
    value = 235.0 if _luma(base)[mask].mean() < 0.5 else 20.0
    return value + rng.normal(0, 6, base.shape), mask


def _hole(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size, luma = base.shape[0], _luma(base)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(20):  # look for a spot that is not already dark
        a, b = rng.uniform(5, 14, 2) * size / 128
        cx, cy = rng.uniform(max(a, b) + 3, size - max(a, b) - 3, 2)
        candidate = _draw(size, "polygon", _ellipse(cx, cy, a, b, rng.uniform(0, np.pi)))
        brightness = float(luma[candidate].mean())
        if best is None or brightness > best[0]:
            best = (brightness, candidate)
        if brightness > 0.35:
            break
    return rng.uniform(5, 25) + rng.normal(0, 3, base.shape), best[1]


def _stain(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = base.shape[0]
    radius = rng.uniform(8, 16) * size / 128
    cx, cy = rng.uniform(radius * 1.6 + 2, size - radius * 1.6 - 2, 2)
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(3, 7))):
        ox, oy = rng.uniform(-0.6, 0.6, 2) * radius
        a, b = rng.uniform(0.5, 1.0, 2) * radius
        mask |= _draw(size, "polygon", _ellipse(cx + ox, cy + oy, a, b, rng.uniform(0, np.pi)))
    blurred = np.stack(
        [
            np.asarray(Image.fromarray(base[..., c].astype(np.uint8)).filter(ImageFilter.GaussianBlur(2.5)))
            for c in range(base.shape[2])
        ],
        axis=2,
    ).astype(np.float32)
    alpha = rng.uniform(0.5, 0.7)
    if base.shape[2] == 3:
        tint = np.array(STAIN_COLOURS[int(rng.integers(len(STAIN_COLOURS)))], dtype=np.float32) * 255
        return (1 - alpha) * blurred + alpha * tint, mask
    if _luma(base)[mask].mean() > 0.5:
        return blurred * (1 - alpha), mask
    return 255 - (255 - blurred) * (1 - alpha), mask


def _cut(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = base.shape[0]
    radius = rng.uniform(11, 20) * size / 128
    cx, cy = rng.uniform(radius + 3, size - radius - 3, 2)
    count = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = rng.uniform(0.6, 1.0, count) * radius
    polygon = [(cx + r * np.cos(t), cy + r * np.sin(t)) for t, r in zip(angles, radii)]
    inside = _draw(size, "polygon", polygon)
    outline = _draw(size, "line", polygon + polygon[:1], 3) & ~inside
    half = int(np.ceil(radius)) + 3
    quarter = (half + 1) // 2
    sources = rng.integers(quarter, size - quarter + 1, (20, 2))  # the farthest of 20 candidate windows
    sx, sy = sources[np.argmax(np.hypot(sources[:, 0] - cx, sources[:, 1] - cy))]
    window = base[sy - quarter : sy + quarter, sx - quarter : sx + quarter]
    piece = np.rot90(window.repeat(2, axis=0).repeat(2, axis=1), k=int(rng.integers(1, 4)))  # 2x zoom
    top, left = round(cy) - half, round(cx) - half
    new = base.copy()
    region = new[max(top, 0) : top + 2 * half, max(left, 0) : left + 2 * half]
    region[...] = piece[max(-top, 0) :, max(-left, 0) :][: region.shape[0], : region.shape[1]]
    new *= rng.choice([0.7, 1.3])
    new[outline] = 15.0
    return new, inside | outline


DEFECT_PAINTERS = {"scratch": _scratch, "hole": _hole, "stain": _stain, "cut": _cut}
DEFECTS = tuple(DEFECT_PAINTERS)


def add_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of ``kind`` (see :data:`DEFECTS`) on a uint8 [H, W, C] square image.

    Returns the new image and the bool mask [H, W] of exactly the pixels the defect wrote
    (all others are unchanged). Sizes are relative to a 128-pixel image.
    """
    if kind not in DEFECT_PAINTERS:
        raise DataError(f"unknown toy defect {kind!r}; known: {', '.join(DEFECTS)}")
    new, mask = DEFECT_PAINTERS[kind](image.astype(np.float32), rng)
    out = image.copy()
    out[mask] = np.clip(np.round(np.broadcast_to(new, image.shape)), 0, 255).astype(np.uint8)[mask]
    return out, mask


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze(2) if arr.shape[2] == 1 else arr).save(path)


def _generate_category(folder: Path, category: str, params: dict[str, int]) -> None:
    key = zlib.crc32(category.encode())
    rng = np.random.default_rng(key if params["seed"] == 0 else [key, params["seed"]])
    picture = _source_picture(category)
    size = params["image_size"]
    for i in range(params["n_train"]):
        _save(_normal_image(picture, category, size, rng), folder / "train" / "good" / f"{i:03d}.png")
    for i in range(params["n_test_good"]):
        _save(_normal_image(picture, category, size, rng), folder / "test" / "good" / f"{i:03d}.png")
    counters = dict.fromkeys(DEFECTS, 0)
    for i in range(params["n_test_defect"]):
        kind = DEFECTS[i % len(DEFECTS)]
        image, mask = add_defect(_normal_image(picture, category, size, rng), kind, rng)
        index = counters[kind]
        counters[kind] += 1
        _save(image, folder / "test" / kind / f"{index:03d}.png")
        _save(
            mask[..., None].astype(np.uint8) * 255, folder / "ground_truth" / kind / f"{index:03d}_mask.png"
        )


def generate_toy(
    root: str | Path,
    image_size: int = 128,
    n_train: int = 40,
    n_test_good: int = 130,
    n_test_defect: int = 130,
    seed: int = 0,
) -> Path:
    """Generate the toy tree at ``root`` unless its marker already matches; return ``root``.

    ``seed`` 0 is the toy set; any other value draws an independent set of the same kind (other
    crops, object poses and defects), such as ``toy_dev``.

    Generation happens in a temporary sibling folder renamed into place, so an interrupted run
    leaves no half tree. An existing ``root`` is replaced only if it is empty or an older toy tree.
    """
    root = Path(root).expanduser()
    params = {
        "image_size": int(image_size),
        "n_train": int(n_train),
        "n_test_good": int(n_test_good),
        "n_test_defect": int(n_test_defect),
        "seed": int(seed),
    }
    stamp_params = {k: v for k, v in params.items() if k != "seed" or v != 0}  # seed 0: the original stamp
    stamp = json.dumps({"version": TOY_VERSION, **stamp_params}, sort_keys=True)
    marker = root / MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return root
    if root.exists() and any(root.iterdir()) and not marker.is_file():
        raise DataError(
            f"toy: {root} exists and is not a toy dataset; point data.root at a new or empty folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    try:
        for category in TOY_CATEGORIES:
            _generate_category(tmp / category, category, params)
        (tmp / MARKER).write_text(stamp)
        if marker.is_file() and marker.read_text() == stamp:  # a concurrent generator finished first
            return root
        if root.exists():
            os.replace(root, old)
        os.replace(tmp, root)
    except OSError:
        if not (marker.is_file() and marker.read_text() == stamp):  # not a concurrent generator's tree
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return root


@register_dataset("toy")
class ToyDataset(FolderDataset):
    """The generated toy dataset (default root ``$ADBENCH_DATA/toy``); see the module docstring."""

    default_root = "toy"
    seed = 0
    known_categories = TOY_CATEGORIES
    masks_required = True
    source_target_split = (TOY_SOURCE, TOY_TARGET)

    def prepare(self, category: str) -> None:
        """Generate the tree (all categories) if it is missing or was made by another generator version.

        Option ``version`` (conf/data/toy.yaml) puts the generator version into every job's config
        hash, so a record made on an older toy set is never reused; it must be :data:`TOY_VERSION`.
        """
        version = str(self.options.get("version", TOY_VERSION))
        if version != TOY_VERSION:
            raise DataError(
                f"data.version={version}: this adbench generates toy version {TOY_VERSION} only; "
                f"set data.version={TOY_VERSION} (or leave it out)"
            )
        keys = ("image_size", "n_train", "n_test_good", "n_test_defect")
        options = {k: int(self.options[k]) for k in keys if k in self.options}
        generate_toy(self.root, seed=self.seed, **options)


@register_dataset("toy_dev")
class ToyDevDataset(ToyDataset):
    """Independent draws of the toy set on which CPU presets are chosen, so no choice ever looks at
    the toy set's test images.

    Option ``draw`` (int >= 1, default 1) selects the draw: the generator seed. Draw 1 is
    ``toy_dev`` (default root ``$ADBENCH_DATA/toy_dev``); draw k > 1 is the dataset
    ``toy_dev_draw<k>`` (default root ``$ADBENCH_DATA/toy_dev_draw<k>``), so its records, leaderboard
    rows and cache entries never mix with another draw's. ``python -m adbench -m data=toy_dev
    data.draw=1,2,3`` compares a preset over several draws.
    """

    default_root = "toy_dev"

    @classmethod
    def default_location(cls, **options: object) -> str:
        """``toy_dev`` for draw 1, ``toy_dev_draw<k>`` for draw k."""
        return cls.draw_name(options.get("draw", 1))

    @staticmethod
    def draw_name(draw: object) -> str:
        """The dataset name of one draw; DataError unless ``draw`` is an integer >= 1."""
        if isinstance(draw, bool) or not isinstance(draw, int) or draw < 1:
            raise DataError(f"data.draw must be an integer >= 1 (1 = toy_dev), got {draw!r}")
        return "toy_dev" if draw == 1 else f"toy_dev_draw{draw}"

    def __init__(self, root: str | Path, download: bool = False, **options: object) -> None:
        super().__init__(root, download, **options)
        draw = options.get("draw", 1)
        self.name = self.draw_name(draw)
        self.seed = int(draw)  # type: ignore[arg-type]  (checked by draw_name)
