"""Runs the leaderboard subcommands the way `harness` does: argparse + register(), UserError -> stderr, exit 2."""

from __future__ import annotations

import argparse
import sys

from harness.core.errors import UserError
from leaderboard.cli import register


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))
