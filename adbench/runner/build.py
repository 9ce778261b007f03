"""Build a job's method and its context from the config, fit it, and run it over images."""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from adbench import protocols
from adbench.backbones import build_backbone
from adbench.data import Category, DataError, ImageTransform, Sample, iterate_batches
from adbench.devices import synchronize
from adbench.features import FeatureExtractor
from adbench.method import Context, Method
from adbench.registry import get_method


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


def show_progress(setting: object) -> bool:
    """The ``progress`` setting: true / false, or ``auto`` = bars only when stderr is a terminal (none
    in CI logs or redirected output); DataError for anything else."""
    if setting == "auto":
        return sys.stderr.isatty()
    if isinstance(setting, bool):
        return setting
    raise DataError(f"progress must be true, false or auto, got {setting!r}")
