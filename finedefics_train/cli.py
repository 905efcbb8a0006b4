"""`harness train ...`: the Finedefics pipeline's commands, a `harness` plugin (the entry point
`train` of the group `harness.plugins` in pyproject.toml).

Each stage family registers its own subcommands: `finedefics_train.data.cli` (`train data`),
`finedefics_train.train_cli` (`train stage1|stage2|run|merge`) and `finedefics_train.demo`
(`train demo`)."""

from __future__ import annotations

import argparse

from finedefics_train import demo, train_cli
from finedefics_train.data import cli as data_cli

STAGE_COMMANDS = (data_cli, train_cli, demo)


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="build Finedefics training data and train it (two-stage QLoRA)")
    stages = train.add_subparsers(dest="train_command", required=True)
    for module in STAGE_COMMANDS:
        module.register(stages)
