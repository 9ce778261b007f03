"""Dataset families on small generated trees: layouts, labels, masks, bad input, toy set, downloads."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from adbench.datasets import build, data_home
from adbench.datasets.btad import BTADDataset
from adbench.datasets.download import MPDD, Resource, ensure_dataset, extract, fetch
from adbench.datasets.folder import FolderDataset
from adbench.datasets.mpdd import MPDDDataset
from adbench.datasets.mvtec import MVTEC_CATEGORIES, MVTecAD
from adbench.datasets.toy import (
    DEFECTS,
    REGISTRATION_DEGREES,
    REGISTRATION_SHIFT,
    TOY_CATEGORIES,
    TOY_SOURCES,
    TOY_VERSION,
    ToyDataset,
    _normal_image,
    _source_picture,
    add_defect,
    generate_toy,
)
from adbench.datasets.visa import VisADataset
from PIL import Image, ImageDraw
from scipy import ndimage

from adbench.config import compose
from adbench.data import DataError, load_image, load_mask

TOY_OPTIONS = {"image_size": 64, "n_train": 3, "n_test_good": 2, "n_test_defect": 4}


def image(path: Path, size: tuple[int, int] = (16, 12), mode: str = "RGB", value: int = 128) -> Path:
    """Write a small solid image (any PIL-supported extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode != "RGB" else (value, value // 2, 30)).save(path)
    return path


def mask(path: Path, size: tuple[int, int] = (16, 12), values: tuple[int, ...] = (0, 255)) -> Path:
    """Write a mask whose left half is values[0] and right half cycles through values[1:]."""
    arr = np.full((size[1], size[0]), values[0], dtype=np.uint8)
    for i, v in enumerate(values[1:]):
        arr[i :: len(values) - 1, size[0] // 2 :] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def mvtec_tree(
    root: Path,
    category: str,
    mode: str = "RGB",
    normal: str = "good",
    suffix: str = "_mask",
    ext: str = ".png",
    mask_ext: str = ".png",
    masks: bool = True,
) -> Path:
    """A category with 3 train, 2 good test and 2+1 defective test images (defects: crack, hole)."""
    cat = root / category
    for i in range(3):
        image(cat / "train" / normal / f"{i:03d}{ext}", mode=mode)
    for i in range(2):
        image(cat / "test" / normal / f"{i:03d}{ext}", mode=mode)
    for defect, n in (("crack", 2), ("hole", 1)):
        for i in range(n):
            image(cat / "test" / defect / f"{i:03d}{ext}", mode=mode, value=10)
            if masks:
                mask(cat / "ground_truth" / defect / f"{i:03d}{suffix}{mask_ext}")
    (cat / "test" / "crack" / "notes.txt").write_text("ignored: not an image")
    return cat


# ----------------------------------------------------------------------------- layouts


def test_mvtec_counts_labels_masks_and_grayscale(tmp_path: Path) -> None:
    mvtec_tree(tmp_path, "bottle")
    mvtec_tree(tmp_path, "grid", mode="L")
    family = MVTecAD(tmp_path)
    assert family.categories() == list(MVTEC_CATEGORIES) and len(MVTEC_CATEGORIES) == 15
    cat = family.load("bottle")
    assert (cat.dataset, cat.name, len(cat.train), len(cat.test)) == ("mvtec", "bottle", 3, 5)
    assert [s.label for s in cat.test] == [1, 1, 0, 0, 1]  # crack, good, hole (sorted folders)
    assert [s.defect_type for s in cat.test] == ["crack", "crack", "good", "good", "hole"]
    assert all(s.split == "train" and s.label == 0 and s.mask_path is None for s in cat.train)
    crack = cat.test[1]
    assert crack.mask_path == str(tmp_path / "bottle" / "ground_truth" / "crack" / "001_mask.png")
    assert cat.has_masks and cat.mask_binarize == "gt127"
    grid = family.load("grid")
    img = load_image(grid.train[0].image_path)
    assert Image.open(grid.train[0].image_path).mode == "L" and img.mode == "RGB"
    assert load_mask(crack.mask_path, img.size).sum() == 12 * 8


def test_mpdd_layout_and_manual_download(tmp_path: Path) -> None:
    mvtec_tree(tmp_path, "tubes")
    family = build("mpdd", tmp_path)
    assert isinstance(family, MPDDDataset) and len(family.categories()) == 6
    assert family.load("tubes").has_masks
    for download in (False, True):
        with pytest.raises(DataError) as err:
            MPDDDataset(tmp_path, download=download).load("connector")
        message = str(err.value)
        assert str(tmp_path / "connector") in message and MPDD.homepage in message
        assert "CC BY-NC-SA 4.0" in message


def test_btad_ok_ko_bmp_and_mask_stems(tmp_path: Path) -> None:
    mvtec_tree(tmp_path, "01", normal="ok", suffix="", ext=".bmp")
    mvtec_tree(tmp_path, "03", normal="ok", suffix="", mask_ext=".bmp")
    for defect in ("crack", "hole"):  # BTAD has a single defect folder
        for product in ("01", "03"):
            for sub in ("test", "ground_truth"):
                folder = tmp_path / product / sub / defect
                for f in sorted(folder.iterdir()):
                    target = tmp_path / product / sub / "ko" / f"{defect}_{f.name}"
                    target.parent.mkdir(exist_ok=True)
                    f.rename(target)
                folder.rmdir()
    family = BTADDataset(tmp_path)
    assert family.categories() == ["01", "02", "03"]
    one = family.load("01")
    assert (len(one.train), len(one.test)) == (3, 5)
    assert all(s.image_path.endswith(".bmp") for s in one.train + one.test)
    bad = [s for s in one.test if s.label == 1]
    assert {s.defect_type for s in bad} == {"ko"} and {s.defect_type for s in one.test if not s.label} == {
        "good"
    }
    assert all(Path(s.mask_path).stem == Path(s.image_path).stem for s in bad)
    three = family.load("03")
    assert all(s.mask_path.endswith(".bmp") for s in three.test if s.label)
    assert load_image(one.train[0].image_path).mode == "RGB"


def visa_tree(root: Path, broken: str = "") -> Path:
    """Raw VisA layout with candle and pcb1; masks hold class ids 0, 1, 2."""
    rows = ["object,split,label,image,mask"]
    for obj in ("candle", "pcb1"):
        base = root / obj / "Data"
        for i in range(4):
            rel = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 10), (200, 180, 20)).save(root / rel, format="JPEG")
            rows.append(f"{obj},{'train' if i < 3 else 'test'},normal,{rel},")
        for i in range(2):
            rel = f"{obj}/Data/Images/Anomaly/{i:03d}.JPG"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 10), (20, 180, 20)).save(root / rel, format="JPEG")
            mask(base / "Masks" / "Anomaly" / f"{i:03d}.png", (20, 10), values=(0, 1, 2))
            rows.append(f"{obj},test,anomaly,{rel},{obj}/Data/Masks/Anomaly/{i:03d}.png")
    if broken == "label":
        rows.append("candle,test,weird,candle/Data/Images/Anomaly/000.JPG,")
    if broken == "mask":
        rows.append(
            "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/missing.png"
        )
    if broken == "column":
        rows = ["object,split,lbl,image,mask", *rows[1:]]
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def test_visa_csv_split_and_class_id_masks(tmp_path: Path) -> None:
    visa_tree(tmp_path)
    family = VisADataset(tmp_path, verify=True)
    assert len(family.categories()) == 12
    cat = family.load("pcb1")
    assert (len(cat.train), len(cat.test)) == (3, 3)
    assert [s.label for s in cat.test] == [0, 1, 1]
    assert cat.mask_binarize == "nonzero" and cat.has_masks
    assert {s.defect_type for s in cat.test} == {"good", "bad"}
    sample = cat.test[1]
    binary = load_mask(sample.mask_path, (20, 10), cat.mask_binarize)
    raw = np.asarray(Image.open(sample.mask_path))
    assert set(np.unique(raw)) == {0, 1, 2}
    assert np.array_equal(binary, raw != 0) and binary.sum() == 10 * 10
    assert not load_mask(sample.mask_path, (20, 10), "gt127").any()  # why "nonzero" matters


