"""Running jobs. A job is (method, dataset, category, seed, config); :func:`run` runs every category
of a config, :func:`run_job` one (``job.py``). The rooms:

- ``job.py``: the job itself (skip a finished record, fit and predict, score, record) and the
  categories a config names, validated before any fit;
- ``build.py``: the method and its context (transform, feature extractor, few-shot source) from the
  config, the fit, and prediction over images;
- ``provenance.py``: the config hash, the checkout's commit, seeding;
- ``resources.py``: peak memory while a block runs;
- ``calibration.py``: saved models and the held-out training scores their thresholds come from.
"""

from adbench.runner.build import (
    attach_few_shot,
    backbone_name,
    build_context,
    build_method,
    fit_method,
    method_class,
    predict_category,
    show_progress,
)
from adbench.runner.calibration import calibration_folds, held_out_scores, model_bytes, save_model
from adbench.runner.job import (
    check_run_settings,
    load_categories,
    per_image_aupimo,
    run,
    run_job,
    save_predictions,
)
from adbench.runner.provenance import HASH_KEYS, config_hash, git_sha, seed_everything
from adbench.runner.resources import PeakMemory

__all__ = [
    "HASH_KEYS", "PeakMemory", "attach_few_shot", "backbone_name", "build_context", "build_method",
    "calibration_folds", "check_run_settings", "config_hash", "fit_method", "git_sha", "held_out_scores",
    "load_categories", "method_class", "model_bytes", "per_image_aupimo", "predict_category", "run",
    "run_job", "save_model", "save_predictions", "seed_everything", "show_progress",
]
