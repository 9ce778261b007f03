"""One job: build the data and the method, fit on train images, predict the test set, score, record.

A job is (method, dataset, category, seed, config). Its config hash covers everything that can
change the numbers (method and backbone config, transform, dataset and category, protocol, seed)
and nothing that cannot (results_dir, progress bars, cache settings, device).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from adbench import __version__, protocols
from adbench.backbones import build_backbone
from adbench.data import Category, DataError, ImageTransform, Sample, iterate_batches, stable_hash
from adbench.datasets import build as build_dataset
from adbench.devices import resolve_device, synchronize
from adbench.features import FeatureExtractor
from adbench.method import Context, Method
from adbench.metrics import aupimo, evaluate
from adbench.registry import get_method
from adbench.results import atomic_write_bytes, read_record, record_path, write_record
from adbench.stats import bootstrap, ci_settings

log = logging.getLogger("adbench")
HASH_KEYS = ("method", "backbone", "data", "protocol", "seed")
VOLATILE_DATA_KEYS = ("root", "download", "category", "verify")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def git_sha(repo_dir: Path | None = None) -> str:
    """The checkout's commit (12 hex digits) with ``+dirty`` when tracked files differ from it.

    A run started from an edited tree is then not mistaken for that commit's numbers. Returns
    ``"unknown"`` outside a git checkout (an installed wheel) or without git.
    """
    cwd = repo_dir or Path(__file__).parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if changes else sha


def config_hash(cfg: DictConfig, category: str) -> str:
    """Hash of everything that can change a job's numbers."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keyed = {k: resolved.get(k) for k in HASH_KEYS}
    data = dict(keyed["data"] or {})
    for key in VOLATILE_DATA_KEYS:
        data.pop(key, None)
    keyed["data"] = data
    keyed["category"] = category
    if protocols.protocol_name(cfg) == "few_shot":
        keyed["few_shot"] = protocols.FewShotSettings.from_config(cfg).hash_fields()
    return stable_hash(keyed)


