"""The package ships its configs (a non-editable install must run) and CI runs the README's commands."""

from __future__ import annotations

import configparser
import fnmatch
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_file_is_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["adbench.conf"].split(",")]
    for path in (ROOT / "conf").rglob("*.yaml"):
        rel = path.relative_to(ROOT / "conf").as_posix()
        assert any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns), rel
    packages = cfg["options"]["packages"].split()
    assert {"adbench", "adbench.methods", "adbench.datasets", "adbench.conf"} <= set(packages)
    # every sub-package of adbench/ is installed by a non-editable install too
    inner = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "adbench").rglob("__init__.py")}
    assert inner <= set(packages), sorted(inner - set(packages))


def test_the_datasets_folder_never_passes_for_hugging_face_datasets():
    """From the repository root the top-level datasets/ folder is importable as ``datasets``; it refuses."""
    run = subprocess.run([sys.executable, "-c", "import datasets"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0 and "is adbench.datasets, not Hugging Face `datasets`" in run.stderr


def test_ci_runs_the_readme_setup_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("make install", "make test"):
        assert command in readme and command in ci
    assert "make bench" in readme
