"""Saved models and their thresholds' data: K-fold held-out scores of the training images
(never test images), from which :mod:`adbench.predict` takes its threshold."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from adbench import __version__
from adbench.data import Category, Sample
from adbench.method import Context, Method
from adbench.results import atomic_write_bytes
from adbench.runner.build import build_context, build_method, fit_method, predict_category
from adbench.runner.provenance import seed_everything


def calibration_folds(samples: list[Sample], folds: int, seed: int) -> list[list[Sample]]:
    """Split training samples into ``folds`` disjoint folds of (almost) equal size, by a seeded
    permutation of the samples sorted by path; every sample lands in exactly one fold."""
    ordered = sorted(samples, key=lambda s: s.image_path)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return [[ordered[i] for i in sorted(order[k::folds])] for k in range(folds)]


def held_out_scores(
    cfg: DictConfig, category: Category, device: torch.device, folds: int
) -> dict[str, Any] | None:
    """Out-of-sample scores of the training images, for thresholds (``save_model=true``): for each of
    ``folds`` folds, a fresh method fitted on the other training images scores the fold's images.
    None when ``folds`` < 2, there are fewer training images than folds, or the protocol is not
    ``one_class`` (few-shot references are not a training set to split)."""
    if folds < 2 or len(category.train) < folds or cfg.get("protocol", "one_class") != "one_class":
        return None
    parts: dict[str, list[Any]] = {"paths": [], "image_scores": [], "anomaly_maps": []}
    for fold in calibration_folds(category.train, folds, int(cfg.seed)):
        held = {s.image_path for s in fold}
        kept = [s for s in category.train if s.image_path not in held]
        seed_everything(int(cfg.seed))
        method = build_method(cfg).to(device)
        ctx = build_context(cfg, method, dataclasses.replace(category, train=kept), device)
        fit_method(method, ctx)
        out = predict_category(method, ctx, fold)
        parts["paths"] += out["paths"]
        parts["image_scores"].append(out["image_scores"])
        parts["anomaly_maps"].append(out["anomaly_maps"])
    return {"paths": parts["paths"], "image_scores": np.concatenate(parts["image_scores"]),
            "anomaly_maps": np.concatenate(parts["anomaly_maps"])}


def _score_summary(out: dict[str, Any]) -> dict[str, Any]:
    """Per image: path, image score, and the maximum and median of its anomaly map."""
    maps = out["anomaly_maps"].reshape(len(out["paths"]), -1)
    return {"paths": list(out["paths"]), "image_scores": out["image_scores"].tolist(),
            "map_max": maps.max(axis=1).tolist(), "map_median": np.median(maps, axis=1).tolist()}


def model_bytes(method: Method, cfg: DictConfig, train_out: dict[str, Any], held_out: dict[str, Any] | None,
                 record: dict[str, Any]) -> bytes:
    """The fitted model file: weights, the config that built it, the run's id and backbone weights tag,
    the training images' scores under the final model (``train_scores``) and, with
    ``calibration_folds`` >= 2, their out-of-sample scores (``held_out_scores``), from which
    ``adbench.predict`` takes its threshold (never from test data)."""
    model = {
        "state_dict": method.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True),
        "train_scores": _score_summary(train_out),
        "held_out_scores": None if held_out is None else _score_summary(held_out),
        "calibration_folds": int(cfg.get("calibration_folds") or 0),
        "run_id": record["run_id"], "weights": record.get("weights"), "adbench_version": __version__,
    }
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def save_model(cfg: DictConfig, method: Method, ctx: Context, device: torch.device, record: dict[str, Any],
               path: Path) -> None:
    """``save_model=true``: the fitted model file at ``path`` (:func:`model_bytes`), with the training
    images' scores under the final model and, with ``calibration_folds`` >= 2, their held-out scores."""
    train_out = predict_category(method, ctx, ctx.category.train)
    held_out = held_out_scores(cfg, ctx.category, device, int(cfg.get("calibration_folds") or 0))
    atomic_write_bytes(path, model_bytes(method, cfg, train_out, held_out, record))