class PeakMemory:
    """Peak resident set size (MB) of this process while the block runs, sampled every 10 ms,
    and peak CUDA memory (MB) when a GPU is used."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_rss_mb = 0.0
        self.peak_gpu_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())

    def __enter__(self) -> PeakMemory:
        self.peak_rss_mb = self.rss_mb()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())
        if self.device.type == "cuda":
            self.peak_gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20


def method_class(cfg: DictConfig) -> type[Method]:
    """The registered class of ``cfg.method.name``; DataError when the config's ``method.normalize``
    (kept in DRAEM's and CutPaste's YAML: it is part of their config hashes) contradicts the class's
    declared :attr:`Method.normalize`."""
    cls = get_method(cfg.method.name)
    declared = cfg.method.get("normalize")
    if declared is not None and declared != cls.normalize:
        raise DataError(f"method.normalize={declared!r} contradicts {cls.__name__}.normalize="
                        f"{cls.normalize!r} (the method decides its input normalisation); remove the key")
    return cls


def build_method(cfg: DictConfig) -> Method:
    params = OmegaConf.to_container(cfg.method.get("params") or {}, resolve=True)
    return method_class(cfg)(**params)


def backbone_name(cfg: DictConfig) -> str:
    """``backbone.name``, with the timm weight tag that the method's official code loads for that
    architecture where its preset names one (``method.backbone_tags``: ResAD's code gets timm's
    ``racm_in1k`` wide_resnet50_2, not torchvision's V1): ``wide_resnet50_2.tv_in1k`` →
    ``wide_resnet50_2.racm_in1k``."""
    name = str(cfg.backbone.name)
    tags = cfg.method.get("backbone_tags") or {}
    architecture = name.split(".")[0]
    return f"{architecture}.{tags[architecture]}" if architecture in tags else name


def build_context(cfg: DictConfig, method: Method, category: Category, device: torch.device) -> Context:
    """The transform (normalisation from the backbone's weights) and, for feature methods, the extractor."""
    image = cfg.method.image
    features = None
    mean, std = None, None
    if method.uses_backbone or method.normalize == "backbone":
        backbone = build_backbone(
            backbone_name(cfg), list(cfg.method.get("layers") or ["layer2", "layer3"]),
            weights=cfg.backbone.get("weights"), hub=bool(cfg.backbone.get("hub", True)),
        )
        mean, std = backbone.weights.mean, backbone.weights.std
    transform = ImageTransform.from_config(image, category.name, mean, std)
    if method.uses_backbone:
        features = FeatureExtractor(
            backbone, transform, device, enabled=bool(cfg.cache.enabled), max_gb=float(cfg.cache.max_gb),
            cache_dir=cfg.cache.get("dir"), max_disk_gb=cfg.cache.get("max_disk_gb"),
            cache_layers=list(cfg.cache.get("layers") or []),
            backbone_factory=functools.partial(
                build_backbone, backbone_name(cfg), weights=cfg.backbone.get("weights"),
                hub=bool(cfg.backbone.get("hub", True)),
            ),
        )
    return Context(
        category=category, transform=transform, device=device, seed=int(cfg.seed),
        batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers), features=features,
        progress=show_progress(cfg.progress),
    )


def fit_method(method: Method, ctx: Context) -> float:
    """Fit ``method`` in training mode on ``ctx``, leave it in eval mode; returns the fit seconds."""
    method.train()
    start = time.perf_counter()
    method.fit(ctx)
    synchronize(ctx.device)  # count the fit's queued GPU work
    seconds = time.perf_counter() - start
    method.eval()
    return seconds


def _host_float(values: torch.Tensor) -> torch.Tensor:
    """``values`` on the CPU as float32, or as float64 when the method computed them in float64 (CFlow's
    maps: rounding them to float32 would tie the extreme pixels again)."""
    return values.cpu() if values.dtype == torch.float64 else values.float().cpu()


def predict_category(method: Method, ctx: Context, samples: list[Sample] | None = None) -> dict[str, Any]:
    """Run the fitted method once over ``samples`` (default: the test set); maps at the evaluation
    resolution."""
    samples = ctx.category.test if samples is None else samples
    scores, maps, masks, labels, paths, defects = [], [], [], [], [], []
    infer_s = 0.0
    batches = iterate_batches(
        samples, ctx.transform, batch_size=ctx.batch_size, binarize=ctx.category.mask_binarize,
        num_workers=ctx.num_workers,
    )
    for batch in tqdm(batches, desc=f"{method.name}: predict", disable=not ctx.progress, leave=False,
                      total=-(-len(samples) // ctx.batch_size)):
        start = time.perf_counter()
        pred = method.predict(batch, ctx)
        synchronize(ctx.device)
        infer_s += time.perf_counter() - start
        scores.append(_host_float(pred.image_scores))
        maps.append(_host_float(pred.anomaly_maps))
        masks.append(batch.masks)
        labels.append(batch.labels)
        paths += batch.paths
        defects += batch.defect_types
    return {
        "image_scores": torch.cat(scores).numpy(), "anomaly_maps": torch.cat(maps).numpy(),
        "masks": torch.cat(masks).numpy(), "labels": torch.cat(labels).numpy(), "paths": paths,
        "defect_types": defects, "infer_s": infer_s,
    }


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
    import io

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


def run_job(cfg: DictConfig, category: Category) -> dict[str, Any]:
    """Fit, predict, score and record one (method, dataset, category, seed, config) job."""
    chash = config_hash(cfg, category.name)
    path = record_path(cfg.results_dir, category.dataset, category.name, cfg.method.name, chash)
    existing = read_record(path)
    if existing is not None and existing.get("status") == "ok" and not cfg.force:
        recorded, current = existing.get("git_sha", "unknown"), git_sha()
        if recorded == current:
            log.info("skip %s/%s/%s: finished record %s (force=true re-runs)", category.dataset,
                     category.name, cfg.method.name, path)
        else:
            log.warning("skip %s: its record was made at commit %s, this tree is %s; the config is the "
                        "same, but changed code may change its numbers (force=true re-runs)",
                        path, recorded, current)
        return existing
    seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    size = ImageTransform.from_config(cfg.method.image, category.name)
    record: dict[str, Any] = {
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
    log.info("run %s (pid %d)", record["run_id"], os.getpid())
    try:
        ci = ci_settings(cfg.get("ci"))  # a bad interval setting fails before the fit
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
        has_masks = category.has_masks
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
        save_predictions(path.with_suffix(".npz"), out, replicates=boot.replicates)
        if cfg.get("save_model"):
            train_out = predict_category(method, ctx, ctx.category.train)
            held_out = held_out_scores(cfg, category, device, int(cfg.get("calibration_folds") or 0))
            model = model_bytes(method, cfg, train_out, held_out, record)
            atomic_write_bytes(path.with_suffix(".model.pt"), model)
        record["status"] = "ok"
    except Exception as err:
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()
        log.error("FAILED %s: %s", record["run_id"], record["error"])
    record["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_record(cfg.results_dir, record)
    return record


def attach_few_shot(cfg: DictConfig, method: Method, category: Category, ctx: Context,
                     record: dict[str, Any]) -> None:
    """few_shot: the source categories for methods that train on them, and the record's protocol fields."""
    settings = protocols.FewShotSettings.from_config(cfg)
    uses_source = method.uses_source
    sources = category.info["few_shot"]["source_categories"]
    if uses_source:
        ctx.source = protocols.load_source(cfg, settings, sources)
        sources = [c.name for c in ctx.source]
    record.update(protocols.record_fields(category, settings, sources or ["all"], uses_source))


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
    import io

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


def show_progress(setting: object) -> bool:
    """The ``progress`` setting: true / false, or ``auto`` = bars only when stderr is a terminal (none
    in CI logs or redirected output); DataError for anything else."""
    if setting == "auto":
        return sys.stderr.isatty()
    if isinstance(setting, bool):
        return setting
    raise DataError(f"progress must be true, false or auto, got {setting!r}")


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
