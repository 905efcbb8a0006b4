"""docs/cli.md is what the argparse definitions produce (`python -m harness.cli_docs > docs/cli.md`)."""

from __future__ import annotations

from pathlib import Path

from harness.cli import build_parser
from harness.cli_docs import render, subcommands

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_the_cli_reference_is_the_parsers():
    assert CLI_MD.read_text() == render(), (
        "docs/cli.md differs from the parsers: regenerate it with `python -m harness.cli_docs > docs/cli.md`"
    )


def test_every_command_and_flag_is_in_the_reference():
    parser = build_parser()
    text = render(parser)
    commands = list(subcommands(parser, "harness"))
    assert {"harness run", "harness train run", "harness leaderboard", "harness probe repr"} <= {
        c for c, _, _ in commands
    }
    for command, _, sub in commands:
        section = text.split(f"## `{command}`\n", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in section, (command, option)


def test_a_new_flag_changes_the_reference():
    parser = build_parser()
    before = render(parser)
    next(sub for c, _, sub in subcommands(parser, "harness") if c == "harness run").add_argument(
        "--brand-new", help="a flag added after the reference was written"
    )
    after = render(parser)
    assert before != after and "`--brand-new`" in after and "`--brand-new`" not in before
