"""Score new images with a saved model: ``python -m adbench.predict model=PATH images=DIR``.

A model file is what ``save_model=true`` writes beside a run record (``<hash>.model.pt``): the
method's fitted ``state_dict``, the full config that built it, and scores of the run's **training
images** (never test images). The method, transform and feature extractor are rebuilt from that
config, so new images go through exactly the evaluated pipeline.

Threshold (how an image is called anomalous), from training images only: the runner splits them
into ``calibration_folds`` folds (default 5), fits a fresh model on the other folds and scores each
fold with it, so every training image gets an out-of-sample score from a model that never saw it
(``held_out_scores``). By default the image threshold is the largest of those scores
(``quantile=1.0``) and the heatmaps' pixel threshold the largest anomaly-map value among them;
``quantile=q`` takes the q-quantile instead, ``threshold=t`` a fixed image threshold. Models fitted
on 4/5 of the data score normal images a little higher than the final model, so the threshold errs
slightly towards misses. Without held-out scores (``calibration_folds=0``, few-shot runs, fewer
training images than folds) the final model's in-sample training scores are used; those are far
too low for methods that memorise their training set (PatchCore's memory bank, PaDiM's per-position
Gaussians): measured on toy categories, 42–100 % of good test images were then flagged.

Options (``key=value``): ``model`` (required), ``images`` (a folder, searched recursively, or one
image; required), ``out`` (default ``predictions``), ``quantile``, ``threshold``, ``device`` (default
the model's config, ``auto``), ``batch_size``, ``heatmaps`` (``true``/``false``, default true).
Writes ``<out>/scores.csv`` (path, image_score, threshold, anomalous, map_max, pixel_threshold,
area_above = fraction of pixels above it, calibration = held-out or in-sample) and
``<out>/heatmaps/<NNNN>_<folder>_<name>.png`` (input beside the map, colour scale from a typical
calibration pixel (blue) through the pixel threshold (mid-scale) to twice as far above it (red),
outlined where the map exceeds the pixel threshold).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from adbench.data import IMAGE_EXTENSIONS, Category, DataError, ImageTransform, Sample
from adbench.devices import resolve_device
from adbench.method import Method
from adbench.reporting import viz
from adbench.results import atomic_write_text
from adbench.runner import build_context, build_method, predict_category


@dataclass
class SavedModel:
    """A fitted method rebuilt from a model file, with its config and the calibration scores of the
    training images: per image, the image score and the maximum and median of its anomaly map;
    ``calibration`` is ``"held-out"`` (K-fold, out-of-sample) or ``"in-sample"`` (final model)."""

    method: Method
    config: DictConfig
    image_scores: np.ndarray
    map_max: np.ndarray
    map_median: np.ndarray
    calibration: str
    run_id: str
    weights: str | None

    def thresholds(self, quantile: float = 1.0, threshold: float | None = None) -> tuple[float, float]:
        """(image threshold, pixel threshold) from the calibration scores (see module doc)."""
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile={quantile} must lie in [0, 1]")
        image = np.quantile(self.image_scores, quantile) if threshold is None else threshold
        return float(image), float(np.quantile(self.map_max, quantile))


def load_fitted_state(method: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``method.load_state_dict(state)`` after giving every parameter and buffer the stored shape,
    since fitted state (memory banks, statistics) is sized by ``fit`` and starts empty."""
    for key, stored in state.items():
        module_path, _, name = key.rpartition(".")
        module = method.get_submodule(module_path) if module_path else method
        if name in module._buffers and module._buffers[name] is not None:
            current = module._buffers[name]
            if current.shape != stored.shape:
                module._buffers[name] = torch.empty(stored.shape, dtype=stored.dtype, device=current.device)
        elif name in module._parameters and module._parameters[name] is not None:
            current = module._parameters[name]
            if current.shape != stored.shape:
                module._parameters[name] = torch.nn.Parameter(
                    torch.empty(stored.shape, dtype=stored.dtype, device=current.device),
                    requires_grad=current.requires_grad,
                )
    method.load_state_dict(state, strict=True)


