"""`harness train ...`: the Finedefics pipeline's commands, registered on the harness CLI.

Each stage family registers its own subcommands: `finedefics_train.data.cli` (`train data`) and
`finedefics_train.train_cli` (`train stage1|stage2|run|merge`)."""

from __future__ import annotations

import argparse

STAGE_COMMANDS = ("finedefics_train.data.cli", "finedefics_train.train_cli")


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="build Finedefics training data and train it (two-stage QLoRA)")
    stages = train.add_subparsers(dest="train_command", required=True)
    for module_name in STAGE_COMMANDS:
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as error:
            if not module_name.startswith(str(error.name)):  # the module itself (or its package) is absent
                raise
            continue
        module.register(stages)