@pytest.mark.parametrize(
    ("broken", "needle"), [("label", "weird"), ("mask", "missing.png"), ("column", "label")]
)
def test_visa_bad_rows(tmp_path: Path, broken: str, needle: str) -> None:
    visa_tree(tmp_path, broken)
    with pytest.raises(DataError, match=needle) as err:
        VisADataset(tmp_path).load("candle")
    assert "1cls.csv" in str(err.value)


def test_folder_with_custom_normal_dir_and_without_masks(tmp_path: Path) -> None:
    mvtec_tree(tmp_path, "widget", normal="normal", suffix="_gt")
    mvtec_tree(tmp_path, "gadget", normal="normal", masks=False)
    (tmp_path / "not_a_category").mkdir()
    family = build("folder", tmp_path, normal_dir="normal", mask_suffix="_gt")
    assert isinstance(family, FolderDataset) and family.categories() == ["gadget", "widget"]
    widget = family.load("widget")
    assert widget.has_masks and widget.test[0].mask_path.endswith("000_gt.png")
    gadget = family.load("gadget")
    assert not gadget.has_masks
    assert [s.label for s in gadget.test] == [1, 1, 1, 0, 0]  # crack, hole, normal
    assert all(s.mask_path is None for s in gadget.test)


# ----------------------------------------------------------------------------- bad input


