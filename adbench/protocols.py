"""Evaluation protocols: what a method may see, and what the record must state.

``one_class`` (default): fit on the category's train/good images, evaluate on its test set.

``few_shot`` (ResAD's class-generalizable setting, ``protocol=few_shot source=<dataset> shots=K``):

* **Targets.** The evaluated categories are ``data``'s. Each gets K reference images ("shots")
  drawn without replacement, by ``shot_seed``, from its *train/good* images only, so a reference
  is never a test image; the runner replaces ``category.train`` by the shots, so every one-class
  method (PatchCore, PaDiM, ...) runs unchanged as a few-shot baseline fitted on K images.
* **Source.** Methods with ``uses_source = True`` (ResAD) also receive the source dataset's
  categories in ``ctx.source``, with their train *and* test sets (real anomalies and masks). That
  consumes the source's test sets, so the record says so, and the source categories are never
  evaluated in the same run.
* **Same dataset.** When ``source`` names the evaluated dataset, its categories are split: a
  family with a ``source_target_split`` attribute (``toy``: source group brick, grass, tissue,
  coins; target group gravel, page, coffee, cat) gives the default groups, otherwise
  ``source_categories`` must name the source group. Requesting a source category as a target
  is an error.

:func:`record_fields` is what a few-shot record adds: source, its categories, K, the shot seed, the
reference files and whether the source's test set was consumed by training.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from adbench.data import Category, DataError, Sample

PROTOCOLS = ("one_class", "few_shot")


@dataclass(frozen=True)
class FewShotSettings:
    """The ``few_shot`` keys of the run config (see ``conf/config.yaml``)."""

    source: str
    source_root: str | None
    source_categories: tuple[str, ...] | None
    shots: int
    shot_seed: int

    @classmethod
    def from_config(cls, cfg: DictConfig) -> FewShotSettings:
        """Read and check ``source``, ``source_root``, ``source_categories``, ``shots``, ``shot_seed``."""
        source = cfg.get("source")
        if not source:
            raise DataError("protocol=few_shot needs source=<dataset> (the dataset to train on)")
        shots = int(cfg.get("shots") or 0)
        if shots < 1:
            raise DataError(f"protocol=few_shot needs shots >= 1, got shots={cfg.get('shots')}")
        chosen = cfg.get("source_categories")
        if chosen is not None and not isinstance(chosen, str):
            chosen = ",".join(OmegaConf.to_container(chosen))
        names = tuple(c.strip() for c in chosen.split(",") if c.strip()) if chosen else None
        root = cfg.get("source_root")
        seed = int(cfg.get("shot_seed", cfg.seed))
        return cls(str(source), str(root) if root else None, names, shots, seed)

    def hash_fields(self) -> dict[str, Any]:
        """What changes a few-shot job's numbers (the source root does not)."""
        return {"source": self.source, "source_categories": self.source_categories, "shots": self.shots,
                "shot_seed": self.shot_seed}


def protocol_name(cfg: DictConfig) -> str:
    """``cfg.protocol``, checked against :data:`PROTOCOLS`."""
    name = str(cfg.get("protocol", "one_class"))
    if name not in PROTOCOLS:
        raise DataError(f"unknown protocol {name!r}; known protocols: {', '.join(PROTOCOLS)}")
    return name


def draw_shots(train: Sequence[Sample], shots: int, seed: int, category: str) -> list[Sample]:
    """K reference samples drawn without replacement from the normal *train* samples of one category.

    Deterministic in (``seed``, ``category``, the set of train files): candidates are sorted by path
    and drawn with numpy's PCG64 seeded by ``[seed, crc32(category)]``, so every category gets its
    own draw. The shots come back sorted by path. DataError when a candidate is not a normal train
    sample or when there are fewer than ``shots`` candidates.
    """
    bad = [s.image_path for s in train if s.label != 0 or s.split != "train"]
    if bad:
        raise DataError(f"{category}: reference shots must be normal train images; got {bad[:3]}")
    candidates = sorted(train, key=lambda s: s.image_path)
    if len(candidates) < shots:
        raise DataError(f"{category}: shots={shots} but only {len(candidates)} train/good images")
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
    chosen = sorted(rng.choice(len(candidates), size=shots, replace=False).tolist())
    return [candidates[i] for i in chosen]


