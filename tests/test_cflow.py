"""CFlow and the shared flows: encoding, log-likelihood, schedule, rotation, no test-set statistics,
feature sharing across the methods of a sweep."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from adbench.methods.cflow import CFlow, cflow_learning_rate, rotate
from conftest import TINY_METHODS
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from adbench.components.flows import conditional_flow, flow_log_prob, positional_encoding_2d, random_rotation
from adbench.config import compose
from adbench.data import iterate_batches
from adbench.devices import resolve_device
from adbench.features import memory_tier
from adbench.runner import build_context, build_method, load_categories, run

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
TINY = ["data=toy", "method.image.resize=64", "method.image.crop=64", "progress=false", "batch_size=16"]
TINY_CFLOW = ["method=cflow_cpu", *TINY_METHODS["cflow"]]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_positional_encoding_matches_the_formula():
    """Channel 2i / 2i+1 = sin / cos(x·ω_i) for the first half, the same of y for the second half,
    ω_i = exp(−2i·ln(10⁴)/(P/2)) (official positionalencoding2d), written as explicit loops."""
    p, h, w = 16, 3, 5
    half = p // 2
    expected = np.zeros((p, h, w))
    for i in range(half // 2):
        omega = math.exp(-2 * i * math.log(1e4) / half)
        for y in range(h):
            for x in range(w):
                expected[2 * i, y, x] = math.sin(x * omega)
                expected[2 * i + 1, y, x] = math.cos(x * omega)
                expected[half + 2 * i, y, x] = math.sin(y * omega)
                expected[half + 2 * i + 1, y, x] = math.cos(y * omega)
    np.testing.assert_allclose(positional_encoding_2d(p, h, w).numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError):
        positional_encoding_2d(6, 2, 2)


def test_random_rotation_is_a_proper_rotation():
    np.random.seed(3)
    q = random_rotation(7)
    np.testing.assert_allclose(q @ q.T, np.eye(7), atol=1e-12)
    assert np.linalg.det(q) == pytest.approx(1.0)
    block = conditional_flow(7, 8, n_blocks=1, permute_soft=True).module_list[0]
    w = block.w_perm.reshape(7, 7)
    assert not torch.equal(w.abs(), (w.abs() > 0.5).float())  # dense, not a permutation
    torch.testing.assert_close(w @ block.w_perm_inv.reshape(7, 7), torch.eye(7), atol=1e-6, rtol=0)


@pytest.mark.parametrize("soft", [False, True])
def test_flow_log_prob_equals_change_of_variables(soft):
    """log p(x)/C from the flow equals (Σ log N(z_i; 0, 1) + log|det ∂z/∂x|)/C computed from the
    full Jacobian by autograd, on a tiny flow with non-trivial weights."""
    torch.manual_seed(0)
    np.random.seed(0)
    c, p = 5, 8
    flow = conditional_flow(c, p, n_blocks=3, clamp=1.9, permute_soft=soft).double()
    with torch.no_grad():
        for param in flow.parameters():
            if param.requires_grad:  # trainable weights; the fixed permutation stays orthogonal
                param.add_(0.3 * torch.randn_like(param))
    x = torch.randn(4, c, dtype=torch.float64)
    cond = torch.randn(4, p, dtype=torch.float64)
    ours = flow_log_prob(flow, x, cond)
    assert ours.shape == (4,)
    for i in range(4):
        def forward(v: torch.Tensor, i: int = i) -> torch.Tensor:
            return flow(v[None], c=[cond[i : i + 1]])[0][0]

        z = forward(x[i])
        jacobian = torch.autograd.functional.jacobian(forward, x[i])
        log_det = torch.linalg.slogdet(jacobian)[1]
        log_normal = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum()
        assert ours[i].item() == pytest.approx(((log_normal + log_det) / c).item(), abs=1e-6)


def official_schedule(lr: float, epoch: int, batch_id: int, total_batches: int, meta_epochs: int,
                      warm_epochs: int) -> float:
    """cflow-ad train.py adjust_learning_rate + warmup_learning_rate with config.py's settings."""
    eta_min = lr * 0.1**3
    cosine = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / meta_epochs)) / 2
    if epoch < warm_epochs:
        warmup_to = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * warm_epochs / meta_epochs)) / 2
        p = (batch_id + epoch * total_batches) / (warm_epochs * total_batches)
        return lr / 10 + p * (warmup_to - lr / 10)
    return cosine


