"""ResAD (Yao et al., NeurIPS 2024): class-generalizable anomaly detection with residual features.

One model is trained on a *source* dataset (its train and test sets, real anomalies and masks)
and applied without fine-tuning to unseen target categories, each given K normal reference
images; run it with ``protocol=few_shot source=<dataset> shots=K`` (:mod:`adbench.protocols`).

* **Residual features.** Frozen backbone features of levels 1–3; every feature minus its nearest
  feature of the same level in the reference pool (paper: L2 match, x − x*; official code:
  cosine match, (x − x*)²). Training draws ``train_references`` reference images per class
  every batch from that class's normal train images (never the batch's own images); at test
  time the pool holds the K shots.
* **Feature Constraintor.** Conv3×3 + BN + ReLU per level, trained with the abnormal-invariant
  OCC loss (paper: pseudo-Huber pull of normal positions + ‖x' − x‖ for abnormal ones; code:
  log-barrier shell, MSE + cosine invariance, push-out barrier).
* **Feature Distribution Estimator.** One conditional flow per level (:mod:`adbench.components.flows`,
  positional-encoding condition) on the *detached* constrained features, NLL + BGAD's
  boundary-guided semi-push-pull loss (τ = 0.1; code variant: log-sigmoid NLL, anomaly Gaussian
  N(1, I), focal loss, log-barrier BG-SPP with an EMA boundary). Every level gets its training
  steps: positions are split into ``ceil(N / flow_chunk)`` chunks (the official floor() gives
  level 3 no step at all).
* **Scoring.** Per level 1 − exp(per-dimension log-likelihood), bilinear upsampling, sum of
  levels, Gaussian σ = 4, image score = max of the map. ``scoring="code"`` averages that map
  (each level's log-likelihood shifted by its maximum over the *training* normal positions, not
  over the test set as the official code does) with the mean abnormal-Gaussian probability.

Nothing is selected on test data: the model after the last epoch is used. A trained model is
kept in-process (keyed by source files, config, backbone, transform, seed and device) so that
every target category of a run reuses it; only the reference pool changes.
"""

from __future__ import annotations

import inspect
import math
import time
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adbench.components.flows import HALF_LOG_2PI, conditional_flow, positional_encoding_2d
from adbench.components.knn import nearest_index
from adbench.components.losses import focal_loss
from adbench.components.postprocess import gaussian_blur, upsample
from adbench.data import Batch, Category, Sample, file_fingerprint, iterate_batches, stable_hash
from adbench.method import Context, Method, Prediction
from adbench.registry import register_method

_TRAINED: OrderedDict[str, dict] = OrderedDict()  # cache key → {"state": ..., "train_s": ...}
_TRAINED_MAX = 2


