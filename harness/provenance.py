"""Where a result came from: package versions, git commit (the weights' fingerprint is part of the
computation's identity: harness.core.identity)."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from harness import __version__
from harness.core.results import Provenance

PACKAGES = (
    "fgvr-harness",
    "lmms_eval",
    "torch",
    "transformers",
    "datasets",
    "accelerate",
    "peft",
    "bitsandbytes",
    "pillow",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """The installed versions of `names` (those not installed are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """The commit of the harness source tree, with '+dirty' when it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def collect(
    command: list[str], device: str, num_processes: int = 1, batch_size: int | None = None
) -> Provenance:
    """Where and how a run was computed; `batch_size` (questions per model call) belongs to a result's
    identity wherever answers can move with it (docs/batching.md)."""
    recorded: Provenance = {
        "harness_version": __version__,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": command,
        "device": device,
        "num_processes": num_processes,
    }
    if batch_size is not None:
        recorded["batch_size"] = batch_size
    return recorded