def test_learning_rate_schedule_is_the_official_one():
    total = 6 * 8  # image batches per meta-epoch (I) x sub-epochs
    for epoch in range(25):
        for batch_id in (0, 7, 31, 47):
            ours = cflow_learning_rate(2e-4, epoch, 25, batch_id / total, 2)
            assert ours == pytest.approx(official_schedule(2e-4, epoch, batch_id, total, 25, 2), rel=1e-12)
    assert cflow_learning_rate(2e-4, 0, 25, 0.0, 2) == pytest.approx(2e-5)
    assert cflow_learning_rate(2e-4, 24, 25, 0.5, 2) < 2e-6


def test_rotation_matches_torchvision():
    images = torch.randn(2, 3, 8, 8)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    torch.testing.assert_close(rotate(images, torch.zeros(2), fill), images)
    ours = rotate(images, torch.tensor([90.0, -90.0]), fill)
    for i, angle in enumerate((90.0, -90.0)):
        expected = TF.rotate(images[i], angle, interpolation=InterpolationMode.NEAREST)
        torch.testing.assert_close(ours[i], expected)
    corner = rotate(images, torch.tensor([45.0, 45.0]), fill)[0, :, 0, 0]
    torch.testing.assert_close(corner, fill)  # uncovered corners are the fill (black) value


