"""Where a result came from: package versions, git commit, model revision."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
import time
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


FINGERPRINT_PREFIX = "local-sha256:"


_FILE_DIGESTS: dict[tuple, str] = {}  # (path, device, inode, size, mtime_ns, ctime_ns) -> sha256 of the bytes


def checkpoint_fingerprint(folder: Path) -> str:
    """The content hash of a local checkpoint: every file's relative path, size and bytes (symlinks are
    hashed as what they point to). Weights rewritten in place at the same size get a new fingerprint.

    A file's digest is reused within a process while its stat is unchanged, ctime included (which
    every write, rename or chmod moves and no user can set back), so the worker can check a
    checkpoint again after each task without reading it again."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        info = path.stat()
        digest.update(
            f"{path.relative_to(folder).as_posix()}\0{info.st_size}\0{_file_digest(path, info)}".encode()
        )
    return FINGERPRINT_PREFIX + digest.hexdigest()[:32]


def _file_digest(path: Path, info) -> str:
    key = (str(path.resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    if key in _FILE_DIGESTS:
        return _FILE_DIGESTS[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(2**22):
            digest.update(block)
    # a file changed in the last seconds is not remembered: file-system clocks are coarse (milliseconds),
    # so a second write in the same tick could leave its ctime unchanged
    if time.time_ns() - info.st_ctime_ns > 2 * 10**9:
        _FILE_DIGESTS[key] = digest.hexdigest()
    return digest.hexdigest()


def model_revision(pretrained: str, revision: str | None, adapter: str | None = None) -> str | None:
    """A local folder: its content fingerprint. A hub id: the cached commit. With a local `adapter`, one
    fingerprint of the base's revision and the adapter's content."""
    base = _base_revision(pretrained, revision)
    if not adapter or not Path(adapter).is_dir():
        return base
    combined = hashlib.sha256(f"{base}\0{checkpoint_fingerprint(Path(adapter))}".encode()).hexdigest()
    return FINGERPRINT_PREFIX + combined[:32]


def _base_revision(pretrained: str, revision: str | None) -> str | None:
    path = Path(pretrained)
    if path.is_dir():
        return checkpoint_fingerprint(path)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(pretrained, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - provenance must never fail a run
        cached = None
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    return revision


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