def load_model(path: str | Path, device: str | None = None) -> SavedModel:
    """Rebuild the fitted method of a ``<hash>.model.pt`` file (weights only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file {path}; run with save_model=true to write <hash>.model.pt")
    bundle: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if "train_scores" not in bundle:
        raise ValueError(f"{path} has no training-image scores (written by an older adbench); re-run its job "
                         "with save_model=true force=true")
    config = OmegaConf.create(bundle["config"])
    if device is not None:
        config.device = device
    method = build_method(config)
    method.build_for_state(bundle["state_dict"])
    load_fitted_state(method, bundle["state_dict"])
    method.to(resolve_device(str(config.device))).eval()
    held_out = bundle.get("held_out_scores")
    scores = held_out or bundle["train_scores"]
    arrays = (np.asarray(scores[k], dtype=np.float64) for k in ("image_scores", "map_max", "map_median"))
    return SavedModel(method, config, *arrays, calibration="held-out" if held_out else "in-sample",
                      run_id=bundle.get("run_id", str(path)), weights=bundle.get("weights"))


def find_images(images: str | Path) -> list[Path]:
    """One image file, or every image under a folder (recursively, sorted)."""
    images = Path(images)
    if images.is_file():
        return [images]
    if not images.is_dir():
        raise FileNotFoundError(f"images={images} is neither an image file nor a folder")
    found = sorted(p for p in images.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {images}")
    return found


def predict_images(model: SavedModel, images: list[Path], batch_size: int | None = None) -> dict[str, Any]:
    """Scores [N] and anomaly maps [N, S, S] of ``images`` under the saved model's own pipeline."""
    config = model.config.copy()
    config.cache.enabled = False  # each image is seen once; features are rounded to fp16 either way
    if batch_size is not None:
        config.batch_size = batch_size
    samples = [Sample(str(p), 0, None, "unknown", "predict", "test") for p in images]
    category = Category(str(config.data.name), "predict", str(images[0].parent), [], samples)
    device = resolve_device(str(config.device))
    if config.get("threads"):
        torch.set_num_threads(int(config.threads))  # as the run did: same BLAS blocking, same scores
    ctx = build_context(config, model.method, category, device)
    tag = ctx.features.backbone.weights.tag if ctx.features is not None else None
    if tag is not None and model.weights and tag != model.weights:
        raise ValueError(f"backbone weights {tag} differ from the ones the model was fitted with "
                         f"({model.weights}); point backbone.weights at the original file")
    torch.manual_seed(int(config.seed))
    with torch.no_grad():
        return predict_category(model.method, ctx, samples)


def run(model_path: str | Path, images: str | Path, out: str | Path = "predictions", quantile: float = 1.0,
        threshold: float | None = None, device: str | None = None, batch_size: int | None = None,
        heatmaps: bool = True) -> pd.DataFrame:
    """Score every image, write ``<out>/scores.csv`` and (optionally) heatmap PNGs; returns the table."""
    model = load_model(model_path, device)
    files = find_images(images)
    result = predict_images(model, files, batch_size)
    image_threshold, pixel_threshold = model.thresholds(quantile, threshold)
    maps = result["anomaly_maps"]
    table = pd.DataFrame({
        "path": [str(p) for p in files],
        "image_score": result["image_scores"].astype(np.float64),
        "threshold": image_threshold,
        "anomalous": result["image_scores"] > image_threshold,
        "map_max": maps.reshape(len(files), -1).max(axis=1),
        "pixel_threshold": pixel_threshold,
        "area_above": (maps > pixel_threshold).reshape(len(files), -1).mean(axis=1),
        "calibration": model.calibration,
    })
    out = Path(out)
    atomic_write_text(out / "scores.csv", table.to_csv(index=False, float_format="%.8g"))
    if heatmaps:
        transform = display_transform(model.config)
        vmin = float(np.median(model.map_median))  # a typical normal pixel: blue
        vmax = 2 * pixel_threshold - vmin  # the pixel threshold sits mid-scale; red = far above it
        for i, path in enumerate(files):
            verdict = "ANOMALOUS" if table.loc[i, "anomalous"] else "normal"
            score = table.loc[i, "image_score"]
            caption = f"{path.name}: score {score:.4g} vs threshold {image_threshold:.4g} → {verdict}"
            fig = viz.prediction_figure(viz.display_image(path, transform), maps[i], caption, vmin, vmax,
                                        pixel_threshold)
            viz.save(fig, out / "heatmaps" / f"{i:04d}_{path.parent.name}_{path.stem}.png")
    return table


def display_transform(config: DictConfig) -> ImageTransform:
    """The evaluation transform (resize, crop) of a config, without normalisation (for display)."""
    return ImageTransform.from_config(config.method.image, config.data.get("category"))


def parse_args(argv: list[str]) -> dict[str, str]:
    """``key=value`` arguments → dict; SystemExit with the usage on anything else."""
    options = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("model", "images", "out", "quantile", "threshold", "device", "batch_size",
                                  "heatmaps"):
            raise SystemExit(f"unexpected argument {arg!r}\n\n{__doc__}")
        options[key] = value
    for required in ("model", "images"):
        if required not in options:
            raise SystemExit(f"missing {required}=...\n\n{__doc__}")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    table = run(
        options["model"], options["images"], options.get("out", "predictions"),
        quantile=float(options.get("quantile", 1.0)),
        threshold=float(options["threshold"]) if "threshold" in options else None,
        device=options.get("device"),
        batch_size=int(options["batch_size"]) if "batch_size" in options else None,
        heatmaps=options.get("heatmaps", "true").lower() in ("1", "true", "yes"),
    )
    out = options.get("out", "predictions")
    print(f"{len(table)} images, {int(table['anomalous'].sum())} above the threshold "
          f"{table['threshold'].iloc[0]:.6g} (from {table['calibration'].iloc[0]} training-image scores); "
          f"wrote {Path(out) / 'scores.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
