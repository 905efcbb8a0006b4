"""The command-line reference, written from the argparse definitions themselves (every subcommand,
the plugins' included), so that it cannot drift from the code:

    python -m harness.cli_docs > docs/cli.md

`tests/test_cli_docs.py` fails when docs/cli.md differs from what this prints. Defaults that depend
on the machine (a user name, a home folder) are left to the help texts, which state the rule."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Iterator

from harness.cli import build_parser

HEADER = """# Command-line reference

Generated from the argparse definitions by `python -m harness.cli_docs > docs/cli.md`; do not edit
by hand (`tests/test_cli_docs.py` fails when this file and the parsers differ). The subcommands of
the leaderboard and of `harness train` come from the `harness.plugins` entry points.
"""


def subcommands(
    parser: argparse.ArgumentParser, prefix: str
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(command line, help, parser) of every subcommand under `parser`, depth first, in declaration order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", helps.get(name, ""), sub
                yield from subcommands(sub, f"{prefix} {name}")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""  # a switch
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        value = "|".join(str(choice) for choice in action.choices)
    else:
        value = action.metavar or action.dest.upper()
    if action.nargs in ("+", "*"):
        value += " ..."
    return f"`{_cell(value)}`"


def _default(action: argparse.Action) -> str:
    """The default as written on the command line; none for switches, empty values and defaults that
    depend on the machine (a path, the user's name)."""
    value = action.default
    if action.nargs == 0 or value in (None, "", [], argparse.SUPPRESS) or callable(value):
        return ""
    values = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, (int, float, str)) for v in values):
        return ""
    text = " ".join(str(v) for v in values)
    if os.sep in text or text == getpass.getuser():
        return ""
    return f"`{_cell(text)}`"


def argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = (
            ", ".join(f"`{option}`" for option in action.option_strings)
            or f"`{action.metavar or action.dest}`"
        )
        notes = []
        if action.required and action.option_strings:
            notes.append("required")
        if isinstance(action, argparse._AppendAction):
            notes.append("repeatable")
        default = _default(action)
        if default:
            notes.append(f"default {default}")
        help_text = _cell(action.help or "")
        if notes:
            help_text = f"({', '.join(notes)}) {help_text}".strip()
        rows.append(f"| {name} | {_value(action)} | {help_text} |")
    return rows


def render(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or build_parser()
    lines = [HEADER]
    for command, help_text, sub in subcommands(parser, parser.prog):
        lines += [f"## `{command}`", ""]
        if help_text:
            lines += [_cell(help_text), ""]
        rows = argument_rows(sub)
        children = [
            name for name, _, _ in subcommands(sub, command) if name.count(" ") == command.count(" ") + 1
        ]
        if children:
            lines += ["Subcommands: " + ", ".join(f"`{name}`" for name in children) + ".", ""]
        if rows:
            lines += ["| argument | value | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
