"""A `harness` plugin that lives only in the tests: one subcommand and a `before_run` hook, registered
through a monkeypatched `harness.plugins` entry point (tests/test_plugins.py)."""

from __future__ import annotations

import argparse

CALLS: list[str] = []


def register(subparsers) -> None:
    hello = subparsers.add_parser("hello", help="say hello (a test-only plugin)")
    hello.add_argument("--who", default="world")
    hello.set_defaults(func=lambda args: CALLS.append(f"hello {args.who}") or 0)


def before_run(config, args: argparse.Namespace) -> None:
    CALLS.append(f"before_run {config.task}")
