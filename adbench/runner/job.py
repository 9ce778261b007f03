"""One job: build the data and the method, fit on train images, predict the test set, score, record;
and :func:`run`, every category of a config."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from adbench import __version__, protocols
from adbench.data import Category, DataError, ImageTransform
from adbench.datasets import build as build_dataset
from adbench.devices import resolve_device
from adbench.method import Context, Method
from adbench.metrics import aupimo, evaluate
from adbench.results import atomic_write_bytes, read_record, record_path, write_record
from adbench.runner.build import (
    attach_few_shot,
    backbone_name,
    build_context,
    build_method,
    fit_method,
    method_class,
    predict_category,
    show_progress,
)
from adbench.runner.calibration import save_model
from adbench.runner.provenance import config_hash, git_sha, seed_everything
from adbench.runner.resources import PeakMemory
from adbench.stats import bootstrap, ci_settings

log = logging.getLogger("adbench")


def per_image_aupimo(maps: np.ndarray, masks: np.ndarray, record: dict[str, Any]) -> np.ndarray | None:
    """AUPIMO of every test image (float [N], NaN for images without defect pixels), and its mean
    over the anomalous images as ``record["pixel_aupimo"]``; None, with ``record["aupimo_note"]``, where
    the test set is too small to reach AUPIMO's FPR range (fewer than 10^5 normal pixels)."""
    try:
        values = aupimo(maps, masks)
    except ValueError as err:
        record["aupimo_note"] = str(err)
        log.warning("no AUPIMO for %s: %s", record["run_id"], err)
        return None
    record["pixel_aupimo"] = float(np.nanmean(values))
    return values


def save_predictions(
    path: Path, out: dict[str, Any], keep: int = 3, replicates: dict[str, np.ndarray] | None = None
) -> None:
    """Scores, labels and paths of every test image, plus the maps of the ``keep`` highest- and
    lowest-scoring images (for reports), as ``<record>.npz``; with ``replicates`` (metric -> [B],
    :func:`adbench.stats.bootstrap`) also ``boot_<metric>``, float32 [B], for paired tests."""
    order = np.argsort(out["image_scores"])
    chosen = np.unique(np.concatenate([order[:keep], order[-keep:]]))
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, image_scores=out["image_scores"], labels=out["labels"], paths=np.array(out["paths"]),
        defect_types=np.array(out["defect_types"]), map_index=chosen,
        **({} if out.get("aupimo") is None else {"aupimo": out["aupimo"]}),
        maps=out["anomaly_maps"][chosen].astype(np.float32), masks=out["masks"][chosen],
        **{f"boot_{metric}": values.astype(np.float32) for metric, values in (replicates or {}).items()},
    )
    atomic_write_bytes(path, buffer.getvalue())


def finished_record(cfg: DictConfig, category: Category, path: Path) -> dict[str, Any] | None:
    """The finished (status ok) record at ``path`` unless ``force=true``; a warning when it was made at
    another commit. None when the job has to run."""
    existing = read_record(path)
    if existing is None or existing.get("status") != "ok" or cfg.force:
        return None
    recorded, current = existing.get("git_sha", "unknown"), git_sha()
    if recorded == current:
        log.info("skip %s/%s/%s: finished record %s (force=true re-runs)", category.dataset,
                 category.name, cfg.method.name, path)
    else:
        log.warning("skip %s: its record was made at commit %s, this tree is %s; the config is the "
                    "same, but changed code may change its numbers (force=true re-runs)",
                    path, recorded, current)
    return existing


