"""ResAD: residuals vs brute force, losses vs their formulas on hand-made inputs, flow training of every
level, and a tiny few-shot run on toy data (record, model reuse, determinism)."""

from __future__ import annotations

import math

import pytest
import torch
from adbench.methods import resad as resad_module
from adbench.methods.resad import (
    ResAD,
    bgspp_loss,
    flow_loss_code,
    nearest_reference,
    normal_boundary,
    occ_loss_code,
    occ_loss_paper,
    residual_features,
)
from conftest import TINY_METHODS, TINY_RUN

from adbench.components.losses import focal_loss
from adbench.config import compose
from adbench.method import Context
from adbench.runner import run

TINY = [*TINY_RUN, *TINY_METHODS["resad"]]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_residuals_equal_brute_force_nearest_neighbour(metric):
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 6, 5, 4, generator=gen)
    pool = torch.randn(37, 6, generator=gen) * torch.rand(37, 1, generator=gen) * 3
    got = residual_features(feats, pool, metric, "difference")
    got_sq = residual_features(feats, pool, metric, "squared")
    for b in range(2):
        for i in range(5):
            for j in range(4):
                x = feats[b, :, i, j]
                if metric == "l2":
                    best = min(range(37), key=lambda k: float(((x - pool[k]) ** 2).sum()))
                else:
                    best = max(range(37), key=lambda k: float(x @ pool[k] / (x.norm() * pool[k].norm())))
                torch.testing.assert_close(got[b, :, i, j], x - pool[best])
                torch.testing.assert_close(got_sq[b, :, i, j], (x - pool[best]) ** 2)


def test_nearest_reference_is_a_pool_row_at_minimal_distance():
    gen = torch.Generator().manual_seed(1)
    query, pool = torch.randn(300, 16, generator=gen), torch.randn(1000, 16, generator=gen)
    matched = nearest_reference(query, pool, "l2")
    assert (matched[:, None, :] == pool[None]).all(-1).any(1).all()
    torch.testing.assert_close((query - matched).norm(dim=1), torch.cdist(query, pool).min(dim=1).values)


def test_occ_loss_paper_on_hand_made_input():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    target = torch.tensor([[9.0, 9.0], [9.0, 9.0], [1.0, 2.0]])
    abnormal = torch.tensor([False, False, True])
    expected = ((math.sqrt(5 + 1) - 1) + 0.0) / 2 + 2.0  # normal pseudo-Huber mean + ‖x' − x‖ of the anomaly
    assert occ_loss_paper(x, target, abnormal).item() == pytest.approx(expected)
    assert occ_loss_paper(x[:2], target[:2], abnormal[:2]).item() == pytest.approx((math.sqrt(6) - 1) / 2)


def test_occ_loss_code_on_hand_made_input():
    def radius(v: list[float]) -> float:
        return math.sqrt(math.hypot(*v) + 1) - 1

    def barrier(gap: float) -> float:
        return math.exp(gap) * math.log1p(math.exp(gap))

    anomaly, anomaly_target = [0.5, 0.0], [1.0, 1.0]
    x = torch.tensor([[3.0, 4.0], [0.0, 0.1], [0.3, 0.4], anomaly])
    target = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], anomaly_target])
    abnormal = torch.tensor([False, False, False, True])
    r_max = min(0.9 * radius(anomaly), 0.4)
    r_min = 0.99 * r_max
    normal_r = [radius([3, 4]), radius([0, 0.1]), radius([0.3, 0.4])]
    larger = [r - r_max for r in normal_r if r > r_max]
    lower = [r_min - r for r in normal_r if r < r_min]
    mse = sum((a - b) ** 2 for a, b in zip(anomaly, anomaly_target)) / 2
    dot = sum(a * b for a, b in zip(anomaly, anomaly_target))
    cos = 1 - dot / (math.hypot(*anomaly) * math.hypot(*anomaly_target))
    push = [r_max + 0.1 - radius(anomaly)]
    assert larger and lower and push[0] > 0  # every branch of the loss is exercised
    expected = sum(sum(barrier(g) for g in gaps) / len(gaps) for gaps in (larger, lower, push)) + mse + cos
    assert occ_loss_code(x, target, abnormal).item() == pytest.approx(expected, rel=1e-5)