def test_unknown_category_and_dataset(tmp_path: Path) -> None:
    mvtec_tree(tmp_path, "widget")
    with pytest.raises(DataError, match="available categories: widget"):
        build("folder", tmp_path).load("gizmo")
    with pytest.raises(DataError, match="bottle, cable"):
        MVTecAD(tmp_path).load("bottel")
    with pytest.raises(DataError, match="registered datasets"):
        build("imagenet", tmp_path)
    with pytest.raises(DataError, match=r"data\.root"):
        build("folder", None)
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        build("folder", tmp_path / "nowhere").categories()


def test_default_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADBENCH_DATA", str(tmp_path))
    assert data_home() == tmp_path
    assert build("mvtec").root == tmp_path / "mvtec" and build("toy", "").root == tmp_path / "toy"


def test_empty_train_set(tmp_path: Path) -> None:
    cat = mvtec_tree(tmp_path, "widget")
    for f in (cat / "train" / "good").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"train set .* is empty"):
        build("folder", tmp_path).load("widget")


def test_missing_mask_file(tmp_path: Path) -> None:
    cat = mvtec_tree(tmp_path, "bottle")
    (cat / "ground_truth" / "hole" / "000_mask.png").unlink()
    with pytest.raises(DataError) as err:
        MVTecAD(tmp_path).load("bottle")
    assert str(cat / "test" / "hole" / "000.png") in str(err.value)
    assert "000_mask.png" in str(err.value)


def test_masks_required_without_ground_truth(tmp_path: Path) -> None:
    mvtec_tree(tmp_path, "bottle", masks=False)
    with pytest.raises(DataError, match="ground_truth"):
        MVTecAD(tmp_path).load("bottle")


def test_mask_size_mismatch(tmp_path: Path) -> None:
    cat = mvtec_tree(tmp_path, "bottle")
    bad = mask(cat / "ground_truth" / "crack" / "001_mask.png", (8, 8))
    loaded = MVTecAD(tmp_path).load("bottle")  # lazy by default
    with pytest.raises(DataError, match=r"001_mask\.png is 8x8"):
        load_mask(bad, (16, 12))
    with pytest.raises(DataError, match=r"001_mask\.png is 8x8") as err:
        MVTecAD(tmp_path, verify=True).load("bottle")
    assert str(bad) in str(err.value) and len(loaded.test) == 5


