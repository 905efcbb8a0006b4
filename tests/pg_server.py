"""A throwaway PostgreSQL server for the PostgreSQL tests: initdb into a temporary folder, serve on a
free port of 127.0.0.1 with trust authentication, stop and delete it afterwards.

Used when HARNESS_TEST_PG_URL names no server and the PostgreSQL binaries are installed
(scripts/install_postgres.sh puts them there in `make test`). PostgreSQL refuses to run as root, so
as root the server runs as the `postgres` (else `nobody`) user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def binaries() -> Path | None:
    """The folder holding initdb and postgres, if PostgreSQL is installed."""
    try:
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(found) / "postgres").is_file():
            return Path(found)
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _account() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(
        "running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def temporary_server(timeout: float = 60) -> Iterator[str]:
    """Yields an admin URL (`postgresql+psycopg://postgres@127.0.0.1:PORT/postgres`) of a fresh server."""
    bindir = binaries()
    if bindir is None:
        raise FileNotFoundError(
            "PostgreSQL is not installed (no pg_config, no /usr/lib/postgresql/*/bin/postgres)"
        )
    account = _account()
    root = Path(tempfile.mkdtemp(prefix="fgvr-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()

    def as_account():
        if account is not None:
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

    if account is not None:
        for path in (root, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        preexec_fn=as_account,
        env=env,
    )
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(sockets),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=100",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=as_account,
        env=env,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            )
            if ready.returncode == 0:
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