def apply_few_shot(category: Category, settings: FewShotSettings) -> Category:
    """A copy of ``category`` whose train list is its K shots (the test list is unchanged).

    ``info["few_shot"]`` keeps the number of train images the shots were drawn from. DataError if a
    shot file is also a test file.
    """
    shots = draw_shots(category.train, settings.shots, settings.shot_seed, category.name)
    test_files = {s.image_path for s in category.test}
    leaked = [s.image_path for s in shots if s.image_path in test_files]
    if leaked:
        raise DataError(f"{category.dataset}/{category.name}: reference shots {leaked} are test images")
    info = dict(category.info)
    info["few_shot"] = {"n_train_available": len(category.train)}
    return replace(category, train=shots, info=info)


def split_categories(
    family: Any, settings: FewShotSettings, data_name: str, wanted: str
) -> tuple[list[str], list[str]]:
    """(source category names, target category names) for ``data.category=wanted``.

    Different datasets: every category of the source (or ``source_categories``) vs the requested
    targets. Same dataset: the family's ``source_target_split`` or ``source_categories``; targets
    default to the rest and may never be source categories.
    """
    requested = None if wanted == "all" else [c.strip() for c in wanted.split(",") if c.strip()]
    if settings.source != data_name:
        targets = requested or family.categories()
        return list(settings.source_categories or ()), targets
    split = getattr(family, "source_target_split", None)
    if settings.source_categories:
        sources = list(settings.source_categories)
        default_targets = [c for c in family.categories() if c not in sources]
    elif split is not None:
        sources, default_targets = list(split[0]), list(split[1])
    else:
        raise DataError(
            f"source={settings.source} is the evaluated dataset and it has no built-in source/target split; "
            "set source_categories=<comma-separated source group> (the rest are the targets)"
        )
    targets = requested or default_targets
    overlap = sorted(set(targets) & set(sources))
    if overlap:
        raise DataError(
            f"{data_name}: {', '.join(overlap)} belong to the source group {', '.join(sources)} of the "
            f"few-shot split and cannot be evaluated; targets: {', '.join(default_targets)}"
        )
    return sources, targets


def load_source(cfg: DictConfig, settings: FewShotSettings, names: Sequence[str]) -> list[Category]:
    """The source categories (train + test), loaded from ``source_root`` or, for the evaluated dataset,
    from ``data.root`` with the same options; all of the source's categories when ``names`` is empty."""
    from adbench.datasets import build as build_dataset

    if settings.source == cfg.data.name:
        options = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items()
                   if k not in ("name", "root", "download", "category")}
        root = settings.source_root or cfg.data.get("root")
    else:
        options, root = {}, settings.source_root
    family = build_dataset(settings.source, root, download=False, **options)
    categories = []
    for name in names or family.categories():
        category = family.load(name)
        category.validate()
        categories.append(category)
    return categories


def record_fields(category: Category, settings: FewShotSettings, sources: Sequence[str],
                  uses_source: bool) -> dict[str, Any]:
    """What a few-shot record states besides the metrics (saved in its JSON)."""
    consumed = (
        f"the train and test sets of {settings.source}/{{{', '.join(sources)}}} were consumed by training; "
        "this record evaluates the target category only and is never an evaluation of the source"
        if uses_source else
        f"this method trained on the {settings.shots} reference shots only; the source was not used"
    )
    return {
        "source": settings.source, "source_categories": list(sources), "shots": settings.shots,
        "shot_seed": settings.shot_seed, "reference_files": [s.image_path for s in category.train],
        "n_train_available": category.info.get("few_shot", {}).get("n_train_available"),
        "source_test_consumed": bool(uses_source), "protocol_note": consumed,
    }
