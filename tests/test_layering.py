"""The layering contracts (pyproject.toml [tool.importlinter]) hold: `lint-imports` passes, and it
does fail when a lower layer imports a higher one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "tasks", "models", "leaderboard", "finedefics_train")

pytestmark = pytest.mark.subprocess


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-c",
        "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
    ]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_layers_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_an_upward_import_is_caught(tmp_path):
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.csv")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "tasks" / "options.py", "a") as handle:
        handle.write("\nfrom harness.runner import plan_run  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "tasks.options -> harness.runner" in result.stdout
