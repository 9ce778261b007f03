"""The method contract and the context a method runs in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import nn

from adbench.data import Batch, Category, DecodedImages, ImageTransform

if TYPE_CHECKING:
    from adbench.features import FeatureExtractor


@dataclass
class Prediction:
    """What a method returns for a batch.

    image_scores: float [B] (higher = more anomalous); anomaly_maps: float [B, S, S] at the
    evaluation resolution S of the batch.
    """

    image_scores: torch.Tensor
    anomaly_maps: torch.Tensor


@dataclass
class Context:
    """Everything a method may use besides its own config.

    ``train_batches()`` iterates the category's *training* images under ``transform``, decoding
    each file once per context (``decoded``: methods such as GLASS visit them twice an epoch); the
    test set is never reachable from here. ``features`` is the shared (cached) backbone extractor,
    or None for methods without a pretrained backbone. Under ``protocol=few_shot``
    (:mod:`adbench.protocols`) ``category.train`` holds the K reference shots and, for methods with
    ``uses_source = True``, ``source`` holds the source dataset's categories (train and test sets,
    with anomalies and masks) to train on; it is empty otherwise.
    """

    category: Category
    transform: ImageTransform
    device: torch.device
    seed: int
    batch_size: int = 8
    num_workers: int = 0
    features: FeatureExtractor | None = None
    progress: bool = True
    source: list[Category] = field(default_factory=list)
    decoded: DecodedImages = field(default_factory=DecodedImages, repr=False)

    def train_batches(self, shuffle: bool = False, seed: int | None = None) -> Iterator[Batch]:
        from adbench.data import iterate_batches

        return iterate_batches(
            self.category.train,
            self.transform,
            batch_size=self.batch_size,
            binarize=self.category.mask_binarize,
            num_workers=self.num_workers,
            shuffle=shuffle,
            seed=self.seed if seed is None else seed,
            decoded=self.decoded,
        )


class Method(nn.Module):
    """Base class of every registered method: the whole contract between a method and the runner.

    A subclass is registered with ``@register_method("<name>")``, built as
    ``Method(**cfg.method.params)`` (one ``self.<param> = <param>`` line per hyper-parameter), and
    implements :meth:`fit` (train images only, through ``ctx``) and :meth:`predict`. Fitted state
    lives in parameters and buffers, so ``state_dict()`` saves a fitted model.

    What a subclass may declare (class attributes; the runner reads them before building it):

    - ``uses_backbone``: True → ``ctx.features`` is the shared, cached backbone extractor.
    - ``uses_source``: True → under ``protocol=few_shot`` ``ctx.source`` holds the source dataset's
      categories to train on.
    - ``normalize``: ``"backbone"`` → images arrive normalised with the backbone weights' mean/std;
      ``"none"`` → pixel values in [0, 1] (the method normalises itself, or not at all). A method
      config may repeat it as ``normalize:`` (DRAEM's and CutPaste's do: the key is part of their
      recorded config hashes); the runner refuses a value that contradicts the class.

    What the runner reads after fitting (instance attributes, empty by default) into the record:

    - ``timings``: seconds of named fit phases → ``timing_<name>``.
    - ``info``: choices made while fitting (texture source, kNN backend) → ``info_<name>``.
    - ``loss_history``: mean training loss per epoch → ``train_loss``, so a budget can be judged
      on training data alone.

    A method whose :meth:`fit` creates submodules overrides :meth:`build_for_state`.
    """

    name: ClassVar[str] = ""
    uses_backbone: ClassVar[bool] = False
    uses_source: ClassVar[bool] = False
    normalize: ClassVar[Literal["backbone", "none"]] = "backbone"

    def __init__(self) -> None:
        super().__init__()
        self.timings: dict[str, float] = {}
        self.info: dict[str, str] = {}
        self.loss_history: list[float] = []

    def fit(self, ctx: Context) -> None:
        raise NotImplementedError

    def build_for_state(self, state: dict[str, torch.Tensor]) -> None:
        """Create the submodules that :meth:`fit` creates (sized by the data) with the shapes in
        ``state``, so a saved ``state_dict`` loads into a fresh instance (:func:`adbench.predict.load_model`).
        Default: nothing, for methods whose submodules all exist after ``__init__``."""

    @torch.no_grad()
    def predict(self, batch: Batch, ctx: Context) -> Prediction:
        raise NotImplementedError

    def n_params(self) -> int:
        """Number of parameters and buffers that make up the fitted model (memory banks count)."""
        tensors = list(self.parameters()) + list(self.buffers())
        return int(sum(t.numel() for t in tensors))
