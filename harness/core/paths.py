"""Where the harness keeps its files: HARNESS_HOME (default ~/.cache/fgvr-harness)."""

from __future__ import annotations

import os
from pathlib import Path


def harness_home() -> Path:
    return Path(os.environ.get("HARNESS_HOME", Path.home() / ".cache" / "fgvr-harness")).expanduser()


def prepared_root() -> Path:
    return harness_home() / "prepared"


def runs_root() -> Path:
    return harness_home() / "runs"


LOCAL_PATH_PREFIXES = ("/", "./", "../", "~")


def looks_like_local_path(reference: str) -> bool:
    """The one rule for "is this checkpoint reference a local path?": it is written as a path ("/x",
    "./x", "../x", "~/x", "." or "..") or it exists on disk; anything else is a hub id ("owner/name")."""
    reference = reference.strip()
    return (
        reference in (".", "..")
        or reference.startswith(LOCAL_PATH_PREFIXES)
        or Path(reference).expanduser().exists()
    )
