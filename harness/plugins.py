"""The command-line plugins: packages above or beside the harness (the leaderboard, the training
pipeline) that add `harness` subcommands and hooks, registered as entry points of the group
`harness.plugins` in pyproject.toml, as our models register with lmms-eval (`lmms_eval.models`).

The harness never imports them by name. A plugin module has `register(subparsers)` and may have
`before_run(config, args)` (called before `harness run` plans anything, to refuse bad input early),
`after_run(summary, args)` (after it) and `after_probe(folder, args)` (after `harness probe repr`,
with its report folder). A plugin whose package is not installed is left out."""

from __future__ import annotations

import importlib
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType

GROUP = "harness.plugins"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def plugin_targets() -> dict[str, str]:
    """{plugin name: module} from the installed metadata; from pyproject.toml in a source checkout
    whose metadata predates the group (an editable install not yet refreshed with `pip install -e .`)."""
    targets = {point.name: point.value for point in metadata.entry_points(group=GROUP)}
    if not targets and PYPROJECT.is_file():
        declared = tomllib.loads(PYPROJECT.read_text())["project"].get("entry-points", {})
        targets = dict(declared.get(GROUP, {}))
    return dict(sorted(targets.items()))


def load_plugins() -> list[ModuleType]:
    """The plugin modules (an entry point names a module, or `module:attribute`), in name order."""
    plugins = []
    for target in plugin_targets().values():
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not (module_name + ".").startswith(error.name + "."):
                raise  # the plugin is there but something it imports is not: a real failure
            continue
        plugins.append(getattr(module, attribute) if attribute else module)
    return plugins


def plugin_hooks(hook: str) -> list:
    """The plugins' `hook` functions (`before_run`, `after_run`), for commands other than `harness run`
    that evaluate a model through the runner (`harness train --eval-after`) and record it the same way."""
    return [getattr(plugin, hook) for plugin in load_plugins() if hasattr(plugin, hook)]
