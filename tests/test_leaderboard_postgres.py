"""The store and the queue on PostgreSQL: the row-lock claim, several worker processes, concurrent first opens.

Runs against the server HARNESS_TEST_PG_URL names (a URL whose user may create databases, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres), else against a throwaway server started from
the installed PostgreSQL binaries (tests/pg_server.py; `make test` installs them). Skips, saying
why, only when neither is there. Each test gets its own database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

PG_ENV = "HARNESS_TEST_PG_URL"
pytestmark = pytest.mark.server  # PostgreSQL: $HARNESS_TEST_PG_URL or a throwaway local server
pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'fgvr-harness[postgres]'")

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from leaderboard import db  # noqa: E402
from leaderboard.db import utcnow  # noqa: E402
from leaderboard.queue import FINISHED, PENDING, SubmissionQueue  # noqa: E402
from leaderboard.store import ResultStore  # noqa: E402
from leaderboard.submissions import SubmissionRefused, ValidatedSubmission  # noqa: E402
from leaderboard.table import leaderboard_table  # noqa: E402
from leaderboard.worker import QueueWorker  # noqa: E402
from tests import pg_server  # noqa: E402
from tests.leaderboard.lb_factories import fake_evaluate, make_summary  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def admin_url():
    if os.environ.get(PG_ENV):
        yield os.environ[PG_ENV]
        return
    if pg_server.binaries() is None:
        pytest.skip(
            f"no PostgreSQL server: set {PG_ENV} (a URL whose user may create databases) or install "
            "PostgreSQL (scripts/install_postgres.sh) to run these"
        )
    with pg_server.temporary_server() as url:
        yield url


@pytest.fixture
def pg_url(admin_url):
    name = f"fgvr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def job(name: str, tasks=("dog120", "bird200")) -> ValidatedSubmission:
    return ValidatedSubmission(
        model_name=name,
        checkpoint=f"/subs/{name}",
        is_local=True,
        base="idefics2",
        revision=f"local-{name}",
        weights="full",
        precision="float32",
        tasks=tasks,
        scoring="generate",
        submitter="alice",
        size_bytes=1,
    )


def test_store_on_postgres(pg_url):
    store = ResultStore.open(pg_url)
    summary = make_summary()
    assert store.record_summary(summary) is True
    assert store.record_summary(summary) is False
    frame = leaderboard_table(store.result_frame())
    assert frame.iloc[0]["Average"] == 76.84 and "reproduced" in set(frame["Source"])
    created = store.model_info("idefics2")[1]
    assert any(row["created"].isoformat() == "2025-03-01T10:15:00+00:00" for row in created)
    with store.engine.begin() as conn:
        db.set_meta(conn, "schema_version", str(db.SCHEMA_VERSION + 1))
    with pytest.raises(db.SchemaError, match="newer than this fgvr-harness"):
        ResultStore.open(pg_url)
    store.close()


def test_concurrent_first_opens_create_the_schema_once(pg_url):
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: ResultStore.open(pg_url), range(4)))
    assert len(stores[0].result_frame()) == 14 * 6
    for store in stores:
        store.close()


def test_claim_lease_and_duplicates_on_postgres(pg_url):
    store = ResultStore.open(pg_url)
    queue = SubmissionQueue(store)
    first = queue.submit(job("a"), per_day=10)
    queue.submit(job("b"), per_day=10)
    with pytest.raises(SubmissionRefused, match="already submission"):
        queue.submit(job("a"), per_day=10)
    assert queue.claim("w1", 30).id == first
    later = utcnow() + timedelta(seconds=31)
    assert queue.claim("w2", 30, now=later).id == first  # w1's lease ran out: the oldest job again
    assert queue.claim("w3", 30, now=later).model_name == "b"
    assert queue.claim("w4", 30, now=later) is None
    store.close()


@pytest.mark.subprocess
def test_several_worker_processes_on_postgres(pg_url, tmp_path):
    store = ResultStore.open(pg_url)
    queue = SubmissionQueue(store)
    for index in range(20):
        queue.submit(job(f"m{index}"), per_day=100)
    log = tmp_path / "evaluations.log"
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.leaderboard.queue_worker_process", pg_url, str(log), "drain", "30"],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for _ in range(4)
    ]
    for process in workers:
        assert process.wait(timeout=120) == 0
    counts = Counter(tuple(line.split()[:2]) for line in log.read_text().splitlines())
    assert len(counts) == 40 and set(counts.values()) == {1}
    assert {row["status"] for row in queue.list()} == {FINISHED}
    assert QueueWorker(store, evaluate=fake_evaluate, revalidate=False).run_one() is False
    assert queue.list((PENDING,)) == []
    store.close()


def test_per_question_outcomes_round_trip_on_postgres(pg_url, tmp_path):
    from leaderboard.export import export, items_from_store
    from leaderboard.importer import import_path
    from leaderboard.table import leaderboard_table
    from tests.leaderboard.lb_factories import make_comparison_runs

    sqlite = ResultStore.open(f"sqlite:///{tmp_path / 'lb.db'}")
    assert import_path(sqlite, make_comparison_runs(tmp_path / "runs", n=50)).added == 3
    export(items_from_store(sqlite), "every-eval-ever", tmp_path / "eee")
    store = ResultStore.open(pg_url)
    try:
        assert import_path(store, tmp_path / "eee").added == 3
        assert leaderboard_table(store.result_frame()).equals(leaderboard_table(sqlite.result_frame()))
        keys = sqlite.result_frame().query("source == 'reproduced'")["key"].tolist()
        assert store.correctness(keys) == sqlite.correctness(keys) and len(store.correctness(keys)) == 3
    finally:
        store.close()
        sqlite.close()
