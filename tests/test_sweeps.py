"""Sweeps: joblib and submitit_local multiruns, a SIGKILLed job, a failing job, presets.

The multirun masters run inside the test process (``adbench.__main__.app`` with a patched argv);
the jobs run where the launcher puts them: loky worker processes (joblib), fresh processes started
by submitit (submitit_local) or this process (basic launcher).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module

from adbench import results
from adbench.__main__ import app

METHODS = "patchcore,padim"
CATEGORIES = "brick,grass"
TINY = ["method.image.resize=32", "method.image.crop=32", "progress=false", "threads=1",
        "cache.enabled=false"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def multirun(monkeypatch, overrides: list[str]) -> int:
    """Run ``python -m adbench -m <overrides>`` in this process; its exit code (0 when it returns)."""
    monkeypatch.setattr(sys, "argv", ["adbench", "-m", "hydra/hydra_logging=none", *overrides])
    try:
        app()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def sweep_overrides(toy_root: Path, results_dir: Path, sweep_dir: Path) -> list[str]:
    return [f"method={METHODS}", f"data.category={CATEGORIES}", f"data.root={toy_root}",
            f"results_dir={results_dir}", f"hydra.sweep.dir={sweep_dir}", *TINY]


def ok_rows(results_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(results_dir / "leaderboard.csv")
    assert frame["run_id"].is_unique
    return frame


def all_records(results_dir: Path) -> list[dict]:
    """Every record file, parsed (a partial file would raise here)."""
    return [json.loads(p.read_text()) for p in sorted(results_dir.glob("runs/*/*/*/*.json"))]


@pytest.mark.slow  # two worker processes import torch
def test_joblib_sweep_gives_one_row_per_job(toy_root, tmp_path, monkeypatch):
    results_dir = tmp_path / "results"
    overrides = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra/job_logging=none",
                 *sweep_overrides(toy_root, results_dir, tmp_path / "sweep")]
    try:
        assert multirun(monkeypatch, overrides) == 0
    finally:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    frame = ok_rows(results_dir)
    assert len(frame) == 4 and (frame["status"] == "ok").all()
    assert set(zip(frame["method"], frame["category"])) == {
        (m, c) for m in METHODS.split(",") for c in CATEGORIES.split(",")
    }
    assert frame["image_auroc"].between(0, 1).all() and (frame["eval_resolution"] == 32).all()
    assert len({r["config_hash"] for r in all_records(results_dir)}) == 4


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _kill_first_started_job(sweep_dir: Path, killed: list[str], stop: threading.Event) -> None:
    """Watch the submitit job logs; SIGKILL the first job that logs ``run <id> (pid N)`` (it is then
    inside ``run_job``, before its record is written)."""
    while not stop.is_set():
        for log in sorted(sweep_dir.glob(".submitit/*/*_log.out")):
            found = re.search(r"run (\S+) \(pid (\d+)\)", log.read_text(errors="replace"))
            if found:
                os.kill(int(found.group(2)), signal.SIGKILL)
                killed.append(found.group(1))
                return
        time.sleep(0.02)


@pytest.mark.slow  # four job processes import torch
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads job process states from /proc")
def test_submitit_local_sweep_survives_a_killed_job_and_resumes(toy_root, tmp_path, monkeypatch):
    results_dir, sweep_dir = tmp_path / "results", tmp_path / "sweep"
    overrides = sweep_overrides(toy_root, results_dir, sweep_dir)
    killed: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_first_started_job, args=(sweep_dir, killed, stop), daemon=True)
    watcher.start()
    try:
        code = multirun(monkeypatch, ["hydra/launcher=submitit_local", *overrides])
    finally:
        stop.set()
        watcher.join()
    assert len(killed) == 1, "no job was seen starting"
    assert code != 0  # the launcher reports the killed job ...
    controllers = [int(p.name) for p in sweep_dir.glob(".submitit/*") if p.name.isdigit()]
    deadline = time.time() + 600
    while any(_running(pid) for pid in controllers) and time.time() < deadline:
        time.sleep(0.2)
    # ... the others finished; the killed one left no record, and nothing is partial
    records = all_records(results_dir)
    assert len(records) == 3 and all(r["status"] == "ok" for r in records)
    assert killed[0] not in {r["run_id"] for r in records}
    assert len(ok_rows(results_dir)) == 3
    before = {r["run_id"]: r["finished_at"] for r in records}

    # re-running the sweep runs only the killed job (finished ones are skipped: same config hash)
    assert multirun(monkeypatch, ["hydra/job_logging=none", *overrides]) == 0
    frame = ok_rows(results_dir)
    assert len(frame) == 4 and (frame["status"] == "ok").all()
    assert killed[0] in set(frame["run_id"])
    after = {r["run_id"]: r["finished_at"] for r in all_records(results_dir)}
    assert all(after[run_id] == finished for run_id, finished in before.items())


def test_failing_job_is_recorded_and_the_others_finish(toy_root, tmp_path, monkeypatch, caplog):
    results_dir = tmp_path / "results"
    overrides = ["hydra/job_logging=none", "method=patchcore", "method.params.coreset_percentage=7,0.1",
                 "data.category=brick", f"data.root={toy_root}", f"results_dir={results_dir}",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY]
    caplog.set_level(logging.INFO, logger="adbench")
    assert multirun(monkeypatch, overrides) == 1  # the failure is recorded, not raised; exit status 1
    frame = ok_rows(results_dir).set_index("status")
    assert sorted(frame.index) == ["failed", "ok"]
    assert "coreset_percentage=7" in frame.loc["failed", "error"]
    assert 0.5 < frame.loc["ok", "image_auroc"] <= 1.0
    (failed,) = [r for r in all_records(results_dir) if r["status"] == "failed"]
    assert failed["error"].startswith("ValueError") and "Traceback" in failed["traceback"]
    assert "sweep: 1 runs finished ok, 1 failed" in caplog.text
    assert "failed: toy/brick/patchcore" in caplog.text


def _write_then_die(results_dir: str, where: str) -> None:
    """Child process: write a record, SIGKILL itself at ``where`` (before the rename of the record,
    or while holding the leaderboard lock)."""
    record = {"run_id": "toy/c1/m/h1", "status": "ok", "method": "m", "dataset": "toy", "category": "c1",
              "config_hash": "h1", "seed": 0, "image_auroc": 0.5}
    die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if where == "rename":
        results.os.replace = die
    else:
        results.pd.DataFrame.to_csv = die
    results.write_record(results_dir, record)


@pytest.mark.parametrize("where", ["rename", "leaderboard"])
def test_kill_while_writing_leaves_no_partial_record_or_csv(tmp_path, where):
    first = {"run_id": "toy/c0/m/h0", "status": "ok", "method": "m", "dataset": "toy", "category": "c0",
             "config_hash": "h0", "seed": 0, "image_auroc": 0.9}
    results.write_record(tmp_path, first)
    child = mp.get_context("fork").Process(target=_write_then_die, args=(str(tmp_path), where))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    records = all_records(tmp_path)  # every record parses
    frame = pd.read_csv(tmp_path / "leaderboard.csv")  # the CSV parses
    if where == "rename":  # killed before its record existed: only the first one
        assert [r["run_id"] for r in records] == ["toy/c0/m/h0"] and list(frame["run_id"]) == ["toy/c0/m/h0"]
    else:  # record written, CSV rebuild killed: the old CSV is intact, the next rebuild includes it
        assert len(records) == 2 and list(frame["run_id"]) == ["toy/c0/m/h0"]
    rebuilt = results.rebuild_leaderboard(tmp_path)  # the lock died with its holder
    assert len(rebuilt) == len(records)


@pytest.fixture()
def hydra_config():
    """compose(overrides) → the full config (hydra node included), inside one Hydra initialisation."""
    with initialize_config_module(config_module="adbench.conf", version_base="1.3"):
        yield lambda overrides: compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.slow  # composes every experiment preset: seconds
def test_experiment_presets(hydra_config):
    from adbench.datasets.mvtec import MVTEC_CATEGORIES
    from adbench.datasets.toy import TOY_CATEGORIES, TOY_TARGET
    from adbench.datasets.visa import VISA_CATEGORIES

    toy = hydra_config(["+experiment=toy"])
    params = toy.hydra.sweeper.params
    assert toy.hydra.mode.name == "MULTIRUN" and toy.data.name == "toy"
    assert toy.backbone.name == "efficientnet_lite0"
    assert params["data.category"].split(",") == list(TOY_CATEGORIES)
    assert all(m == "patchcore" or m == "padim" or m.endswith("_cpu") for m in params["method"].split(","))
    for name, categories in (("paper_mvtec", MVTEC_CATEGORIES), ("paper_visa", VISA_CATEGORIES)):
        cfg = hydra_config([f"+experiment={name}"])
        assert cfg.backbone.name == "wide_resnet50_2.tv_in1k"
        assert cfg.hydra.sweeper.params["data.category"].split(",") == list(categories)
        assert "patchcore" in cfg.hydra.sweeper.params["method"].split(",")
    sources = {d: hydra_config(["+experiment=fewshot", f"data={d}"]).source
               for d in ("mvtec", "visa", "btad")}
    assert sources == {"mvtec": "visa", "visa": "mvtec", "btad": "mvtec"}  # ResAD Table 1 settings
    named = {}  # every method a preset names exists and composes with that preset
    for name in ("toy", "toy_fewshot", "paper_mvtec", "paper_visa", "fewshot"):
        for method in hydra_config([f"+experiment={name}"]).hydra.sweeper.params["method"].split(","):
            named.setdefault(method, name)
    for method, name in named.items():
        assert hydra_config([f"+experiment={name}", f"method={method}"]).method.name
    draws = hydra_config(["+experiment=toy_dev_draws", "method=glass_cpu"])
    assert draws.data.name == "toy_dev" and draws.method.name == "glass"
    assert draws.hydra.sweeper.params["data.draw"] == "1,2,3"
    assert draws.hydra.sweeper.params["data.category"].split(",") == list(TOY_CATEGORIES)
    few = hydra_config(["+experiment=toy_fewshot"])
    assert few.protocol == "few_shot" and few.source == "toy" and few.shots == 4
    assert few.data.category.split(",") == list(TOY_TARGET)


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local", "submitit_slurm"])
def test_launcher_presets_name_real_launchers(hydra_config, launcher):
    import importlib

    cfg = hydra_config([f"hydra/launcher={launcher}"])
    module, _, name = cfg.hydra.launcher._target_.rpartition(".")
    assert hasattr(importlib.import_module(module), name)


METHOD_PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "method").glob("*.yaml"))


@pytest.mark.parametrize("preset", METHOD_PRESETS)
def test_every_method_preset_composes_and_builds(hydra_config, preset):
    """Each conf/method/*.yaml composes, names a registered method and a variant, and builds."""
    from adbench.registry import list_methods
    from adbench.runner import build_method

    cfg = hydra_config([f"method={preset}", "data=toy"])
    assert cfg.method.name in list_methods() and cfg.method.variant
    assert build_method(cfg) is not None