def new_record(cfg: DictConfig, category: Category, chash: str, device: torch.device) -> dict[str, Any]:
    """The fields a job's record has before it runs: identity, provenance, data sizes, resolved config."""
    size = ImageTransform.from_config(cfg.method.image, category.name)
    return {
        "run_id": f"{category.dataset}/{category.name}/{cfg.method.name}/{chash}",
        "method": cfg.method.name, "variant": cfg.method.get("variant", "default"),
        "dataset": category.dataset, "category": category.name, "protocol": cfg.protocol,
        "backbone": backbone_name(cfg) if method_class(cfg).normalize == "backbone" else "none",
        "seed": int(cfg.seed), "config_hash": chash, "git_sha": git_sha(), "adbench_version": __version__,
        "torch_version": torch.__version__, "device": str(device), "n_train": len(category.train),
        "n_test": len(category.test), "image_size": f"{size.resize}->{size.crop}",
        "eval_resolution": size.crop,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def fit_and_predict(cfg: DictConfig, category: Category, device: torch.device,
                    record: dict[str, Any]) -> tuple[Method, Context, dict[str, Any]]:
    """Build the method, fit it on the training images and predict the test set
    (:func:`~adbench.runner.build.predict_category`'s dict); ``record`` gets the protocol fields, the
    backbone weights, times, peak memory, parameter count and what the method reports."""
    method = build_method(cfg).to(device)
    ctx = build_context(cfg, method, category, device)
    if cfg.protocol == "few_shot":
        attach_few_shot(cfg, method, category, ctx, record)
    if ctx.features is not None:
        record["weights"] = ctx.features.backbone.weights.tag
    with PeakMemory(device) as memory:
        record["fit_s"] = round(fit_method(method, ctx), 3)
        out = predict_category(method, ctx)
    record["infer_ms_per_img"] = round(1000 * out["infer_s"] / max(len(category.test), 1), 3)
    record["peak_rss_mb"] = round(memory.peak_rss_mb, 1)
    record["peak_gpu_mb"] = round(memory.peak_gpu_mb, 1)
    record["n_params"] = method.n_params()
    record.update({f"timing_{k}": round(v, 3) for k, v in method.timings.items()})
    record.update({f"info_{k}": str(v) for k, v in method.info.items()})
    if method.loss_history:  # training loss per epoch: judge a budget without test data
        record["train_loss"] = [round(float(v), 6) for v in method.loss_history]
    if ctx.features is not None:
        record.update(ctx.features.stats.as_dict())
    return method, ctx, out


def score(out: dict[str, Any], has_masks: bool, ci: dict[str, Any], record: dict[str, Any],
          npz: Path) -> None:
    """Every metric (:func:`adbench.metrics.evaluate`), AUPIMO and the bootstrap intervals into
    ``record``; the predictions and the bootstrap replicates to ``npz`` (:func:`save_predictions`)."""
    record.update(evaluate(
        out["image_scores"], out["labels"],
        out["anomaly_maps"] if has_masks else None, out["masks"] if has_masks else None,
    ))
    if has_masks:
        out["aupimo"] = per_image_aupimo(out["anomaly_maps"], out["masks"], record)
    boot = bootstrap(  # resamples of the test images in out["paths"] order (adbench/stats.py)
        out["image_scores"], out["labels"], *((out["anomaly_maps"], out["masks"]) if has_masks else ()),
        aupimo=out.get("aupimo"), **ci,
    )
    record.update(boot.intervals())
    record.update(ci_n_boot=boot.n_boot, ci_n_boot_pixel=boot.n_boot_pixel, ci_level=boot.level)
    save_predictions(npz, out, replicates=boot.replicates)


def run_job(cfg: DictConfig, category: Category) -> dict[str, Any]:
    """Fit, predict, score and record one (method, dataset, category, seed, config) job; a finished
    record of the same config is returned as it is."""
    chash = config_hash(cfg, category.name)
    path = record_path(cfg.results_dir, category.dataset, category.name, cfg.method.name, chash)
    finished = finished_record(cfg, category, path)
    if finished is not None:
        return finished
    seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    record = new_record(cfg, category, chash, device)
    log.info("run %s (pid %d)", record["run_id"], os.getpid())
    try:
        ci = ci_settings(cfg.get("ci"))  # a bad interval setting fails before the fit
        method, ctx, out = fit_and_predict(cfg, category, device, record)
        score(out, category.has_masks, ci, record, path.with_suffix(".npz"))
        if cfg.get("save_model"):
            save_model(cfg, method, ctx, device, record, path.with_suffix(".model.pt"))
        record["status"] = "ok"
    except Exception as err:
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()
        log.error("FAILED %s: %s", record["run_id"], record["error"])
    record["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_record(cfg.results_dir, record)
    return record


def load_categories(cfg: DictConfig) -> list[Category]:
    """The categories named by ``data.category`` (``all`` = every category of the dataset).

    Under ``protocol=few_shot`` (:mod:`adbench.protocols`): the target categories only, each with
    ``train`` replaced by its K reference shots. Every category is validated (and, unless
    ``data.verify=false``, its files decoded: :meth:`Category.verify_files`) before any job runs.
    """
    if OmegaConf.is_missing(cfg.data, "root"):
        raise DataError(f"data={cfg.data.name} needs data.root=<folder holding <category>/train/good/ trees>")
    options = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items()
               if k not in ("name", "root", "download", "category")}
    verify = options.pop("verify", True)
    family = build_dataset(
        cfg.data.name, cfg.data.get("root"), download=bool(cfg.data.get("download")), **options
    )
    if family.name != cfg.data.name:
        log.info("data=%s at %s is the dataset %s", cfg.data.name, family.root, family.name)
    wanted = str(cfg.data.get("category", "all"))
    names = family.categories() if wanted == "all" else [c.strip() for c in wanted.split(",")]
    settings = None
    if protocols.protocol_name(cfg) == "few_shot":
        settings = protocols.FewShotSettings.from_config(cfg)
        sources, names = protocols.split_categories(family, settings, cfg.data.name, wanted)
    categories = []
    for name in names:
        category = family.load(name)
        category.validate()
        if verify:  # unreadable test files or mismatched masks fail here, before any fit
            category.verify_files()
        if settings is not None:
            category = protocols.apply_few_shot(category, settings)
            category.info["few_shot"]["source_categories"] = sources
        categories.append(category)
    return categories


def check_run_settings(cfg: DictConfig) -> None:
    """DataError naming the key for a run setting of the wrong type or range, before any data is read."""
    for key, minimum in (("seed", 0), ("batch_size", 1), ("num_workers", 0), ("threads", 1)):
        value = cfg.get(key)
        if key == "threads" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise DataError(f"{key} must be an integer >= {minimum}, got {value!r}")
    show_progress(cfg.get("progress"))


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """Run every category of ``cfg.data`` with ``cfg.method``; returns the records."""
    check_run_settings(cfg)
    torch.set_num_threads(int(cfg.get("threads") or torch.get_num_threads()))
    return [run_job(cfg, category) for category in load_categories(cfg)]

