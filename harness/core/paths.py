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