def test_no_default_config_enables_a_test_set_statistic():
    """Every conf/method/*.yaml: no key or value that selects a test-set statistic (a key naming
    the test set with a truthy value, or a value naming it); CFlow's normaliser is train_max."""

    def walk(node: object, path: str = ""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield f"{path}.{key}", str(key), value
                yield from walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{path}[{i}]")

    files = sorted(CONF.glob("*.yaml"))
    assert any(f.stem == "cflow" for f in files)
    for file in files:
        for where, key, value in walk(yaml.safe_load(file.read_text()) or {}):
            assert not ("test" in key.lower() and value not in (None, False, 0, "none", "off")), (file, where)
            assert not (isinstance(value, str) and "test" in value.lower()), (file, where, value)
    for preset in ("cflow", "cflow_cpu", "cflow_noaug"):
        assert compose([f"method={preset}"]).method.params.normalizer == "train_max"
    with pytest.raises(ValueError, match="test"):
        CFlow(normalizer="test_max")


def test_cflow_tiny_run_is_deterministic_and_batch_independent(toy_root, tmp_path):
    overrides = [*TINY, *TINY_CFLOW, f"data.root={toy_root}", "data.category=brick", "cache.dir=null"]
    cfg = compose(overrides)
    (category,) = load_categories(cfg)
    fitted = []
    for _ in range(2):
        torch.manual_seed(123)  # the method seeds itself; global state must not matter
        method = build_method(cfg)
        ctx = build_context(cfg, method, category, torch.device("cpu"))
        method.fit(ctx)
        method.eval()
        fitted.append((method, ctx))
    (a, ctx), (b, _) = fitted
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert torch.isfinite(a.layer_log_prob_max).all() and a.layer_log_prob_max.shape == (3,)
    assert len(a.loss_history) == 1 and math.isfinite(a.loss_history[0]) and a.timings["train_s"] > 0

    batch = next(iterate_batches(category.test[8:12], ctx.transform, batch_size=4))
    pred = a.predict(batch, ctx)
    assert pred.anomaly_maps.shape == (4, 64, 64)
    alone = a.predict(next(iterate_batches(category.test[9:10], ctx.transform, batch_size=1)), ctx)
    assert alone.image_scores[0].item() == pytest.approx(pred.image_scores[1].item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(alone.anomaly_maps[0], pred.anomaly_maps[1], rtol=1e-5, atol=1e-5)
    # the normaliser is taken from training images: their maps are >= 0 (max over training maps)
    train = a.predict(next(ctx.train_batches()), ctx)
    assert train.anomaly_maps.min() >= -1e-5


def test_sweep_extracts_each_image_once(toy_root, tmp_path):
    """PaDiM, CFlow and PatchCore in one process (as a Hydra multirun): the 2nd and 3rd jobs read every
    feature from the cache; a new process reads them from disk. PaDiM and CFlow resize with Lanczos as
    their reference loaders; PatchCore (bilinear officially) shares their features only when told to
    resize the same way, since the transform is part of the cache key."""
    device = resolve_device("auto")  # the runs' device: its memory tier is the one to empty
    memory_tier(device, 1.0).clear()
    common = [*TINY, f"data.root={toy_root}", "data.category=grass", f"results_dir={tmp_path / 'r'}",
              f"cache.dir={tmp_path / 'cache'}"]
    lanczos_patchcore = ["method=patchcore", "+method.image.interpolation=lanczos"]
    first, second, third = (run(compose([*common, *extra]))[0] for extra in
                            (["method=padim"], TINY_CFLOW, lanczos_patchcore))
    for record in (first, second, third):
        assert record["status"] == "ok", record.get("traceback")
    assert first["cache_misses"] == 300 and first["extract_s"] > 0  # toy v2: 40 train + 260 test images
    for record in (second, third):
        assert record["cache_misses"] == 0 and record["extract_s"] == 0.0 and record["cache_hits"] >= 300
    assert len(second["train_loss"]) == 1 and math.isfinite(second["train_loss"][0])  # CFlow's loss curve
    assert "train_loss" not in third  # PatchCore does not train
    (bilinear,) = run(compose([*common, "method=patchcore", "seed=1"]))
    assert bilinear["cache_misses"] == 300  # another transform: other features
    memory_tier(device, 1.0).clear()
    (again,) = run(compose([*common, "method=padim", "force=true"]))
    assert again["cache_misses"] == 0 and again["cache_disk_hits"] == 300
    assert again["image_auroc"] == first["image_auroc"] and again["pixel_aupro"] == first["pixel_aupro"]


@pytest.mark.parametrize("set_to_none", [False, True])
def test_idle_decoder_moves_on_adam_momentum_only_with_zeroed_grads(set_to_none):
    """Official code (torch 1.8): ``optimizer.zero_grad()`` zeroes gradients, so with one Adam over all
    decoders a decoder idle at a step still moves on its momentum; with ``set_to_none`` it stays put."""
    torch.manual_seed(0)
    method = CFlow(n_blocks=1, fiber_batch=4, zero_grad_set_to_none=set_to_none)
    method.build([3, 3], seed=0)
    optimizer = torch.optim.Adam(method.decoders.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    method._train_layer(1, torch.randn(1, 3, 2, 2), optimizer, generator)  # decoder 1 gains momentum
    before = [p.detach().clone() for p in method.decoders[1].parameters()]
    method._train_layer(0, torch.randn(1, 3, 2, 2), optimizer, generator)  # decoder 1 is idle
    moved = max((p - q).abs().max().item() for p, q in zip(method.decoders[1].parameters(), before))
    assert (moved == 0) if set_to_none else (moved > 1e-4)


def test_official_preset_zeroes_gradients_and_resizes_with_lanczos():
    preset = yaml.safe_load((CONF / "cflow.yaml").read_text())
    assert preset["params"]["zero_grad_set_to_none"] is False
    assert preset["image"]["interpolation"] == "lanczos"


def test_map_keeps_pixels_far_below_the_training_maximum_apart():
    """exp in float64 (official train.py): log-likelihoods 100 and 120 nats/dim under the maximum give
    different map values; float32 exp would make both 0, a tie."""
    method = CFlow()
    method.layer_log_prob_max = torch.zeros(1)
    log_prob = torch.tensor([[[-100.0, -120.0]]])
    summed = method._summed_probability([log_prob], torch.Size([1, 2]))
    assert summed.dtype == torch.float64
    assert summed[0, 0, 0] > summed[0, 0, 1] > 0
