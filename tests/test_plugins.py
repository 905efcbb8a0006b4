"""`harness` plugins come from the entry-point group `harness.plugins` (pyproject.toml): the harness
names none of them. A plugin registered from a test-only package adds its command and its hook; the
declared table is read from pyproject.toml where the installed metadata predates it."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from harness import plugins
from harness.cli import build_parser, main
from tests import plugin_example

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _register(monkeypatch, **targets: str) -> None:
    points = [metadata.EntryPoint(name, value, plugins.GROUP) for name, value in targets.items()]
    monkeypatch.setattr(
        plugins.metadata, "entry_points", lambda group: [p for p in points if p.group == group]
    )


@pytest.mark.parametrize("target", ["tests.plugin_example", "tests:plugin_example"])
def test_a_registered_plugin_adds_its_command_and_hook(monkeypatch, target):
    _register(monkeypatch, example=target)
    plugin_example.CALLS.clear()
    assert main(["hello", "--who", "plugins"]) == 0
    assert plugin_example.CALLS == ["hello plugins"]
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    assert run.get_default("before_run") == [plugin_example.before_run]
    assert plugins.plugin_hooks("before_run") == [plugin_example.before_run]
    assert plugins.plugin_hooks("after_run") == []


def test_the_declared_plugins_are_the_leaderboard_and_training(monkeypatch):
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"][plugins.GROUP]
    _register(monkeypatch)  # metadata without the group: an editable install not yet refreshed
    assert plugins.plugin_targets() == dict(sorted(declared.items()))
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"leaderboard", "submit", "import", "train"} <= set(commands)
    _register(monkeypatch, example="tests.plugin_example")  # installed metadata wins over the file
    assert plugins.plugin_targets() == {"example": "tests.plugin_example"}


def test_an_absent_plugin_package_is_left_out_and_a_broken_one_is_not(monkeypatch):
    _register(monkeypatch, gone="no_such_package.cli")
    assert plugins.load_plugins() == []
    _register(monkeypatch, broken="tests.plugin_example.broken")
    with pytest.raises(ModuleNotFoundError, match="not_installed_dependency"):
        plugins.load_plugins()
