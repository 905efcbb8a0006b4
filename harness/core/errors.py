"""User-facing errors. The CLI prints their message and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: a clear message that says what is wrong and how to fix it."""

    exit_code = 2


class EvaluationFailed(Exception):
    """The evaluation itself failed (model crash, lmms-eval error); the CLI exits with code 1."""

    exit_code = 1


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest known name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    known = sorted(known)
    return UserError(f"unknown {kind} '{name}'.{did_you_mean(name, known)} Known {kind}s: {', '.join(known)}")