def nearest_reference(query: torch.Tensor, pool: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """For every query row [N, C], the pool row [M, C] nearest to it → [N, C] (pool values).

    ``metric="l2"``: smallest Euclidean distance; ``"cosine"``: largest cosine similarity (rows
    L2-normalised for matching only; the un-normalised pool vector is returned, as the official code).
    """
    if metric == "cosine":
        return pool[nearest_index(F.normalize(query, dim=1), F.normalize(pool, dim=1), "dot")]
    if metric == "l2":
        return pool[nearest_index(query, pool, "l2")]
    raise ValueError(f"matching must be 'l2' or 'cosine', got {metric!r}")


def residual_features(feats: torch.Tensor, pool: torch.Tensor, metric: str = "l2",
                      kind: str = "difference") -> torch.Tensor:
    """Residual maps of one level: feats [B, C, h, w], pool [M, C] → [B, C, h, w].

    ``kind="difference"``: x − x* (paper); ``"squared"``: (x − x*)² element-wise (official code).
    """
    b, c, h, w = feats.shape
    flat = feats.permute(0, 2, 3, 1).reshape(-1, c)
    diff = flat - nearest_reference(flat, pool, metric)
    if kind == "squared":
        diff = diff.pow(2)
    elif kind != "difference":
        raise ValueError(f"residual must be 'difference' or 'squared', got {kind!r}")
    return diff.reshape(b, h, w, c).permute(0, 3, 1, 2)


def occ_loss_paper(features: torch.Tensor, target: torch.Tensor, abnormal: torch.Tensor) -> torch.Tensor:
    """Paper eq. 2 on flattened positions: features x' [N, C], pre-constraintor residuals x [N, C],
    abnormal [N] bool. Mean over normal positions of √(‖x'‖₂ + 1) − 1 plus mean over abnormal
    positions of ‖x' − x‖₂ (a term is 0 when its group is empty)."""
    loss = features.new_zeros(())
    normal = ~abnormal
    if normal.any():
        loss = loss + (torch.sqrt(features[normal].norm(dim=1) + 1) - 1).mean()
    if abnormal.any():
        loss = loss + (features[abnormal] - target[abnormal]).norm(dim=1).mean()
    return loss


def _barrier(gap: torch.Tensor) -> torch.Tensor:
    """The official log-barrier term: mean of exp(gap)·softplus(gap), the exp factor detached; 0 if empty."""
    if gap.numel() == 0:
        return gap.new_zeros(())
    return (torch.exp(gap).detach() * F.softplus(gap)).mean()


def occ_loss_code(features: torch.Tensor, target: torch.Tensor, abnormal: torch.Tensor,
                  max_radius: float = 0.4) -> torch.Tensor:
    """Official ``calculate_log_barrier_bi_occ_loss``: A = √(‖x'‖₂ + 1) − 1; r_max = min(0.9·min A over
    abnormal, 0.4) (0.4 without anomalies), r_min = 0.99·r_max; normal A outside [r_min, r_max] get a
    log barrier; abnormal positions get MSE + (1 − cos) to x plus a barrier below r_max + 0.1."""
    radius = torch.sqrt(features.norm(dim=1) + 1) - 1
    r_max = min(0.9 * radius[abnormal].min().item(), max_radius) if abnormal.any() else max_radius
    r_min = 0.99 * r_max
    normal_r = radius[~abnormal]
    loss = _barrier(normal_r[normal_r > r_max] - r_max) + _barrier(r_min - normal_r[normal_r < r_min])
    if abnormal.any():
        x, x0 = features[abnormal], target[abnormal]
        bound = r_max + 0.1
        abnormal_r = radius[abnormal]
        loss = loss + F.mse_loss(x, x0) + (1 - F.cosine_similarity(x, x0, dim=1)).mean()
        loss = loss + _barrier(bound - abnormal_r[abnormal_r < bound])
    return loss


def normal_boundary(logp: torch.Tensor, abnormal: torch.Tensor, beta: float = 0.05) -> torch.Tensor:
    """BGAD's normal boundary b_n: the sorted normal log-likelihoods [N] at index ⌊β·n⌋ (detached)."""
    normal = torch.sort(logp[~abnormal].detach()).values
    return normal[min(int(beta * normal.numel()), normal.numel() - 1)]


def bgspp_loss(logp: torch.Tensor, abnormal: torch.Tensor, b_n: torch.Tensor | float,
               tau: float = 0.1) -> torch.Tensor:
    """Paper's L_bg-spp, normalised by group sizes: mean over normal positions of |min(logp − b_n, 0)|
    plus mean over abnormal positions of |max(logp − b_n + τ, 0)|; logp [N], abnormal [N] bool."""
    loss = logp.new_zeros(())
    if (~abnormal).any():
        loss = loss + F.relu(b_n - logp[~abnormal]).mean()
    if abnormal.any():
        loss = loss + F.relu(logp[abnormal] - b_n + tau).mean()
    return loss


def flow_loss_code(logp: torch.Tensor, logp_a: torch.Tensor, abnormal: torch.Tensor,
                   b_n: torch.Tensor | float, tau: float = 0.1, lam: float = 1.0) -> torch.Tensor:
    """Official stage-2 flow loss on per-dim log-likelihoods [N] under N(0, I) (logp) and N(1, I) (logp_a):
    mean softplus(−logp) over normal + mean softplus(−logp_a) over abnormal + focal(softmax([logp,
    logp_a]), mask) + λ·(mean softplus(b_n − logp) over normal logp ≤ b_n + mean softplus(logp − b_a)
    over abnormal logp ≥ b_a), b_a = b_n − τ. Without anomalies: mean softplus(−logp)."""
    if not abnormal.any():
        return F.softplus(-logp).mean()
    normal = ~abnormal
    loss = F.softplus(-logp[normal]).mean() if normal.any() else logp.new_zeros(())
    loss = loss + F.softplus(-logp_a[abnormal]).mean()
    loss = loss + focal_loss(torch.stack([logp, logp_a], dim=1), abnormal, smooth=0.0, from_logits=True)
    inside_n = logp[normal][logp[normal] <= b_n]
    inside_a = logp[abnormal][logp[abnormal] >= b_n - tau]
    barrier = sum(F.softplus(g).mean() for g in (b_n - inside_n, inside_a - (b_n - tau)) if g.numel())
    return loss + lam * barrier


def log_likelihoods(flow: nn.Module, x: torch.Tensor,
                    cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension log-likelihoods [N] of x [N, C] under the flow with base N(0, I) and N(1, I) (nats)."""
    z, log_det = flow(x, c=[cond])
    c = x.shape[1]
    base = -c * HALF_LOG_2PI + log_det
    return (base - 0.5 * z.pow(2).sum(1)) / c, (base - 0.5 * (z - 1).pow(2).sum(1)) / c


@register_method("resad")
class ResAD(Method):
    """ResAD; ``ResAD(**cfg.method.params)`` — see ``conf/method/resad.yaml`` for every default's source."""

    uses_backbone = True
    uses_source = True

    def __init__(
        self, matching: str = "l2", residual: str = "difference", occ_loss: str = "paper",
        flow_loss: str = "paper", scoring: str = "likelihood", coupling_blocks: int = 8, clamp: float = 1.9,
        pos_embed_dim: int = 256, permute_soft: bool = True, train_references: int = 4, epochs: int = 100,
        batch_size: int = 32, lr: float = 1e-5, weight_decay: float = 5e-4,
        lr_milestones: tuple[int, ...] = (70, 90), lr_gamma: float = 0.1, flow_chunk: int = 8192,
        bgspp_lambda: float = 1.0, margin_tau: float = 0.1, boundary_beta: float = 0.05,
        boundary_momentum: float = 0.0, normal_stage_epochs: int = 0, blur_sigma: float = 4.0,
    ) -> None:
        super().__init__()
        for name, value, allowed in (("matching", matching, ("l2", "cosine")),
                                     ("residual", residual, ("difference", "squared")),
                                     ("occ_loss", occ_loss, ("paper", "code")),
                                     ("flow_loss", flow_loss, ("paper", "code")),
                                     ("scoring", scoring, ("likelihood", "code"))):
            if value not in allowed:
                raise ValueError(f"method.params.{name}={value!r}; choose one of {allowed}")
        self.matching = matching
        self.residual = residual
        self.occ_loss = occ_loss
        self.flow_loss = flow_loss
        self.scoring = scoring
        self.coupling_blocks = coupling_blocks
        self.clamp = clamp
        self.pos_embed_dim = pos_embed_dim
        self.permute_soft = permute_soft
        self.train_references = train_references
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_milestones = list(lr_milestones)
        self.lr_gamma = lr_gamma
        self.flow_chunk = flow_chunk
        self.bgspp_lambda = bgspp_lambda
        self.margin_tau = margin_tau
        self.boundary_beta = boundary_beta
        self.boundary_momentum = boundary_momentum
        self.normal_stage_epochs = normal_stage_epochs
        self.blur_sigma = blur_sigma
        self.constraintor = nn.ModuleList()
        self.flows = nn.ModuleList()

    # -- model ------------------------------------------------------------------------------------
    def build(self, channels: list[int]) -> None:
        """Create the per-level constraintor and flows for levels of ``channels`` channels."""
        self.constraintor = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()) for c in channels
        )
        self.flows = nn.ModuleList(
            conditional_flow(c, self.pos_embed_dim, self.coupling_blocks, self.clamp, self.permute_soft)
            for c in channels
        )
        self.register_buffer("boundaries", torch.zeros(len(channels)))  # EMA b_n per level (code loss)
        self.register_buffer("train_logp_max", torch.zeros(len(channels)))  # for scoring="code"

    def _condition(self, b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Positional encoding of every position of B maps [h, w] → [B·h·w, pos_embed_dim]."""
        pe = positional_encoding_2d(self.pos_embed_dim, h, w).to(device).permute(1, 2, 0).reshape(h * w, -1)
        return pe.repeat(b, 1)

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])

    def build_for_state(self, state: dict[str, torch.Tensor]) -> None:
        n_levels = len({key.split(".")[1] for key in state if key.startswith("constraintor.")})
        self.build([state[f"constraintor.{i}.0.weight"].shape[0] for i in range(n_levels)])
        for i in range(n_levels):  # the K shots' pools, set by fit
            self.register_buffer(f"pool_{i}", torch.empty(0))

    # -- training ---------------------------------------------------------------------------------
    def fit(self, ctx: Context) -> None:
        if not ctx.source:
            raise RuntimeError("ResAD trains on a source dataset: use protocol=few_shot source=<dataset>")
        assert ctx.features is not None
        torch.manual_seed(ctx.seed)
        np.random.seed(ctx.seed)  # FrEIA's soft permutations draw from numpy's global generator
        self.build(ctx.features.backbone.channels)
        self.to(ctx.device)
        key = self._cache_key(ctx)
        cached = _TRAINED.get(key)
        if cached is None:
            start = time.perf_counter()
            self.train()
            self._train(ctx)
            train_s = time.perf_counter() - start
            _TRAINED[key] = {"state": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
                             "train_s": train_s}
            while len(_TRAINED) > _TRAINED_MAX:
                _TRAINED.popitem(last=False)
            self.timings["source_model_reused"] = 0.0
        else:
            _TRAINED.move_to_end(key)
            self.load_state_dict(cached["state"])
            train_s = cached["train_s"]
            self.timings["source_model_reused"] = 1.0
        self.timings["source_train_s"] = train_s
        start = time.perf_counter()
        self._set_reference_pool(ctx)
        self.timings["reference_s"] = time.perf_counter() - start

    def _cache_key(self, ctx: Context) -> str:
        files = sorted(file_fingerprint(s.image_path) for c in ctx.source for s in c.train + c.test)
        hparams = {name: getattr(self, name) for name in inspect.signature(ResAD).parameters}
        return stable_hash({"hparams": hparams, "backbone": ctx.features.backbone.identity(),
                            "transform": ctx.transform.identity(), "seed": ctx.seed,
                            "device": str(ctx.device), "source": files})

    def _set_reference_pool(self, ctx: Context) -> None:
        """Pool of every level from the K shots (``ctx.category.train``): buffers ``pool_<i>`` [K·h·w, C]."""
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in ctx.train_batches():
            for name, f in ctx.features(batch).items():
                parts.setdefault(name, []).append(self._flatten(f))
        for i, name in enumerate(ctx.features.layers):
            self.register_buffer(f"pool_{i}", torch.cat(parts[name]).contiguous())

    def _epoch_samples(self, ctx: Context, epoch: int) -> list[Sample]:
        normal_only = epoch < self.normal_stage_epochs
        return [s for c in ctx.source for s in (c.train if normal_only else c.train + c.test)]

    def _references(self, ctx: Context, batch: Batch, classes: list[str], by_name: dict[str, Category],
                    rng: np.random.Generator) -> dict[str, dict[str, torch.Tensor]]:
        """Per class in the batch: ``train_references`` normal train images of that class (not in the
        batch unless all are; without replacement when enough remain) → level → pool [R·h·w, C]."""
        in_batch = set(batch.paths)
        chosen: list[Sample] = []
        present = sorted(set(classes))
        for name in present:
            train = by_name[name].train
            candidates = [s for s in train if s.image_path not in in_batch] or train  # all in the batch
            replace = len(candidates) < self.train_references
            idx = rng.choice(len(candidates), size=self.train_references, replace=replace)
            chosen += [candidates[i] for i in idx]
        ref_batch = next(iterate_batches(chosen, ctx.transform, batch_size=len(chosen),
                                         binarize=ctx.source[0].mask_binarize))
        feats = ctx.features(ref_batch)
        r = self.train_references
        return {name: {layer: self._flatten(f[k * r : (k + 1) * r]) for layer, f in feats.items()}
                for k, name in enumerate(present)}

    def _residuals(self, feats: dict[str, torch.Tensor], classes: list[str],
                   pools: dict[str, dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Residual maps per level for a batch whose image i belongs to ``classes[i]``."""
        out = []
        for layer, f in feats.items():
            res = torch.empty_like(f)
            for name in set(classes):
                idx = torch.tensor([i for i, c in enumerate(classes) if c == name], device=f.device)
                res[idx] = residual_features(f[idx], pools[name][layer], self.matching, self.residual)
            out.append(res)
        return out

    def _batches(self, ctx: Context, epoch: int) -> Iterator[Batch]:
        samples = self._epoch_samples(ctx, epoch)
        generator = torch.Generator().manual_seed(ctx.seed * 100003 + epoch)
        order = torch.randperm(len(samples), generator=generator).tolist()
        full = len(order) // self.batch_size * self.batch_size or len(order)  # drop_last, as the code
        ordered = [samples[i] for i in order[:full]]
        return iterate_batches(ordered, ctx.transform, batch_size=self.batch_size,
                               binarize=ctx.source[0].mask_binarize, num_workers=ctx.num_workers)

    def _train(self, ctx: Context) -> None:
        by_name = {c.name: c for c in ctx.source}
        class_of = {s.image_path: c.name for c in ctx.source for s in c.train + c.test}
        opt_c = torch.optim.Adam(self.constraintor.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        opt_f = torch.optim.Adam(self.flows.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheds = [torch.optim.lr_scheduler.MultiStepLR(opt, self.lr_milestones, self.lr_gamma)
                  for opt in (opt_c, opt_f)]
        rng = np.random.default_rng(ctx.seed)
        for epoch in range(self.epochs):
            logp_max = torch.full((len(self.flows),), -math.inf, device=ctx.device)
            for batch in self._batches(ctx, epoch):
                classes = [class_of[p] for p in batch.paths]
                feats = ctx.features(batch)
                pools = self._references(ctx, batch, classes, by_name, rng)
                residuals = self._residuals(feats, classes, pools)
                masks = batch.masks[:, None].float().to(ctx.device)
                level_masks = [F.interpolate(masks, size=r.shape[-2:], mode="nearest")[:, 0] > 0.5
                               for r in residuals]
                constrained = [g(r) for g, r in zip(self.constraintor, residuals)]
                occ = self._occ_loss(constrained, residuals, level_masks)
                opt_c.zero_grad()
                occ.backward()
                opt_c.step()
                for level, (x, m) in enumerate(zip(constrained, level_masks)):
                    top = self._train_flow(level, x.detach(), m, opt_f, epoch)
                    logp_max[level] = torch.maximum(logp_max[level], top)
            for sched in scheds:
                sched.step()
        self.train_logp_max.copy_(logp_max)

    def _occ_loss(self, constrained: list[torch.Tensor], residuals: list[torch.Tensor],
                  masks: list[torch.Tensor]) -> torch.Tensor:
        terms = []
        for x, r, m in zip(constrained, residuals, masks):
            args = (self._flatten(x), self._flatten(r), m.reshape(-1))
            terms.append(occ_loss_paper(*args) if self.occ_loss == "paper" else occ_loss_code(*args))
        total = torch.stack(terms).sum()
        return total / len(terms) if self.occ_loss == "paper" else total  # paper: mean over levels

    def _train_flow(self, level: int, x: torch.Tensor, mask: torch.Tensor, opt: torch.optim.Optimizer,
                    epoch: int) -> torch.Tensor:
        """Optimiser steps of one level's flow on the B·h·w positions of x [B, C, h, w], chunks of
        ``flow_chunk`` (ceil, so every level trains); returns the largest normal per-dim logp seen."""
        b, _, h, w = x.shape
        feats, abnormal = self._flatten(x), mask.reshape(-1)
        cond = self._condition(b, h, w, x.device)
        perm = torch.randperm(feats.shape[0], device=x.device)
        top = torch.tensor(-math.inf, device=x.device)
        for start in range(0, feats.shape[0], self.flow_chunk):
            idx = perm[start : start + self.flow_chunk]
            e, m = feats[idx], abnormal[idx]
            logp, logp_a = log_likelihoods(self.flows[level], e, cond[idx])
            if (~m).any():
                top = torch.maximum(top, logp[~m].detach().max())
            if self.flow_loss == "paper":
                if not (~m).any():  # no normal position: no likelihood term and no boundary b_n
                    continue
                b_n = normal_boundary(logp, m, self.boundary_beta)
                loss = -logp[~m].mean() + self.bgspp_lambda * bgspp_loss(logp, m, b_n, self.margin_tau)
            else:
                if (~m).any():
                    b_n = normal_boundary(logp, m, self.boundary_beta)
                    self.boundaries[level] = self.boundary_momentum * self.boundaries[level] + (
                        1 - self.boundary_momentum) * b_n
                if epoch < self.normal_stage_epochs:
                    loss = F.softplus(-logp).mean()
                else:
                    loss = flow_loss_code(logp, logp_a, m, self.boundaries[level].detach(), self.margin_tau,
                                          self.bgspp_lambda)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return top

    # -- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: Batch, ctx: Context) -> Prediction:
        if not hasattr(self, "pool_0"):
            raise RuntimeError("ResAD.predict called before fit (no reference pool)")
        feats = ctx.features(batch)
        size = batch.images.shape[-2:]
        likelihood, abnormal_prob = 0.0, 0.0
        for level, f in enumerate(feats.values()):
            pool = getattr(self, f"pool_{level}")
            x = self.constraintor[level](residual_features(f, pool, self.matching, self.residual))
            b, _, h, w = x.shape
            cond = self._condition(b, h, w, x.device)
            logp, logp_a = log_likelihoods(self.flows[level], self._flatten(x), cond)
            if self.scoring == "code":
                prob = torch.softmax(torch.stack([logp, logp_a], dim=1), dim=1)[:, 1]
                logp = logp - self.train_logp_max[level]
                abnormal_prob = abnormal_prob + upsample(prob.reshape(b, h, w), size) / len(feats)
            likelihood = likelihood + upsample((1 - torch.exp(logp)).reshape(b, h, w), size)
        maps = likelihood if self.scoring == "likelihood" else (likelihood + abnormal_prob) / 2
        maps = gaussian_blur(maps, self.blur_sigma)
        return Prediction(maps.reshape(maps.shape[0], -1).max(dim=1).values.cpu(), maps.cpu())
