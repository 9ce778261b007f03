"""DRAEM and CutPaste: augmentation throughput (images/s) and training-step time.

Augmentation at 256 px (the papers' resolution) on the run's device: CutPaste, Scar, CutPaste's
full 3-way view builder (whole-image colour jitter + both augmentations) and DRAEM's synthesis
(builtin textures, cache warm). Training steps (forward + backward + optimiser step, best of 3 after
a warm-up) for the CPU presets (DRAEM in fp32 and bf16), and for the official configurations when
a GPU is present (one 256 px official step takes minutes on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import OmegaConf

from adbench.components.synthesis.cutpaste import cutpaste, scar
from adbench.components.synthesis.draem import DraemSynthesis
from adbench.components.synthesis.textures import BuiltinTextures
from adbench.config import compose
from adbench.devices import synchronize
from adbench.methods.cutpaste import CutPaste
from adbench.methods.draem import Draem
from adbench.perf import benchmark, report, timed


def augmentation_throughput(device: torch.device, side: int = 256) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(32, 3, side, side, generator=gen).to(device)
    method = CutPaste(encoder="test_resnet").to(device)

    def per_second(fn: Callable[[], object], n: int) -> float:
        def run() -> None:
            fn()
            synchronize(device)

        run()
        return n / timed(run, repeat=3)

    report(f"cutpaste augment {side}px", {
        "device": str(device),
        "cutpaste_img_per_s": per_second(lambda: cutpaste(images, gen), 32),
        "scar_img_per_s": per_second(lambda: scar(images, gen), 32),
        "3way_views_img_per_s": per_second(lambda: method.augment(images, gen), 96),
    })
    synthesis = DraemSynthesis(BuiltinTextures())
    clean = images[:8]
    report(f"draem synthesis {side}px", {
        "device": str(device), "img_per_s": per_second(lambda: synthesis(clean, gen), 8),
        "textures": synthesis.source.describe(),
    })


def _params(name: str) -> tuple[dict, int]:
    method_cfg = compose([f"method={name}"]).method
    params = OmegaConf.to_container(method_cfg.params, resolve=True)
    return params, int(method_cfg.image.crop)


def cutpaste_step(name: str, device: torch.device) -> None:
    params, side = _params(name)
    method = CutPaste(**params).to(device)
    side = params["patch_size"] or side
    clean = torch.rand(params["batch_clean"], 3, side, side).to(device)
    gen = torch.Generator().manual_seed(0)
    optimiser = method.make_optimiser()
    images, labels = method.augment(clean, gen)

    def step() -> None:
        method.train_step(images, labels, optimiser)
        synchronize(device)

    step()
    seconds = timed(step, repeat=3)
    report(f"cutpaste train step {name}", {
        "device": str(device), "images_per_step": images.shape[0], "side": side, "step_s": seconds,
        "steps": params["steps"], "est_train_s": seconds * params["steps"],
    })


def draem_step(name: str, device: torch.device, **overrides: object) -> None:
    params, side = _params(name)
    params.update(overrides)
    method = Draem(**params).to(device)
    synthesis = DraemSynthesis(BuiltinTextures())
    clean = torch.rand(params["batch_size"], 3, side, side).to(device)
    batch = synthesis(clean, torch.Generator().manual_seed(0))
    optimiser = method.make_optimiser()

    def step() -> None:
        method.train_step(batch, optimiser)
        synchronize(device)

    step()
    seconds = timed(step, repeat=3)
    steps = params["epochs"] * -(-40 // params["batch_size"])  # a toy category: 40 train images
    report(f"draem train step {name} {params['precision']}", {
        "device": str(device), "batch": params["batch_size"], "side": side, "step_s": seconds,
        "toy_steps": steps, "est_toy_train_s": seconds * steps,
    })


@benchmark("draem_cutpaste")
def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    augmentation_throughput(device)
    cutpaste_step("cutpaste_cpu", device)
    cutpaste_step("cutpaste_patch_cpu", device)
    for precision in ("fp32", "bf16"):  # bf16 pays only on CPUs with bf16 units (components.precision)
        draem_step("draem_cpu", device, precision=precision)
    if device.type == "cuda":
        cutpaste_step("cutpaste", device)
        cutpaste_step("cutpaste_patch", device)
        draem_step("draem", device)
