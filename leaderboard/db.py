"""Database layer: the SQLAlchemy tables, the engine, and the versioned schema with its upgrade path.

SQLite (a file under the harness home) by default; PostgreSQL by URL (`--db-url` or
`HARNESS_DB_URL`) so several workers on several hosts can share one queue. Every SQLite transaction
starts with BEGIN IMMEDIATE: a writer holds the lock from its first statement, so a read followed by
a write can never fail half-way with "database is locked" when several processes share the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from harness.core.errors import UserError
from harness.core.paths import harness_home
from leaderboard import DB_URL_ENV

SCHEMA_VERSION = 4  # 2: the probes table; 3: results.protocol; 4: per-question outcomes
DB_FILE = "leaderboard.db"


class SchemaError(UserError):
    """The database cannot be used as it is; the message says exactly what to do."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is taken as UTC (what the harness writes)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in Python; naive UTC in the database, so SQLite compares them correctly."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class MetaEntry(Base):
    __tablename__ = "fgvr_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ModelRow(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    display_name: Mapped[str] = mapped_column(String(256))
    base: Mapped[str | None] = mapped_column(String(128))  # registry architecture
    family: Mapped[str | None] = mapped_column(String(128))
    params_b: Mapped[float | None] = mapped_column(Float)
    checkpoint: Mapped[str | None] = mapped_column(Text)  # hub id or local path
    revision: Mapped[str | None] = mapped_column(String(128))
    precision: Mapped[str | None] = mapped_column(String(32))
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    results: Mapped[list[ResultRow]] = relationship(back_populates="model", cascade="all, delete-orphan")
    probes: Mapped[list[ProbeRow]] = relationship(back_populates="model", cascade="all, delete-orphan")


class ResultRow(Base):
    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(256), unique=True)  # run id, or a stable key for other sources
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(16))  # "reported" | "reproduced"
    scoring: Mapped[str] = mapped_column(String(16))  # "generate" | "loglik" | "paper"
    # harness.core.protocols: "harness" | "foci" | "vlmclassifier"; rows of two protocols never mix
    protocol: Mapped[str] = mapped_column(String(16), default="harness", server_default="harness")
    variant: Mapped[str] = mapped_column(String(32), default="k4")
    task_version: Mapped[str | None] = mapped_column(String(32))
    accuracy: Mapped[float] = mapped_column(Float)  # a fraction in [0, 1]
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    n: Mapped[int | None] = mapped_column(Integer)
    unparseable: Mapped[int | None] = mapped_column(Integer)
    errors: Mapped[int | None] = mapped_column(Integer)
    sample_limit: Mapped[int | None] = mapped_column(Integer)  # --limit of the run, None for the full set
    seed: Mapped[int | None] = mapped_column(Integer)
    option_source: Mapped[str | None] = mapped_column(String(128))
    confusions: Mapped[list | None] = mapped_column(JSON)
    provenance: Mapped[dict | None] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime)  # when the run happened
    recorded: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    model: Mapped[ModelRow] = relationship(back_populates="results")
    outcomes: Mapped[list[OutcomeRow]] = relationship(
        back_populates="result", cascade="all, delete-orphan", order_by="OutcomeRow.question"
    )


class OutcomeRow(Base):
    """One question of a result: right or wrong, the letter given, and the rest of its instance record
    (`leaderboard.outcomes.QuestionOutcome`). Paired comparisons join two results on `question`."""

    __tablename__ = "outcomes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    question: Mapped[int] = mapped_column(Integer)  # the prepared task's question number (its `group`)
    correct: Mapped[bool] = mapped_column(Boolean)
    gold: Mapped[str] = mapped_column(String(8))  # the right option's letter
    predicted: Mapped[str | None] = mapped_column(String(8))  # None: unparseable or failed
    record: Mapped[dict] = mapped_column(JSON)  # input, output, extraction, class names
    result: Mapped[ResultRow] = relationship(back_populates="outcomes")


class ProbeRow(Base):
    """One `harness probe repr` report (harness.core.probe_results.ProbeReport), kept whole."""

    __tablename__ = "probes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(256), unique=True)  # the report's run_id
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    report: Mapped[dict] = mapped_column(JSON)
    folder: Mapped[str | None] = mapped_column(Text)  # where probes.json and the t-SNE PNGs are
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    model: Mapped[ModelRow] = relationship(back_populates="probes")


class SubmissionRow(Base):
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(256))
    checkpoint: Mapped[str] = mapped_column(Text)  # resolved local path or hub id
    is_local: Mapped[bool] = mapped_column(Boolean)
    base: Mapped[str] = mapped_column(String(128))
    revision: Mapped[str] = mapped_column(String(128))  # hub revision, or a fingerprint of a local folder
    weights: Mapped[str] = mapped_column(String(16))  # "full" | "adapter"
    precision: Mapped[str] = mapped_column(String(16))
    tasks: Mapped[list] = mapped_column(JSON)
    scoring: Mapped[str] = mapped_column(String(16), default="generate")
    submitter: Mapped[str] = mapped_column(String(256), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    dedupe_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(256))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_ids: Mapped[list | None] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)


