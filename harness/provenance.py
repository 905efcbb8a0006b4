"""Where a result came from: package versions, git commit, model revision."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from harness import __version__
from harness.core.results import Provenance

PACKAGES = ("fgvr-harness", "lmms_eval", "torch", "transformers", "datasets", "accelerate", "peft", "bitsandbytes", "pillow")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
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
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def model_revision(pretrained: str, revision: str | None) -> str | None:
    """A local folder: a hash of its config and weight files' names and sizes. A hub id: the cached commit."""
    path = Path(pretrained)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(path.iterdir()):
            if file.is_file():
                digest.update(f"{file.name}:{file.stat().st_size}\n".encode())
                if file.suffix == ".json":
                    digest.update(file.read_bytes())
        return f"local-sha256:{digest.hexdigest()[:16]}"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(pretrained, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - provenance must never fail a run
        cached = None
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    return revision


def collect(command: list[str], device: str, num_processes: int = 1) -> Provenance:
    return {
        "harness_version": __version__,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": command,
        "device": device,
        "num_processes": num_processes,
    }