def test_boundary_and_bgspp_loss_on_hand_made_input():
    logp = torch.tensor([-1.0, 0.5, 2.0, 0.3, -2.0])
    abnormal = torch.tensor([False, False, False, True, True])
    assert normal_boundary(logp, abnormal, beta=0.05).item() == -1.0  # ⌊0.05·3⌋ = 0: the lowest normal
    assert normal_boundary(logp, abnormal, beta=0.5).item() == 0.5  # ⌊1.5⌋ = 1
    # normal: |min(logp − b_n, 0)| = [1, 0, 0]; abnormal: |max(logp − b_n + τ, 0)| = [0.4, 0]
    assert bgspp_loss(logp, abnormal, 0.0, tau=0.1).item() == pytest.approx(1 / 3 + 0.4 / 2)
    assert bgspp_loss(logp[:3], abnormal[:3], 0.0).item() == pytest.approx(1 / 3)


def test_focal_and_code_flow_loss_on_hand_made_input():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    target = torch.tensor([0, 0, 1])
    p = torch.softmax(logits, dim=1)
    pt = [p[0, 0].item(), p[1, 0].item(), p[2, 1].item()]
    expected_focal = sum(-((1 - q) ** 2) * math.log(q) for q in pt) / 3
    assert focal_loss(logits, target, smooth=0.0, from_logits=True).item() == pytest.approx(expected_focal)

    def softplus(v: float) -> float:
        return math.log1p(math.exp(v))

    logp = torch.tensor([-0.5, 0.2, -3.0, 0.1])
    logp_a = torch.tensor([-2.0, -1.0, -0.5, -4.0])
    abnormal = torch.tensor([False, False, True, True])
    b_n, tau = -0.3, 0.1
    normal_nll = (softplus(0.5) + softplus(-0.2)) / 2
    abnormal_nll = (softplus(0.5) + softplus(4.0)) / 2
    focal = focal_loss(torch.stack([logp, logp_a], 1), abnormal, smooth=0.0, from_logits=True).item()
    barrier_n = softplus(b_n - (-0.5))  # only −0.5 ≤ b_n
    barrier_a = softplus(0.1 - (b_n - tau))  # only 0.1 ≥ b_a = −0.4
    expected = normal_nll + abnormal_nll + focal + 2.0 * (barrier_n + barrier_a)
    got = flow_loss_code(logp, logp_a, abnormal, b_n, tau, lam=2.0).item()
    assert got == pytest.approx(expected, rel=1e-6)
    no_anomaly = torch.zeros(4, dtype=torch.bool)
    expected_plain = sum(softplus(-v) for v in logp.tolist()) / 4
    assert flow_loss_code(logp, logp_a, no_anomaly, b_n).item() == pytest.approx(expected_plain, rel=1e-6)


@pytest.mark.parametrize("flow_loss", ["paper", "code"])
def test_every_level_flow_trains_even_below_one_chunk(flow_loss):
    """The official floor(N / 8192) gave level 3 (6272 positions) no step; here every level trains."""
    torch.manual_seed(0)
    channels = [4, 4, 6]
    model = ResAD(pos_embed_dim=8, coupling_blocks=2, permute_soft=False, flow_loss=flow_loss)
    model.build(channels)
    opt = torch.optim.Adam(model.flows.parameters(), lr=1e-2)
    for level in range(3):
        before = [p.detach().clone() for p in model.flows[level].parameters()]
        x = torch.rand(2, channels[level], 3, 3)
        mask = torch.zeros(2, 3, 3, dtype=torch.bool)
        mask[0, 1, 1] = True
        model._train_flow(level, x, mask, opt, epoch=0)
        changed = any(not torch.equal(a, b) for a, b in zip(before, model.flows[level].parameters()))
        assert changed, f"level {level} flow got no step"


def test_resad_needs_the_few_shot_protocol():
    from adbench.data import Category

    category = Category("toy", "cat", "/", [], [])
    ctx = Context(category=category, transform=None, device=None, seed=0)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="protocol=few_shot"):
        ResAD().fit(ctx)