def test_unreadable_image(tmp_path: Path) -> None:
    cat = mvtec_tree(tmp_path, "bottle")
    broken = cat / "train" / "good" / "001.png"
    broken.write_bytes(b"not a png")
    MVTecAD(tmp_path).load("bottle")  # lazy by default
    with pytest.raises(DataError, match="cannot read image") as err:
        load_image(broken)
    assert str(broken) in str(err.value)
    with pytest.raises(DataError, match="cannot read image") as err:
        MVTecAD(tmp_path, verify=True).load("bottle")
    assert str(broken) in str(err.value)


def test_missing_dataset_names_path_url_licence(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        MVTecAD(tmp_path / "mvtec").load("bottle")
    message = str(err.value)
    assert str(tmp_path / "mvtec" / "bottle") in message
    assert "mydrive.ch" in message and "CC BY-NC-SA 4.0" in message
    assert "train/good" in message and "download=True" in message
    with pytest.raises(DataError) as err:
        VisADataset(tmp_path / "visa").load("candle")
    assert "1cls.csv" in str(err.value) and "amazon-visual-anomaly" in str(err.value)
    assert "CC BY 4.0" in str(err.value)


# ----------------------------------------------------------------------------- toy set


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_toy(tmp_path_factory.mktemp("toy") / "toy", **TOY_OPTIONS)


def test_toy_categories_and_split(toy_root: Path) -> None:
    family = build("toy", toy_root, **TOY_OPTIONS)
    assert isinstance(family, ToyDataset) and family.categories() == list(TOY_CATEGORIES)
    assert {"brick", "grass", "gravel"} <= set(TOY_CATEGORIES) and len(TOY_CATEGORIES) >= 6
    source, target = ToyDataset.source_target_split
    assert not set(source) & set(target) and set(source) | set(target) == set(TOY_CATEGORIES)
    for name in TOY_CATEGORIES:
        cat = family.load(name)
        assert (len(cat.train), len(cat.test)) == (3, 6) and cat.has_masks
        assert {s.defect_type for s in cat.test} == {"good", *DEFECTS}
        for s in cat.test:
            if s.label:
                img = load_image(s.image_path)
                assert img.size == (64, 64)
                assert load_mask(s.mask_path, img.size).any()


def test_toy_is_deterministic_and_versioned(toy_root: Path, tmp_path: Path) -> None:
    other = generate_toy(tmp_path / "again", **TOY_OPTIONS)
    files = sorted(p.relative_to(toy_root) for p in toy_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    assert all((toy_root / f).read_bytes() == (other / f).read_bytes() for f in files)
    marker = other / ".toy_version"
    stamp = marker.stat().st_mtime_ns
    generate_toy(other, **TOY_OPTIONS)
    assert marker.stat().st_mtime_ns == stamp  # up to date: untouched
    generate_toy(other, **{**TOY_OPTIONS, "n_train": 1})
    assert len(list((other / "brick" / "train" / "good").iterdir())) == 1  # options changed: regenerated
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("user data")
    with pytest.raises(DataError, match="not a toy dataset"):
        generate_toy(tmp_path / "mine")


def test_toy_dev_is_an_independent_draw(toy_root: Path, tmp_path: Path) -> None:
    dev = build("toy_dev", tmp_path / "dev", **TOY_OPTIONS)
    assert dev.categories() == list(TOY_CATEGORIES)
    for name in ("brick", "cat"):
        pairs = zip(build("toy", toy_root, **TOY_OPTIONS).load(name).train, dev.load(name).train)
        assert all(Path(a.image_path).read_bytes() != Path(b.image_path).read_bytes() for a, b in pairs)
    again = generate_toy(tmp_path / "again", seed=1, **TOY_OPTIONS)
    first = tmp_path / "dev" / "cat" / "test" / "hole" / "000.png"
    assert (again / "cat" / "test" / "hole" / "000.png").read_bytes() == first.read_bytes()
    assert '"seed": 1' in (again / ".toy_version").read_text()
    assert "seed" not in (toy_root / ".toy_version").read_text()  # seed 0 keeps the toy stamp


def test_toy_dev_draws_are_separate_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADBENCH_DATA", str(tmp_path))
    first, third = build("toy_dev", **TOY_OPTIONS), build("toy_dev", draw=3, **TOY_OPTIONS)
    assert (first.root, third.root) == (tmp_path / "toy_dev", tmp_path / "toy_dev_draw3")
    assert first.load("grass").dataset == "toy_dev"
    assert third.load("grass").dataset == "toy_dev_draw3"  # records and leaderboard rows never mix draws
    literal = generate_toy(tmp_path / "literal", seed=3, **TOY_OPTIONS)  # draw k is generator seed k
    same = tmp_path / "toy_dev_draw3" / "grass" / "test" / "cut" / "000.png"
    assert (literal / "grass" / "test" / "cut" / "000.png").read_bytes() == same.read_bytes()
    assert same.read_bytes() != (tmp_path / "toy_dev" / "grass" / "test" / "cut" / "000.png").read_bytes()
    for bad in (0, -2, "2", 1.5, True):
        with pytest.raises(DataError, match=r"data\.draw must be an integer >= 1"):
            build("toy_dev", draw=bad)


def test_toy_counts_and_defect_kinds_are_balanced(tmp_path: Path) -> None:
    defaults = inspect.signature(generate_toy).parameters
    assert [defaults[k].default for k in ("image_size", "n_train", "n_test_good", "n_test_defect")] == [
        128, 40, 130, 130
    ]
    root = generate_toy(tmp_path / "toy", image_size=32, n_train=2, n_test_good=5, n_test_defect=10)
    for name in TOY_CATEGORIES:
        test = root / name / "test"
        counts = {kind.name: len(list(kind.iterdir())) for kind in test.iterdir()}
        assert counts == {"good": 5, "scratch": 3, "hole": 3, "stain": 2, "cut": 2}, name
        assert sorted(p.name for p in (root / name / "ground_truth" / "stain").iterdir()) == [
            "000_mask.png", "001_mask.png"
        ]


def test_toy_old_version_tree_is_regenerated(tmp_path: Path) -> None:
    root = generate_toy(tmp_path / "toy", **TOY_OPTIONS)
    marker = root / ".toy_version"
    assert json.loads(marker.read_text())["version"] == TOY_VERSION == "2"
    marker.write_text(marker.read_text().replace('"version": "2"', '"version": "1"'))
    leftover = root / "cat" / "test" / "good" / "099.png"  # a version-1 file the new tree lacks
    leftover.write_bytes(b"old")
    generate_toy(root, **TOY_OPTIONS)
    assert json.loads(marker.read_text())["version"] == "2" and not leftover.exists()
    for name in ("toy", "toy_dev"):  # the version is in every toy job's config hash
        assert str(compose([f"data={name}"]).data.version) == TOY_VERSION
    assert build("toy", root, version=2, **TOY_OPTIONS).load("cat").test
    with pytest.raises(DataError, match=r"data\.version=1: .* toy version 2 only; set data\.version=2"):
        build("toy", root, version=1, **TOY_OPTIONS).load("cat")


def dot_picture(size: tuple[int, int], mode: str, dots: list[tuple[float, float]]) -> Image.Image:
    """A gray-100 picture with a white disk of radius 6 px at each (x, y) of ``dots``."""
    picture = Image.new(mode, size, 100 if mode == "L" else (100, 100, 100))
    draw = ImageDraw.Draw(picture)
    for x, y in dots:
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=255 if mode == "L" else (255, 255, 255))
    return picture


@pytest.mark.parametrize("category", [c for c in TOY_CATEGORIES if TOY_SOURCES[c].centre is not None])
def test_toy_objects_are_registered(category: str) -> None:
    """Two dots, at the object's centre and a quarter crop side to its right, land where a shift of at
    most 3 % of the side and a rotation of at most 5 degrees put them, and the corners are never fill."""
    source, size = TOY_SOURCES[category], 128
    real = _source_picture(category)
    (width, height), side = real.size, min(real.size) * source.fraction
    centre_x, centre_y = round(source.centre[0] * width), round(source.centre[1] * height)
    arm_x = round(side / 4)  # whole pixels: PIL draws the disks on the pixel grid
    picture = dot_picture(real.size, real.mode, [(centre_x, centre_y), (centre_x + arm_x, centre_y)])
    rng = np.random.default_rng(0)
    offsets, angles = [], []
    for _ in range(40):
        arr = _normal_image(picture, category, size, rng).astype(float).mean(axis=2)
        border = np.r_[arr[0], arr[-1], arr[:, 0], arr[:, -1]]  # an empty corner would reach the border
        assert border.min() >= 0.94 * 100 - 1, "empty (fill) pixels in the crop"
        labels, count = ndimage.label(arr > 140)
        assert count == 2
        dots = np.array(ndimage.center_of_mass(arr - 100, labels, [1, 2]))[:, ::-1] - size / 2  # (x, y)
        middle, right = dots[np.argsort(np.hypot(*dots.T))]
        offsets.append(np.hypot(*middle))
        arm = right - middle
        assert np.hypot(*arm) == pytest.approx(arm_x * size / side, abs=0.3)  # no scale jitter
        angles.append(np.degrees(np.arctan2(arm[1], arm[0])))
    assert max(offsets) <= REGISTRATION_SHIFT * size * np.sqrt(2) + 0.5  # + the disk's rounding
    assert np.abs(angles).max() <= REGISTRATION_DEGREES + 0.5
    assert max(offsets) > 2 and min(angles) < -3 and max(angles) > 3  # the jitter is there


def test_toy_object_images_agree_and_texture_crops_do_not() -> None:
    """On the real pictures, an object image correlates with the mean of the others; a texture crop
    (random position) does not: the median correlation over 30 images per category."""
    medians = {}
    for category in TOY_CATEGORIES:
        picture, rng = _source_picture(category), np.random.default_rng(0)
        images = np.stack([_normal_image(picture, category, 64, rng).mean(axis=2) for _ in range(30)])
        z = (images - images.mean(axis=(1, 2), keepdims=True)) / images.std(axis=(1, 2), keepdims=True)
        others = (z.sum(axis=0) - z) / (len(z) - 1)
        correlation = (z * others).mean(axis=(1, 2)) / others.std(axis=(1, 2))
        medians[category] = float(np.median(correlation))
    objects = {c: m for c, m in medians.items() if TOY_SOURCES[c].centre is not None}
    textures = {c: m for c, m in medians.items() if TOY_SOURCES[c].centre is None}
    assert set(objects) == {"cat", "coffee", "coins"}
    assert min(objects.values()) > 0.6 and max(textures.values()) < 0.35, medians


@pytest.mark.parametrize("kind", DEFECTS)
@pytest.mark.parametrize("channels", [1, 3])
def test_toy_defect_masks_are_exact(kind: str, channels: int) -> None:
    rng = np.random.default_rng(0)
    for trial in range(5):
        clean = rng.integers(60, 200, (128, 128, channels), dtype=np.uint8)
        dirty, where = add_defect(clean, kind, rng)
        changed = (dirty != clean).any(axis=2)
        assert where.shape == (128, 128) and where.any(), (kind, trial)
        assert not (changed & ~where).any(), "pixels outside the mask changed"
        assert changed[where].mean() > 0.5, "the mask claims pixels the defect did not change"
        assert not where[0].any() and not where[-1].any() and not where[:, 0].any() and not where[:, -1].any()


# ----------------------------------------------------------------------------- downloads


def tar_archive(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_checksum_ok_mismatch_and_mirrors(tmp_path: Path) -> None:
    source = tar_archive(tmp_path / "src.tar.gz", {"pkg/a.txt": b"hello"})
    dest = tmp_path / "dl" / "pkg.tar.gz"
    missing = (tmp_path / "absent.tar.gz").as_uri()
    assert fetch([missing, source.as_uri()], dest, sha(source), progress=False) == dest
    assert dest.read_bytes() == source.read_bytes()
    wrong = "0" * 64
    dest.unlink()
    with pytest.raises(DataError) as err:
        fetch(source.as_uri(), dest, wrong, progress=False)
    assert wrong in str(err.value) and sha(source) in str(err.value)
    assert list(dest.parent.iterdir()) == []  # temp file deleted, nothing renamed


def test_extract_rejects_unsafe_members(tmp_path: Path) -> None:
    cases = {
        "dotdot": tar_archive(tmp_path / "dotdot.tar.gz", {"pkg/../../evil.txt": b"x"}),
        "absolute": tar_archive(tmp_path / "absolute.tar.gz", {"/tmp/evil.txt": b"x"}),
        "symlink": tar_archive(tmp_path / "link.tar.gz", {"pkg/a.txt": b"x"}, {"pkg/up": "../../etc"}),
    }
    with zipfile.ZipFile(tmp_path / "slip.zip", "w") as archive:
        archive.writestr("../evil.txt", b"x")
    cases["zip"] = tmp_path / "slip.zip"
    for name, archive in cases.items():
        with pytest.raises(DataError, match="refusing to extract"):
            extract(archive, tmp_path / f"out-{name}")
        assert not (tmp_path / f"out-{name}").exists()
    assert not (tmp_path.parent / "evil.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_download_true_fetches_extracts_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = mvtec_tree(tmp_path / "build" / "mvtec_anomaly_detection", "bottle").parent
    archive = tmp_path / "mvtec.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(tree, arcname="mvtec_anomaly_detection")  # wrapper folder, stripped on extraction
    resource = Resource("MVTec AD", (archive.as_uri(),), sha(archive), "mvtec.tar.xz", "CC", "home", "layout")
    monkeypatch.setattr(MVTecAD, "resource", resource)
    root = tmp_path / "data" / "mvtec"
    cat = MVTecAD(root, download=True, verify=True).load("bottle")
    assert (len(cat.train), len(cat.test)) == (3, 5) and cat.has_masks
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mvtec"]  # archive and temp removed
    bad = Resource("X", (archive.as_uri(),), "f" * 64, "x.tar.xz", "CC", "home", "layout")
    with pytest.raises(DataError, match="f" * 64):
        ensure_dataset(bad, tmp_path / "data" / "x", True, tmp_path / "data" / "x" / "bottle", progress=False)
    assert not (tmp_path / "data" / "x").exists()


def test_context_decodes_each_training_image_once(toy_root, monkeypatch):
    """Context.train_batches serves later epochs from memory: same tensors, same shuffled order,
    no second decode; a full store decodes as before."""
    from adbench import data as data_module
    from adbench.data import DecodedImages, ImageTransform
    from adbench.method import Context

    category = build("toy", toy_root).load("brick")
    transform = ImageTransform(resize=32, crop=32)
    decodes = []
    real_load = data_module.load_image
    monkeypatch.setattr(data_module, "load_image", lambda path: decodes.append(path) or real_load(path))
    ctx = Context(category=category, transform=transform, device=torch.device("cpu"), seed=0)
    first = list(ctx.train_batches(shuffle=True, seed=3))
    assert len(decodes) == len(category.train)
    again = list(ctx.train_batches(shuffle=True, seed=3))
    assert len(decodes) == len(category.train)  # served from memory
    for a, b in zip(first, again):
        assert a.paths == b.paths and torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    reordered = [b.paths for b in ctx.train_batches(shuffle=True, seed=4)]
    assert reordered != [b.paths for b in first]  # the shuffle still follows the seed
    small = Context(category=category, transform=transform, device=torch.device("cpu"), seed=0,
                    decoded=DecodedImages(max_bytes=0))
    for _ in range(2):
        list(small.train_batches())
    assert len(decodes) == 3 * len(category.train) and small.decoded.nbytes == 0