# from-version -> the step that upgrades a database at that version to the next one
Migration = Callable[[Connection], None]


def _add_probes_table(conn: Connection) -> None:
    ProbeRow.__table__.create(conn, checkfirst=True)


def _add_protocol_column(conn: Connection) -> None:
    """Results recorded before protocols were: the harness's own runs, and the paper's reported
    figures, which FOCI-Benchmark's code produced."""
    conn.execute(text("ALTER TABLE results ADD COLUMN protocol VARCHAR(16) NOT NULL DEFAULT 'harness'"))
    conn.execute(text("UPDATE results SET protocol = 'foci' WHERE source = 'reported'"))


def _add_outcomes_table(conn: Connection) -> None:
    OutcomeRow.__table__.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Migration] = {1: _add_probes_table, 2: _add_protocol_column, 3: _add_outcomes_table}


def resolve_db_url(db_url: str | None = None) -> str:
    """--db-url, else HARNESS_DB_URL, else an SQLite file under the harness home."""
    url = db_url or os.environ.get(DB_URL_ENV)
    if url:
        return url
    return f"sqlite:///{harness_home() / DB_FILE}"


def create_store_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise UserError(
            f"--db-url '{url}' is not a database URL (examples: sqlite:///path/to/leaderboard.db, "
            "postgresql+psycopg://user@host/dbname)"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise UserError(
            f"{exc.name} is needed for {parsed.get_backend_name()} databases: "
            "pip install 'fgvr-harness[postgres]'"
        ) from exc
    except NoSuchModuleError:
        raise UserError(
            f"--db-url: '{parsed.drivername}' is not a database this store runs on; use sqlite:///PATH "
            "or postgresql+psycopg://user@host/dbname"
        ) from None


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below opens transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA foreign_keys = ON")
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def ensure_schema(engine: Engine) -> int:
    """Create the tables in a new database, or upgrade an older one; return the schema version."""
    where = engine.url.render_as_string(hide_password=True)
    with engine.begin() as conn:
        serialize(conn, "schema")
        tables = set(inspect(conn).get_table_names())
        if MetaEntry.__tablename__ not in tables:
            ours = tables & {"models", "results", "submissions"}
            if ours:
                raise SchemaError(
                    f"{where} has tables ({', '.join(sorted(ours))}) but no fgvr-harness schema version, so it "
                    "was not written by fgvr-harness. Point --db-url / HARNESS_DB_URL at another database, or "
                    "move this one away and rebuild it with `harness import DIR` on your run folders."
                )
            Base.metadata.create_all(conn)
            _write_version(conn, SCHEMA_VERSION)
            return SCHEMA_VERSION
        version = _read_version(conn, where)
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{where} has leaderboard schema version {version}, newer than this fgvr-harness "
                f"understands ({SCHEMA_VERSION}). Upgrade fgvr-harness (pip install -U fgvr-harness) "
                "or point --db-url at another database."
            )
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise SchemaError(
                    f"{where} has leaderboard schema version {version} and there is no upgrade path from it to "
                    f"{SCHEMA_VERSION}. Back it up, move it away, and rebuild it with `harness import DIR`."
                )
            step(conn)
            version += 1
            _write_version(conn, version)
        Base.metadata.create_all(conn)  # tables added in this version without a migration step
        return version


_LOCK_IDS = {"schema": 715517, "submit": 715518, "reported": 715519}


def serialize(conn: Connection, what: str) -> None:
    """Make this transaction the only one doing `what` until it ends: a transaction-scoped advisory lock
    on PostgreSQL; nothing to do on SQLite, where BEGIN IMMEDIATE already serialises writers."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_IDS[what]})


def _read_version(conn: Connection, where: str) -> int:
    raw = conn.execute(text("SELECT value FROM fgvr_meta WHERE key = 'schema_version'")).scalar()
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise SchemaError(
            f"{where}: fgvr_meta has no readable schema_version ({raw!r}); "
            "move the database away and rebuild it with `harness import DIR`."
        ) from None


def _write_version(conn: Connection, version: int) -> None:
    set_meta(conn, "schema_version", str(version))


def get_meta(conn: Connection, key: str) -> str | None:
    return conn.execute(text("SELECT value FROM fgvr_meta WHERE key = :k"), {"k": key}).scalar()


def set_meta(conn: Connection, key: str, value: str) -> None:
    updated = conn.execute(text("UPDATE fgvr_meta SET value = :v WHERE key = :k"), {"k": key, "v": value})
    if updated.rowcount == 0:
        conn.execute(text("INSERT INTO fgvr_meta (key, value) VALUES (:k, :v)"), {"k": key, "v": value})
