"""Published-number deltas: the published protocol's conditions (``requires``) and AU-PRO definitions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from adbench import results
from adbench.reporting import published

MVTEC = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
         "tile", "toothbrush", "transistor", "wood", "zipper")


def _runs(tmp_path: Path, method: str, variant: str, crop: int, params: dict,
          **values: float) -> pd.DataFrame:
    """One finished run per MVTec AD category of one setup (WRN-50 V1 weights); the leaderboard."""
    for category in MVTEC:
        config = {"method": {"name": method, "variant": variant, "image": {"resize": crop, "crop": crop},
                             "params": params},
                  "backbone": {"name": "wide_resnet50_2.tv_in1k"}, "protocol": "one_class", "seed": 0,
                  "data": {"name": "mvtec", "category": category}}
        record = {"run_id": f"mvtec/{category}/{method}/h", "status": "ok", "method": method,
                  "variant": variant, "dataset": "mvtec", "category": category, "protocol": "one_class",
                  "seed": 0,
                  "backbone": "wide_resnet50_2.tv_in1k", "eval_resolution": crop, "config_hash": "h",
                  "config": config, **values}
        path = results.record_path(tmp_path, "mvtec", category, method, "h")
        results.atomic_write_text(path, json.dumps(record))
    return results.rebuild_leaderboard(tmp_path)


def _compare(tmp_path: Path, method: str, variant: str, crop: int, params: dict) -> pd.DataFrame:
    frame = _runs(tmp_path, method, variant, crop, params,
                  image_auroc=0.99, pixel_auroc=0.98, pixel_aupro=0.9)
    compared = published.compare(frame, configs=results.setup_configs(tmp_path))
    return compared[compared["paper_variant"] == compared["paper_variant"].iloc[0]].set_index("metric")


def test_glass_with_builtin_textures_gets_no_difference_and_says_why(tmp_path):
    params = {"texture_source": "builtin", "foreground": "auto"}
    compared = _compare(tmp_path, "glass", "glass-j", 288, params)
    assert compared["delta"].isna().all()
    assert "texture_source differs (ours builtin, paper dtd)" in compared.loc["image_auroc", "note"]
    assert "foreground differs (ours auto, paper not auto)" in compared.loc["image_auroc", "note"]
    assert "best of 640 epochs on the test set" in compared.loc["image_auroc", "note"]


def test_glass_as_the_official_runs_gets_differences_but_not_for_its_pro(tmp_path):
    compared = _compare(tmp_path, "glass", "glass-j", 288,
                        {"texture_source": "dtd", "foreground": "/data/mvtec/fg_mask"})
    assert compared.loc["image_auroc", "delta"] == pytest.approx(0.99 - 0.999)
    assert compared.loc["pixel_auroc", "delta"] == pytest.approx(0.98 - 0.993)
    assert pd.isna(compared.loc["pixel_aupro", "delta"])
    assert "not the MVTec definition" in compared.loc["pixel_aupro", "note"]


@pytest.mark.parametrize(("method", "variant", "params", "comparable"), [
    ("padim", "Rd-auto", {}, True),  # the PaDiM paper's PRO is the MVTec definition
    ("patchcore", "x", {"coreset_percentage": 0.1}, False),
    ("cflow", "official-rot5", {}, False),
])
def test_aupro_difference_only_for_the_mvtec_definition(tmp_path, method, variant, params, comparable):
    compared = _compare(tmp_path, method, variant, 224, params)
    assert pd.isna(compared.loc["pixel_aupro", "delta"]) != comparable


def test_requirements_parse_equal_and_not_equal():
    config = {"a.b": "dtd", "a.c": "auto"}
    assert published.unmet_requirements("a.b=dtd;a.c!=none", config) == []
    assert published.unmet_requirements("a.b=builtin;a.c!=auto", config) == [
        "b differs (ours dtd, paper builtin)", "c differs (ours auto, paper not auto)"]
