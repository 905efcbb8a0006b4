"""The CLI from its config: `run`, `prepare` and `worker` (and `submit`) take each evaluation setting
from one definition, RunConfig's field metadata (harness/cli_config.py), so their flags cannot drift."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from harness.cli import build_parser, run_config_from_args
from harness.cli_config import add_dataclass_arguments, cli_fields, config_from_args, flag
from harness.config import OPTION_SOURCES, SCORINGS, RunConfig


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def _definition(action: argparse.Action) -> tuple:
    kind = getattr(action.type, "__name__", action.type)
    return (type(action).__name__, action.help, action.choices, action.default, kind, action.required)


@pytest.fixture(scope="module")
def commands() -> dict[str, argparse.ArgumentParser]:
    return _subparsers(build_parser())


def _by_dest(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions}


def test_every_run_config_field_is_a_run_flag_with_help(commands):
    run = _by_dest(commands["run"])
    for name, field in cli_fields(RunConfig).items():
        assert name in run, f"RunConfig.{name} is not a `harness run` flag"
        assert run[name].help and run[name].help.startswith(field.metadata["cli"]["help"])
    assert set(cli_fields(RunConfig)) == {f.name for f in dataclasses.fields(RunConfig)}
    assert run["scoring"].choices == SCORINGS and run["options"].choices == OPTION_SOURCES


SHARED = {
    "prepare": (
        "task",
        "data_root",
        "choices",
        "classnames",
        "skip_missing",
        "variant",
        "options",
        "clip_model",
        "circular",
        "seed",
    ),
    "data info": ("task", "data_root", "choices", "classnames", "skip_missing"),
    "worker": ("data_root", "choices", "limit", "batch_size", "output_dir"),
    "submit": ("scoring",),
}


@pytest.mark.parametrize("other", SHARED)
def test_the_commands_share_each_flag_definition(commands, other):
    run, theirs = _by_dest(commands["run"]), _by_dest(commands[other])
    for name in SHARED[other]:
        assert name in theirs, f"`harness {other}` lacks --{name}"
        if name in ("data_root", "choices", "task") and other in ("prepare", "data info"):
            continue  # one plain path / positional there, [TASK=]PATH in run: compared below
        assert _definition(theirs[name]) == _definition(run[name]), name


def test_prepare_takes_the_dataset_as_source_and_one_path(commands):
    prepare = _by_dest(commands["prepare"])
    assert prepare["data_root"].option_strings == ["--source"] and prepare["data_root"].required
    assert prepare["data_root"].type is Path and prepare["choices"].type is Path
    assert prepare["task"].option_strings == []  # positional
    run = _by_dest(commands["run"])
    assert (
        prepare["data_root"].help in run["data_root"].help and prepare["choices"].help in run["choices"].help
    )


def test_flags_parse_back_into_the_config(tmp_path):
    args = build_parser().parse_args(
        [
            "run",
            "--model",
            "idefics2",
            "--task",
            "bird200",
            "--model-args",
            "dtype=float32,device=cpu",
            "--data-root",
            f"car196={tmp_path}/cars",
            "--data-root",
            str(tmp_path / "cub"),
            "--choices",
            "c.json",
            "--scoring",
            "loglik",
            "--variant",
            "k5",
            "--circular",
            "--limit",
            "7",
            "--batch-size",
            "2",
            "--seed",
            "3",
        ]
    )
    config = run_config_from_args(args)
    assert config == RunConfig(
        model="idefics2",
        task="bird200",
        model_args={"dtype": "float32", "device": "cpu"},
        data_root=tmp_path / "cub",
        choices=Path("c.json"),
        scoring="loglik",
        variant="k5",
        circular=True,
        limit=7,
        batch_size=2,
        seed=3,
    )


@pytest.mark.parametrize("argv", [["--limit", "0"], ["--batch-size", "-1"], ["--scoring", "logprob"]])
def test_bad_values_are_refused_by_the_parser(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["run", "--model", "m", "--task", "t", *argv])
    assert stop.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_the_helper_works_for_any_config_dataclass():
    """What the training and probe commands will use: their own dataclass, their own flags."""

    @dataclasses.dataclass
    class TrainConfig:
        stage: Literal["stage1", "stage2"] = dataclasses.field(metadata=flag("training stage"))
        learning_rate: float = dataclasses.field(
            default=1e-4, metadata=flag("peak learning rate", positive=True)
        )
        bf16: bool = dataclasses.field(default=False, metadata=flag("train in bfloat16"))
        output: Path | None = dataclasses.field(default=None, metadata=flag("where checkpoints go"))
        internal: int = 0  # no flag metadata: not on the command line

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, TrainConfig)
    args = parser.parse_args(["--stage", "stage2", "--learning-rate", "3e-5", "--bf16", "--output", "out"])
    assert config_from_args(TrainConfig, args) == TrainConfig("stage2", 3e-5, True, Path("out"))
    assert "--internal" not in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--stage", "stage3"])