def test_resad_toy_few_shot_end_to_end(small_toy, tmp_path):
    resad_module._TRAINED.clear()
    overrides = ["method=resad", *small_toy, "protocol=few_shot", "source=toy", "shots=2",
                 f"results_dir={tmp_path}", *TINY]
    first, second = run(compose([*overrides, "data.category='gravel,cat'"]))
    for record in (first, second):
        assert record["status"] == "ok", record.get("traceback")
        assert record["source_test_consumed"] is True and record["shots"] == 2
        assert record["source_categories"] == ["brick", "grass", "tissue", "coins"]
        assert len(record["reference_files"]) == 2 and 0.0 <= record["image_auroc"] <= 1.0
    # the source model is trained once per run and reused for the next target category
    assert first["timing_source_model_reused"] == 0.0 and second["timing_source_model_reused"] == 1.0
    assert first["timing_source_train_s"] == second["timing_source_train_s"]
    # same seed, fresh training -> the same numbers
    resad_module._TRAINED.clear()
    (again,) = run(compose([*overrides, "data.category=gravel", "force=true"]))
    assert again["timing_source_model_reused"] == 0.0
    assert again["image_auroc"] == first["image_auroc"] and again["pixel_auroc"] == first["pixel_auroc"]


def test_predict_before_fit_fails():
    with pytest.raises(RuntimeError, match="before fit"):
        ResAD().predict(None, None)  # type: ignore[arg-type]


def test_unknown_choice_is_rejected():
    with pytest.raises(ValueError, match="matching"):
        ResAD(matching="manhattan")


def test_training_references_are_normal_train_images_outside_the_batch(small_toy):
    """Source references come from each class's train/good images, never from its test images."""
    import numpy as np

    from adbench.data import ImageTransform, iterate_batches
    from adbench.protocols import FewShotSettings, load_source

    cfg = compose([*small_toy, "protocol=few_shot", "source=toy"])
    source = load_source(cfg, FewShotSettings.from_config(cfg), ["brick", "coins"])
    seen: list[list[str]] = []

    class Features:
        def __call__(self, batch):
            seen.append(list(batch.paths))
            return {"layer1": torch.zeros(len(batch.paths), 2, 3, 3)}

    transform = ImageTransform(resize=16, crop=16)
    ctx = Context(category=source[0], transform=transform, device=torch.device("cpu"), seed=0,
                  features=Features(), source=source)  # type: ignore[arg-type]
    samples = source[0].train[:3] + source[0].test[-3:] + source[1].test[:4]
    batch = next(iterate_batches(samples, transform, batch_size=len(samples)))
    classes = [s.category for s in samples]
    pools = ResAD(train_references=4)._references(ctx, batch, classes, {c.name: c for c in source},
                                                  np.random.default_rng(0))
    assert set(pools) == {"brick", "coins"} and pools["brick"]["layer1"].shape == (4 * 9, 2)
    (chosen,) = seen
    for name, refs in (("brick", chosen[:4]), ("coins", chosen[4:])):
        train = {s.image_path for c in source if c.name == name for s in c.train}
        assert set(refs) <= train and not set(refs) & set(batch.paths) and len(set(refs)) == 4


@pytest.mark.parametrize(
    ("method", "expected"),
    [("resad", "racm_in1k"), ("resad_code", "racm_in1k"), ("patchcore", "tv_in1k"), ("padim", "tv_in1k"),
     ("cflow", "tv_in1k"), ("glass", "tv_in1k")],
)
def test_paper_backbone_weights_are_the_official_codes(method, expected):
    """ResAD's code loads timm's default wide_resnet50_2 (racm_in1k under timm 0.6); PatchCore, PaDiM,
    CFlow and GLASS call torchvision's V1 weights (tv_in1k). Offline backbones are left as they are."""
    from adbench.runner import backbone_name

    paper = compose([f"method={method}", "backbone=wide_resnet50_2"])
    assert backbone_name(paper) == f"wide_resnet50_2.{expected}"
    assert backbone_name(compose([f"method={method}"])) == "efficientnet_lite0"
