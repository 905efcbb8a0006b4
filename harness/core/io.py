"""Atomic writes: readers never see a half-written file, and an interruption never loses the old one."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block succeeds and
    removed when it fails, so readers never see a half-written file and a failure keeps the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp's 0600 would hide results from the rest of a shared folder
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_file_mode() -> int:
    """The mode `open()` gives a new file under this process's current umask."""
    return 0o666 & ~current_umask()


def new_folder_mode() -> int:
    """The mode `mkdir` gives a new folder under this process's current umask (mkdtemp's is 0700)."""
    return 0o777 & ~current_umask()


def current_umask() -> int:
    """Linux reports the umask in /proc without changing it; elsewhere it is set and put back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Holds FOLDER/.lock while a command writes into the folder: a second command into the same folder
    is refused at once (not left to overwrite the first's files)."""
    from filelock import FileLock, Timeout

    from harness.core.errors import UserError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder; choose another output folder")
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(
            f"{folder} is in use by another {what} (it holds {folder / '.lock'}); wait for it to finish, "
            "or choose another output folder"
        ) from None
    try:
        yield
    finally:
        lock.release()


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers never see a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def write_lines_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write text lines (each without its newline) through a temp file and a rename."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        for line in lines:
            handle.write(line + "\n")


def append_lines(path: Path, lines: Iterable[str]) -> None:
    """Append text lines (each without its newline) and flush them to disk. A last line torn by an
    interrupted writer is cut off first, so the first new line is never glued onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        cut_torn_tail(handle)
        handle.write("".join(line + "\n" for line in lines).encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def cut_torn_tail(handle) -> None:
    """Truncates a binary file open for reading and appending after its last newline."""
    end = handle.seek(0, os.SEEK_END)
    position = end
    while position > 0:
        start = max(0, position - (1 << 16))
        handle.seek(start)
        newline = handle.read(position - start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        position = start
    else:
        keep = 0
    if keep < end:
        handle.truncate(keep)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
