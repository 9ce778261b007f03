"""Issue 22: no silent wrong numbers, no lost records, errors a user can act on.

Each test pins one item of the issue: high-bit-depth images (1), folder datasets named by their
data (2), multirun exit status and summary (3), truncated records (4), archive links (5), the sample
table validated before fitting (6), user mistakes without tracebacks (7), log lines and progress
bars (8), whole-image evaluation on folder datasets (9).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from adbench.config import compose
from adbench.data import DataError, load_image, load_mask
from adbench.results import read_record, rebuild_leaderboard
from adbench.runner import run

TINY = ["method=patchcore", "method.image.resize=32", "method.image.crop=32", "progress=false",
        "cache.enabled=false", "batch_size=16"]


def parts_tree(root: Path, category: str = "part", size: tuple[int, int] = (40, 32), n_train: int = 6,
               seed: int = 0) -> Path:
    """A small MVTec-style category: noisy gray parts, defects are a bright square (with masks)."""
    rng = np.random.default_rng(seed)
    cat = root / category

    def save(path: Path, pixels: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)

    def part() -> np.ndarray:
        return rng.integers(90, 110, (size[1], size[0], 3), dtype=np.uint8)

    for i in range(n_train):
        save(cat / "train" / "good" / f"{i:03d}.png", part())
    for i in range(3):
        save(cat / "test" / "good" / f"{i:03d}.png", part())
        defect, mask = part(), np.zeros((size[1], size[0]), dtype=np.uint8)
        top, left = 4 + 3 * i, 6 + 4 * i
        defect[top : top + 8, left : left + 8], mask[top : top + 8, left : left + 8] = 250, 255
        save(cat / "test" / "blob" / f"{i:03d}.png", defect)
        save(cat / "ground_truth" / "blob" / f"{i:03d}_mask.png", mask)
    return root

# ----------------------------------------------------------------------------- 1: bit depth

RAMP16 = (np.arange(48 * 40, dtype=np.int64).reshape(40, 48) * 34).astype(np.uint16)  # 0 .. 65246


def reference_uint8(values: np.ndarray, maximum: float) -> np.ndarray:
    """The scaling rule, one sample at a time: round(v * 255 / maximum)."""
    flat = [round(float(v) * 255 / maximum) for v in values.ravel()]
    return np.array(flat, dtype=np.uint8).reshape(values.shape)


def rgb_of(path: Path) -> np.ndarray:
    return np.asarray(load_image(path))


def png16(path: Path, pixels: np.ndarray) -> Path:
    """Write a 16-bit RGB PNG by hand (Pillow cannot write one): big-endian samples, filter 0."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path, mode):
    path = tmp_path / "gray16.png"
    Image.frombytes(mode, (48, 40), RAMP16.astype(">u2" if mode == "I;16B" else "<u2").tobytes()).save(path)
    rgb = rgb_of(path)
    assert rgb.shape == (40, 48, 3) and (rgb == rgb[..., :1]).all()
    np.testing.assert_array_equal(rgb[..., 0], reference_uint8(RAMP16, 65535))
    gray8 = (RAMP16 // 257).astype(np.uint8)  # an 8-bit image saved as v * 257 reads back exactly
    Image.fromarray(gray8).save(tmp_path / "gray8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "same16.png")
    np.testing.assert_array_equal(rgb_of(tmp_path / "same16.png"), rgb_of(tmp_path / "gray8.png"))


def test_16bit_rgb_png_and_tiff(tmp_path):
    pixels = np.stack([RAMP16, RAMP16[::-1], np.full_like(RAMP16, 40000)], axis=-1)
    expected = reference_uint8(pixels, 65535)
    tifffile.imwrite(tmp_path / "rgb16.tif", pixels, photometric="rgb")
    np.testing.assert_array_equal(rgb_of(tmp_path / "rgb16.tif"), expected)
    planar = tmp_path / "planar16.tiff"  # samples stored plane by plane: [3, H, W] on disk
    tifffile.imwrite(planar, np.moveaxis(pixels, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(rgb_of(planar), expected)
    # Pillow reads 16-bit RGB PNGs itself, keeping the high byte: within one level of the rule
    from_png = rgb_of(png16(tmp_path / "rgb16.png", pixels)).astype(int)
    np.testing.assert_array_equal(from_png, pixels >> 8)
    assert np.abs(from_png - expected).max() <= 1


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32])
def test_integer_tiffs_scale_by_their_dtype_range(tmp_path, dtype):
    maximum = float(np.iinfo(dtype).max)
    values = np.rint(RAMP16 / 65535.0 * maximum).astype(dtype)
    tifffile.imwrite(tmp_path / "gray.tif", values)
    np.testing.assert_array_equal(rgb_of(tmp_path / "gray.tif")[..., 1], reference_uint8(values, maximum))
    tifffile.imwrite(tmp_path / "rgba.tif", np.stack([values] * 4, axis=-1), photometric="rgb",
                     extrasamples=["unassalpha"])
    np.testing.assert_array_equal(rgb_of(tmp_path / "rgba.tif"), rgb_of(tmp_path / "gray.tif"))


def test_float_tiffs_in_unit_range_and_refused_outside(tmp_path):
    values = (RAMP16 / 65535.0).astype(np.float32)
    tifffile.imwrite(tmp_path / "gray.tif", values)
    np.testing.assert_array_equal(rgb_of(tmp_path / "gray.tif")[..., 0], reference_uint8(values, 1.0))
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([values, 1 - values, values / 2], -1), photometric="rgb")
    assert rgb_of(tmp_path / "rgb.tif")[0, 0].tolist() == [0, 255, 0]
    for name, bad in (("hdr.tif", values * 4), ("nan.tif", np.where(values > 0.5, np.nan, values))):
        tifffile.imwrite(tmp_path / name, bad.astype(np.float32))
        with pytest.raises(DataError, match=r"outside \[0, 1\]") as err:
            load_image(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
    tifffile.imwrite(tmp_path / "negative.tif", values.astype(np.int32) - 1)
    with pytest.raises(DataError, match="negative"):
        load_image(tmp_path / "negative.tif")


def test_8bit_and_misnamed_tiffs_are_read_by_pillow(tmp_path):
    from adbench.data import image_size

    pixels = (RAMP16 // 257).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "gray8.tif", compression="tiff_lzw")  # no codec needed
    Image.fromarray(pixels).save(tmp_path / "png-inside.tif", format="PNG")
    for name in ("gray8.tif", "png-inside.tif"):
        np.testing.assert_array_equal(rgb_of(tmp_path / name)[..., 2], pixels)
        assert image_size(tmp_path / name) == (48, 40)
    tifffile.imwrite(tmp_path / "rgb-float.tif", np.zeros((40, 48, 3), np.float32), photometric="rgb")
    assert image_size(tmp_path / "rgb-float.tif") == (48, 40)  # a header Pillow cannot read


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_masks_binarise_at_half_range(tmp_path, suffix):
    levels = np.array([[0, 20000, 32767, 32768, 40000, 65535]], dtype=np.uint16).repeat(2, axis=0)
    path = tmp_path / f"mask{suffix}"
    if suffix == ".png":
        Image.fromarray(levels).save(path)
    else:
        tifffile.imwrite(path, levels)
    half = load_mask(path, (6, 2))
    assert half[0].tolist() == [False, False, False, True, True, True]
    assert load_mask(path, (6, 2), binarize="nonzero")[0].tolist() == [False] + [True] * 5
    with pytest.raises(DataError, match="is 6x2 but its image is 2x6"):
        load_mask(path, (2, 6))


# ----------------------------------------------------------------------------- 5: archive links


def link_archive(path: Path, entries: list[tuple[str, str | bytes]]) -> Path:
    """A tar of (name, link target) symbolic links and (name, bytes) files, in this order."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


@pytest.fixture()
def no_tar_filter(monkeypatch):
    """tarfile as on Python 3.10.0-3.10.11 / 3.11.0-3.11.3: no ``data`` filter, members extracted as is."""
    import tarfile

    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    monkeypatch.setattr(tarfile.TarFile, "extraction_filter", staticmethod(lambda member, path: member),
                        raising=False)


@pytest.mark.parametrize("entries", [
    [("s", "."), ("s/t", "../outside"), ("t/evil.txt", b"x")],  # the chain
    [("a", "b"), ("b", "."), ("a/t", "../outside"), ("t/evil.txt", b"x")],  # two hops
    [("d", "."), ("d/l", "d"), ("l/l/evil", "../outside")],  # through a link to a link
    [("s", "."), ("s/t", ".."), ("t/outside/evil.txt", b"x")],  # a link to the parent
], ids=["chain", "two-hops", "nested", "parent"])
def test_links_resolved_against_extracted_links(tmp_path, no_tar_filter, entries):
    from adbench.datasets.download import extract

    (tmp_path / "outside").mkdir()
    archive = link_archive(tmp_path / "evil.tar", entries)
    with pytest.raises(DataError, match="refusing to extract"):
        extract(archive, tmp_path / "data")
    assert list((tmp_path / "outside").iterdir()) == [] and not (tmp_path / "data").exists()


def test_links_inside_the_archive_still_extract(tmp_path, no_tar_filter):
    from adbench.datasets.download import extract

    archive = link_archive(tmp_path / "ok.tar", [
        ("pkg/v1/a.txt", b"a"), ("pkg/latest", "v1"), ("pkg/latest/b.txt", b"b"), ("pkg/up", "latest/.."),
        ("pkg/here", "."), ("pkg/here/c.txt", b"c"),
    ])
    out = extract(archive, tmp_path / "data")
    assert (out / "pkg" / "v1" / "b.txt").read_bytes() == b"b"
    assert (out / "pkg" / "c.txt").read_bytes() == b"c"
    assert (out / "pkg" / "up" / "v1" / "a.txt").read_bytes() == b"a"


# ----------------------------------------------------------------------------- 4: truncated records


def test_truncated_record_warns_and_its_job_runs_again(tmp_path, caplog):
    overrides = on_folder(parts_tree(tmp_path / "parts"), tmp_path / "results")
    results = tmp_path / "results"
    (first,) = run(compose(overrides))
    assert first["status"] == "ok", first.get("traceback")
    (path,) = results.glob("runs/*/part/patchcore/*.json")
    for broken in (path.read_text()[:200], "[]"):  # cut short by a full disk; not a record at all
        path.write_text(broken)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="adbench"):
            assert read_record(path) is None and len(rebuild_leaderboard(results)) == 0
        assert str(path) in caplog.text and "unfinished" in caplog.text
        (again,) = run(compose(overrides))  # not skipped as finished: redone and rewritten
        assert again["status"] == "ok"
        assert json.loads(path.read_text())["image_auroc"] == first["image_auroc"]  # rewritten whole
        assert len(rebuild_leaderboard(results)) == 1


# ----------------------------------------------------------------------------- 2: folder identity


def on_folder(root: Path, results: Path, *extra: str) -> list[str]:
    """Overrides running the tiny PatchCore on category ``part`` of the tree at ``root``."""
    return ["data=folder", f"data.root={root}", "data.category=part", f"results_dir={results}", *TINY, *extra]


def folder_run(root: Path, results: Path, *extra: str) -> dict:
    (record,) = run(compose(on_folder(root, results, *extra)))
    assert record["status"] == "ok", record.get("traceback")
    return record


def test_two_folder_roots_with_one_category_name_never_share_a_record(tmp_path, caplog):
    import pandas as pd

    results = tmp_path / "results"
    first_root, second_root = parts_tree(tmp_path / "a", seed=1), parts_tree(tmp_path / "b", seed=2)
    first, second = folder_run(first_root, results), folder_run(second_root, results)
    assert first["dataset"].startswith("folder-") and second["dataset"].startswith("folder-")
    assert first["dataset"] != second["dataset"] and first["run_id"] != second["run_id"]
    assert first["config_hash"] == second["config_hash"]  # the data identity is in the name, not the hash
    assert second["fit_s"] > 0 and second["finished_at"]  # run, not skipped as the first one's record
    frame = pd.read_csv(results / "leaderboard.csv")
    assert sorted(frame["dataset"]) == sorted([first["dataset"], second["dataset"]])
    assert len(list(results.glob("runs/folder-*/part/patchcore/*.json"))) == 2
    with caplog.at_level(logging.INFO, logger="adbench"):
        again = folder_run(first_root, results)  # the same tree again: the finished record is reused
    assert again["finished_at"] == first["finished_at"]
    assert f"is the dataset {first['dataset']}" in caplog.text
    extra = first_root / "part" / "test" / "blob" / "003.png"  # a changed tree is another dataset
    Image.fromarray(np.full((32, 40, 3), 250, dtype=np.uint8)).save(extra)
    Image.fromarray(np.full((32, 40), 255, dtype=np.uint8)).save(extra.parents[2] / "ground_truth" / "blob" /
                                                                  "003_mask.png")
    changed = folder_run(first_root, results)
    assert changed["dataset"] not in (first["dataset"], second["dataset"]) and changed["n_test"] == 7
    assert len(pd.read_csv(results / "leaderboard.csv")) == 3


def test_built_in_datasets_keep_their_names_and_config_hashes(tmp_path):
    from adbench.datasets import build

    from adbench.runner import config_hash

    parts_tree(tmp_path)  # a tree with a category: a published dataset is not renamed by its content
    assert [build(name, tmp_path).name for name in ("toy", "mvtec", "mpdd", "btad")] == [
        "toy", "mvtec", "mpdd", "btad"]
    # the values of the commit before issue 22 (ac765ee): records of published datasets are still found
    hashes = [config_hash(compose(["method=patchcore", f"data={name}"]), "c")
              for name in ("mvtec", "visa", "btad")]
    assert hashes == ["e6bd5e113d63e461", "ce0a83f47a6debe8", "6db42c9975f3d61d"]


# ----------------------------------------------------------------------------- 6: validated before fitting


@pytest.mark.parametrize("damage", ["corrupt-test-image", "mask-size", "one-class", "corrupt-train-image"])
def test_bad_test_set_fails_before_any_fit(tmp_path, monkeypatch, damage):
    import adbench.runner.job as runner

    root, results = parts_tree(tmp_path / "parts"), tmp_path / "results"
    cat = root / "part"
    if damage == "corrupt-test-image":
        (cat / "test" / "blob" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        needle = "cannot read image .*001.png"
    elif damage == "mask-size":
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(cat / "ground_truth" / "blob" / "002_mask.png")
        needle = "002_mask.png is 8x8 but its image is 40x32"
    elif damage == "one-class":
        for defect in ("test/blob", "ground_truth"):
            for path in sorted((cat / defect).rglob("*.png")):
                path.unlink()
        needle = "no anomalous images"
    else:
        (cat / "train" / "good" / "004.png").write_bytes(b"not an image")
        needle = "cannot read image .*004.png"
    monkeypatch.setattr(runner, "fit_method", lambda *args: pytest.fail("fitted before validating"))
    with pytest.raises(DataError, match=needle):
        run(compose(on_folder(root, results)))
    assert not results.exists()


def test_file_verification_can_be_turned_off(tmp_path):
    root, results = parts_tree(tmp_path / "parts"), tmp_path / "results"
    (root / "part" / "test" / "blob" / "001.png").write_bytes(b"garbage")
    (record,) = run(compose(on_folder(root, results, "+data.verify=false")))
    assert record["status"] == "failed" and "cannot read image" in record["error"]


# ----------------------------------------------------------------------------- 9: whole image on folders


def test_folder_data_evaluates_the_whole_image(tmp_path):
    from adbench.data import ImageTransform

    edge = np.zeros((48, 64, 3), dtype=np.uint8)
    edge[:, :4] = 255  # a defect at the part's left edge, outside any centre crop
    for method in ("patchcore", "padim", "glass", "draem", "resad"):
        folder, paper = (compose([f"method={method}", f"data={name}", "data.root=/x"])
                         for name in ("folder", "mvtec"))
        whole = ImageTransform.from_config(folder.method.image, "part")
        assert whole.square and whole.resize == whole.crop == int(paper.method.image.crop), method
        assert whole.image(Image.fromarray(edge))[0, :, 0].min() > 0.5, method  # the edge is seen
        assert ImageTransform.from_config(paper.method.image, "bottle") == ImageTransform.from_config(
            dict(paper.method.image, center_crop=True), "bottle")
    cropped = ImageTransform.from_config(compose(["+experiment=paper_mvtec"]).method.image, "bottle")
    assert (cropped.resize, cropped.crop, cropped.square) == (256, 224, False)
    assert cropped.image(Image.fromarray(edge))[0, :, 0].max() < 0.5  # the crop cut the edge away
    record = folder_run(parts_tree(tmp_path / "parts"), tmp_path / "results")
    assert record["eval_resolution"] == 32 and record["config"]["method"]["image"]["center_crop"] is False
    restored = compose(["data=folder", "data.root=/x", "method.image.center_crop=true"]).method.image
    assert ImageTransform.from_config(restored, "part") == ImageTransform(resize=256, crop=224, mean=None,
                                                                          std=None)


# ----------------------------------------------------------------------------- 3 and 7: the command line


def cli(monkeypatch, *args: str, multirun: bool = False) -> int:
    """``python -m adbench [-m] <args>`` in this process (logging left to pytest); its exit status."""
    from adbench.__main__ import app

    flags = ["-m"] if multirun else []
    monkeypatch.setattr(sys, "argv", ["adbench", *flags, "hydra/hydra_logging=none", "hydra/job_logging=none",
                                      *args])
    try:
        app()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def mistake(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """Overrides for one user mistake on a parts tree, and a piece of the message it must give."""
    root = parts_tree(tmp_path / "parts")
    if case == "no-train":
        shutil.rmtree(root / "part" / "train")
        return [f"data.root={root}"], "no sub-folder of .* has a train/ folder; data.root must hold"
    if case == "root-is-the-category":
        return [f"data.root={root / 'part'}"], f"itself a category: set data.root={root} data.category=part"
    if case == "category-without-train":
        shutil.copytree(root / "part" / "test", root / "other" / "test")
        return [f"data.root={root}", "data.category=other"], "other has no train/ folder"
    if case == "wrong-category":
        return [f"data.root={root}", "data.category=prat"], "no category 'prat'; available categories: part"
    if case == "empty-train":
        for path in (root / "part" / "train" / "good").iterdir():
            path.unlink()
        return [f"data.root={root}", "data.category=part"], "train set under .* is empty"
    if case == "missing-root":
        return [f"data.root={tmp_path / 'nowhere'}"], "nowhere does not exist; set data.root"
    return [f"data.root={root}", "batch_size=0"], "batch_size must be an integer >= 1, got 0"


MISTAKES = ["no-train", "root-is-the-category", "category-without-train", "wrong-category", "empty-train",
            "missing-root", "bad-option"]


@pytest.mark.parametrize("case", MISTAKES)
def test_user_mistakes_print_the_message_alone(tmp_path, monkeypatch, capfd, caplog, case):
    import re

    args, needle = mistake(tmp_path, case)
    with caplog.at_level(logging.INFO, logger="adbench"):
        code = cli(monkeypatch, "data=folder", f"results_dir={tmp_path / 'results'}", *TINY, *args)
    printed = capfd.readouterr()
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 1 and re.search(needle, error) and len(error.splitlines()) == 1
    assert "Traceback" not in printed.out + printed.err and "Traceback" not in caplog.text


@pytest.mark.slow  # a subprocess or a multirun: seconds
def test_user_mistake_on_the_real_command_line(tmp_path):
    """The whole output of ``python -m adbench`` for a missing dataset: the message line, exit status 1."""
    command = [sys.executable, "-m", "adbench", "data=folder", f"data.root={tmp_path / 'nowhere'}",
               f"results_dir={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "nowhere does not exist" in lines[0], lines
    with_traceback = subprocess.run(command, capture_output=True, text=True, timeout=300,
                                    env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert with_traceback.returncode == 1 and "Traceback" in with_traceback.stderr


def test_garbage_leaderboard_gives_a_clear_error(tmp_path, capsys):
    from adbench.reporting.leaderboard import main

    for garbage in (b"hello,world\n1,2\n", b"", bytes(range(256))):
        (tmp_path / "leaderboard.csv").write_bytes(garbage)
        assert main(["--results", str(tmp_path)]) == 1
        message = capsys.readouterr().err
        assert message.startswith(f"error: {tmp_path / 'leaderboard.csv'} is not a") and "\n" == message[-1]
    assert main(["--results", str(tmp_path / "absent")]) == 1
    assert "no leaderboard at" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess or a multirun: seconds
def test_multirun_with_failed_jobs_exits_1_and_ends_with_the_summary(tmp_path, monkeypatch, caplog):
    root = parts_tree(tmp_path / "parts")
    common = ["data=folder", f"data.root={root}", f"results_dir={tmp_path / 'results'}",
              f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY]
    with caplog.at_level(logging.INFO, logger="adbench"):  # every run fails (a bad method parameter)
        assert cli(monkeypatch, *common, "data.category=part", "method.params.coreset_percentage=7,8",
                   multirun=True) == 1
    assert "sweep: 0 runs finished ok, 2 failed" in caplog.text and "failed: folder-" in caplog.text
    caplog.clear()
    time.sleep(1.1)  # a sweep counts the records finished since it started, stamped to the second
    with caplog.at_level(logging.INFO, logger="adbench"):  # every job fails before running (user mistakes)
        assert cli(monkeypatch, *common, "data.category=prat,part", "seed=-1,0", multirun=True) == 1
    assert "sweep: 1 runs finished ok, 0 failed" in caplog.text
    failed_jobs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("failed job")]
    assert len(failed_jobs) == 3 and any("data.category=prat seed=0" in m and "no category" in m
                                         for m in failed_jobs)
    assert "sweep: 0 runs and 3 jobs failed" in caplog.text
    caplog.clear()
    time.sleep(1.1)
    with caplog.at_level(logging.INFO, logger="adbench"):  # all ok (the finished run is skipped)
        assert cli(monkeypatch, *common, "data.category=part", multirun=True) == 0
    assert "sweep: 0 runs finished ok, 0 failed" in caplog.text and "jobs failed" not in caplog.text


# ----------------------------------------------------------------------------- 8: log lines, progress bars


def test_log_lines_round_metrics_and_progress_follows_the_terminal(tmp_path, monkeypatch, caplog):
    import re

    from adbench.runner import show_progress

    root = parts_tree(tmp_path / "parts")
    with caplog.at_level(logging.INFO, logger="adbench"):
        assert cli(monkeypatch, "data=folder", f"data.root={root}", "data.category=part",
                   f"results_dir={tmp_path / 'results'}", *TINY) == 0
    (line,) = [r.getMessage() for r in caplog.records if "image AUROC" in r.getMessage()]
    assert re.fullmatch(r"folder-[0-9a-f]{8}/part/patchcore/[0-9a-f]{16}  image AUROC [01]\.\d{3}  "
                        r"pixel AUROC [01]\.\d{3}", line), line
    assert compose([]).progress == "auto"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert show_progress("auto") is False and show_progress(True) is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress("auto") is True and show_progress(False) is False
    with pytest.raises(DataError, match="progress must be true, false or auto, got 'yes please'"):
        show_progress("yes please")
