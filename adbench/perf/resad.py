"""ResAD (``resad_cpu``) under ``protocol=few_shot source=toy shots=4`` on the toy target group, next to the
4-shot PatchCore baseline: backbone floor, source-training seconds, reference-pool seconds, inference time
per image (cold = backbone included, and with cached features), peak RSS, image/pixel AUROC per target.
Takes minutes on a CPU (the source model is trained once; every target reuses it)."""

from __future__ import annotations

from adbench.config import compose
from adbench.datasets.toy import TOY_TARGET
from adbench.devices import resolve_device
from adbench.metrics import evaluate
from adbench.perf import backbone_floor_ms, benchmark, report
from adbench.protocols import FewShotSettings
from adbench.runner import (
    PeakMemory,
    attach_few_shot,
    build_context,
    build_method,
    fit_method,
    load_categories,
    predict_category,
    seed_everything,
)

FEW_SHOT = ["data=toy", "protocol=few_shot", "source=toy", "shots=4", "progress=false"]


def _scores(out: dict) -> dict[str, float]:
    metrics = evaluate(out["image_scores"], out["labels"], out["anomaly_maps"], out["masks"])
    return {"image_auroc": metrics["image_auroc"], "pixel_auroc": metrics["pixel_auroc"]}


def run_method(method_name: str, extra: list[str] | None = None) -> dict[str, float]:
    """Fit and evaluate one method on every toy target category; prints one line per category and
    returns the mean image AUROC."""
    cfg = compose([f"method={method_name}", *FEW_SHOT, *(extra or [])])
    device = resolve_device(cfg.device)
    aurocs = []
    for cat in load_categories(cfg):
        seed_everything(int(cfg.seed))
        method = build_method(cfg).to(device)
        ctx = build_context(cfg, method, cat, device)
        attach_few_shot(cfg, method, cat, ctx, {})
        floor = backbone_floor_ms(ctx, cat)
        with PeakMemory(device) as memory:
            fit_s = fit_method(method, ctx)
            ctx.features.enabled = False  # cold: the backbone runs for every test image
            cold = predict_category(method, ctx)
            ctx.features.enabled = True
        predict_category(method, ctx)  # fills the cache
        warm = predict_category(method, ctx)
        scores = _scores(cold)
        aurocs.append(scores["image_auroc"])
        report(f"{method_name} 4-shot toy/{cat.name}", {
            **scores, "fit_s": fit_s, **{k: float(v) for k, v in method.timings.items()},
            "backbone_floor_ms_per_img": floor,
            "infer_ms_per_img": 1000 * cold["infer_s"] / len(cat.test),
            "infer_ms_per_img_cached_feats": 1000 * warm["infer_s"] / len(cat.test),
            "peak_rss_mb": memory.peak_rss_mb, "n_params": float(method.n_params()),
        })
    mean = sum(aurocs) / len(aurocs)
    report(f"{method_name} 4-shot toy mean", {"image_auroc": mean, "targets": ",".join(TOY_TARGET)})
    return {"image_auroc": mean}


@benchmark("resad")
def main() -> None:
    settings = FewShotSettings.from_config(compose(FEW_SHOT))
    print(f"few_shot: source={settings.source} shots={settings.shots} shot_seed={settings.shot_seed}",
          flush=True)
    resad = run_method("resad_cpu")
    patchcore = run_method("patchcore", ["method.image.resize=128", "method.image.crop=128"])
    report("resad_cpu - patchcore", {"image_auroc": resad["image_auroc"] - patchcore["image_auroc"]})
