"""Shared fixtures: everything offline, a private HARNESS_HOME, one tiny Idefics2 and one small CUB per session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"

pytest_plugins = ["tests.leaderboard.lb_factories"]  # the leaderboard's db_url and store fixtures


def pytest_collection_modifyitems(items):
    """A module's SLOW_CASES (test names with their parameter ids) run in the slow suite only: one case of
    a test over a module-scoped parametrised fixture, which a mark on the fixture's parameter cannot pick."""
    for item in items:
        if item.name in getattr(item.module, "SLOW_CASES", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def harness_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("harness-home")
    os.environ["HARNESS_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_idefics2(tmp_path_factory) -> Path:
    from models.fixtures.tiny_models import build_tiny_model

    return build_tiny_model("idefics2", tmp_path_factory.mktemp("models") / "tiny-idefics2", seed=0)


@pytest.fixture(scope="session")
def cub_root(tmp_path_factory) -> Path:
    from tasks.fixtures.datasets import make_cub

    return make_cub(tmp_path_factory.mktemp("data") / "cub", n_classes=5, per_class_test=2, seed=0)


@pytest.fixture(scope="session")
def cub_choices(cub_root, tmp_path_factory) -> Path:
    from tasks.fixtures.datasets import make_choice_file

    return make_choice_file(
        "bird200", cub_root, tmp_path_factory.mktemp("choices") / "bird-200.json", k=4, seed=0
    )


@contextmanager
def lock_held_elsewhere(path: Path) -> Iterator[None]:
    """FOLDER/.lock held by another process, as another `harness train` / `train data` holds it (a lock
    taken in this process would test filelock's in-process rules, not two commands)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('held', flush=True); time.sleep(120)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def refused(capsys, argv: list[str], *texts: str) -> str:
    """`harness ARGV` refused as a user error: exit 2, one `error:` line naming each of `texts`, no
    traceback; returns what went to stderr."""
    from harness.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for text in texts:
        assert text in err, err
    return err
