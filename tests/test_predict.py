"""Saved models: ``save_model=true`` then ``python -m adbench.predict`` reproduces the run's scores,
with a threshold computed from training images only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from adbench import predict
from adbench.config import compose
from adbench.runner import run


@pytest.fixture(scope="module")
def saved(toy_root, tmp_path_factory) -> dict:
    """A PatchCore run at 32 px on toy/brick with save_model=true: its record and file paths."""
    results_dir = tmp_path_factory.mktemp("results")
    threads = torch.get_num_threads()
    try:
        (record,) = run(compose([
            "method=patchcore", f"data.root={toy_root}", "data.category=brick", f"results_dir={results_dir}",
            "method.image.resize=32", "method.image.crop=32", "progress=false", "threads=1",
            "save_model=true", "cache.enabled=false",
        ]))
    finally:
        torch.set_num_threads(threads)
    assert record["status"] == "ok", record.get("traceback")
    stem = results_dir / "runs" / "toy" / "brick" / "patchcore" / record["config_hash"]
    return {"record": record, "model": stem.with_suffix(".model.pt"), "npz": stem.with_suffix(".npz")}


def test_predict_round_trips_the_saved_model(saved, toy_root, tmp_path):
    table = predict.run(saved["model"], toy_root / "brick" / "test", tmp_path / "out", heatmaps=False)
    with np.load(saved["npz"]) as data:
        expected = dict(zip(data["paths"].tolist(), data["image_scores"].tolist()))
    assert len(table) == len(expected) == 260  # toy v2: 130 good + 130 defective test images
    ours = table.set_index("path")["image_score"]
    np.testing.assert_allclose([ours[p] for p in expected], list(expected.values()), rtol=1e-6)
    written = pd.read_csv(tmp_path / "out" / "scores.csv")
    np.testing.assert_allclose(written["image_score"], table["image_score"], rtol=1e-7)
    assert list(written.columns) == ["path", "image_score", "threshold", "anomalous", "map_max",
                                     "pixel_threshold", "area_above", "calibration"]
    good = written["path"].str.contains("/good/")
    assert written.loc[~good, "anomalous"].mean() > written.loc[good, "anomalous"].mean()


def test_threshold_comes_from_held_out_training_scores(saved, toy_root, tmp_path):
    from adbench.devices import resolve_device
    from adbench.runner import (
        build_context,
        build_method,
        calibration_folds,
        load_categories,
        predict_category,
    )

    model = predict.load_model(saved["model"])
    bundle = torch.load(saved["model"], weights_only=True)
    held_out = bundle["held_out_scores"]
    train = sorted(str(p) for p in (toy_root / "brick" / "train" / "good").glob("*.png"))
    assert bundle["calibration_folds"] == 5 and sorted(held_out["paths"]) == train  # each train image once
    assert model.calibration == "held-out"
    np.testing.assert_allclose(model.image_scores, held_out["image_scores"])
    # literal reference for one fold: a fresh model fitted without the fold scores the fold's images
    cfg = model.config
    (category,) = load_categories(cfg)
    fold = calibration_folds(category.train, 5, int(cfg.seed))[2]
    assert len(fold) == 8
    torch.manual_seed(int(cfg.seed))
    fresh = build_method(cfg)
    device = resolve_device(cfg.device)  # the saved model's device: GPU kernels round differently
    rest = replace(category, train=[s for s in category.train if s not in fold])
    ctx = build_context(cfg, fresh.to(device), rest, device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the saved run (threads=1): another thread count rounds differently
    try:
        fresh.fit(ctx)
        out = predict_category(fresh.eval(), ctx, fold)
    finally:
        torch.set_num_threads(threads)
    stored = dict(zip(held_out["paths"], held_out["image_scores"]))
    np.testing.assert_allclose(out["image_scores"], [stored[s.image_path] for s in fold], rtol=1e-5)
    # out of sample: higher than what the final model gives the same (seen) images
    in_sample = dict(zip(bundle["train_scores"]["paths"], bundle["train_scores"]["image_scores"]))
    assert np.mean([stored[p] for p in train]) > np.mean([in_sample[p] for p in train])
    image, pixel = model.thresholds()
    assert image == pytest.approx(max(held_out["image_scores"]))
    assert pixel == pytest.approx(max(held_out["map_max"]))
    assert model.thresholds(0.5)[0] == pytest.approx(np.median(held_out["image_scores"]))
    assert model.thresholds(threshold=3.0)[0] == 3.0
    with pytest.raises(ValueError, match="quantile"):
        model.thresholds(1.5)
    # without held-out scores (calibration_folds=0) the final model's in-sample scores are used
    torch.save(bundle | {"held_out_scores": None}, tmp_path / "in_sample.model.pt")
    fallback = predict.load_model(tmp_path / "in_sample.model.pt")
    assert fallback.calibration == "in-sample"
    assert fallback.thresholds()[0] == pytest.approx(max(bundle["train_scores"]["image_scores"]))


def test_calibration_folds_partition_the_training_images():
    from adbench.data import Sample
    from adbench.runner import calibration_folds

    samples = [Sample(f"/t/{i:03d}.png", 0, None, "good", "c", "train") for i in range(23)]
    folds = calibration_folds(list(reversed(samples)), 5, seed=3)
    assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
    assert sorted(s.image_path for f in folds for s in f) == [s.image_path for s in samples]
    assert folds == calibration_folds(samples, 5, seed=3)  # order-independent, seeded
    assert folds != calibration_folds(samples, 5, seed=4)


def test_cli(saved, toy_root, tmp_path):
    one = next((toy_root / "brick" / "test" / "good").glob("*.png"))
    out = tmp_path / "cli"
    assert predict.main([f"model={saved['model']}", f"images={one}", f"out={out}", "quantile=0.9"]) == 0
    table = pd.read_csv(out / "scores.csv")
    (png,) = (out / "heatmaps").glob("*.png")
    assert len(table) == 1 and png.name == f"0000_good_{one.stem}.png"
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 300
    with pytest.raises(SystemExit, match="missing images"):
        predict.main([f"model={saved['model']}"])
    with pytest.raises(SystemExit, match="unexpected argument"):
        predict.main(["--model", "x"])
    with pytest.raises(FileNotFoundError, match="save_model=true"):
        predict.load_model(tmp_path / "missing.model.pt")


def test_load_fitted_state_gives_buffers_their_fitted_shape():
    class Bank(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("bank", torch.empty(0, 4))
            self.head = torch.nn.Linear(4, 1)

    fitted = Bank()
    fitted.bank = torch.arange(12.0).reshape(3, 4)
    fresh = Bank()
    with pytest.raises(RuntimeError, match="size mismatch"):
        fresh.load_state_dict(fitted.state_dict())
    predict.load_fitted_state(fresh, fitted.state_dict())
    assert torch.equal(fresh.bank, fitted.bank) and torch.equal(fresh.head.weight, fitted.head.weight)
