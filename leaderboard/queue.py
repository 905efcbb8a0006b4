"""The evaluation queue: PENDING -> RUNNING -> FINISHED / FAILED, with an atomic claim and a lease.

A worker claims the oldest PENDING job in one statement (a conditional UPDATE on SQLite, whose
transactions here start with BEGIN IMMEDIATE; SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL), so
no job is handed to two workers. It then renews a lease while it works; a job whose lease has
expired (its worker died) goes back to PENDING at the next claim, or to FAILED once it has taken
down `max_attempts` workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, update

from harness.core.errors import UserError
from leaderboard.db import SubmissionRow, serialize, utcnow
from leaderboard.store import ResultStore
from leaderboard.submissions import (
    CheckpointOpener,
    HubCheckpoint,
    SubmissionPolicy,
    SubmissionRefused,
    SubmissionRequest,
    ValidatedSubmission,
    validate_submission,
)

PENDING, RUNNING, FINISHED, FAILED = "PENDING", "RUNNING", "FINISHED", "FAILED"
STATUSES = (PENDING, RUNNING, FINISHED, FAILED)
MAX_ERROR_CHARS = 4000
RATE_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class Job:
    id: int
    model_name: str
    checkpoint: str
    is_local: bool
    base: str
    revision: str
    weights: str
    precision: str
    tasks: tuple[str, ...]
    scoring: str
    attempts: int
    submitter: str


LISTED_COLUMNS = (
    "id",
    "model_name",
    "base",
    "checkpoint",
    "revision",
    "weights",
    "precision",
    "tasks",
    "scoring",
    "submitter",
    "size_bytes",
    "status",
    "attempts",
    "worker",
    "created",
    "started",
    "finished",
    "lease_expires",
    "error",
    "run_ids",
)


class SubmissionQueue:
    def __init__(self, store: ResultStore, max_attempts: int = 3):
        self.store = store
        self.engine = store.engine
        self.max_attempts = max_attempts

    # --- submitting ----------------------------------------------------------------------------

    def submit(self, submission: ValidatedSubmission, per_day: int, now: datetime | None = None) -> int:
        """Queue a validated submission; refuse a duplicate or a submitter over the rate limit."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            serialize(
                conn, "submit"
            )  # the duplicate and rate checks and the insert, as one step across hosts
            duplicate = conn.execute(
                select(SubmissionRow.id, SubmissionRow.status).where(
                    SubmissionRow.dedupe_key == submission.dedupe_key, SubmissionRow.status != FAILED
                )
            ).first()
            if duplicate is not None:
                raise SubmissionRefused(
                    "duplicate",
                    f"{submission.model_name} (revision {submission.revision}, "
                    f"precision {submission.precision}, base {submission.base}) is "
                    f"already submission #{duplicate.id} ({duplicate.status})",
                )
            holder = conn.execute(
                select(SubmissionRow.id, SubmissionRow.revision).where(
                    SubmissionRow.model_name == submission.model_name,
                    SubmissionRow.revision != submission.revision,
                    SubmissionRow.status != FAILED,
                )
            ).first()
            if holder is not None:
                raise SubmissionRefused(
                    "name",
                    f"the name {submission.model_name} is taken by other weights "
                    f"(submission #{holder.id}); rename the folder for new weights",
                )
            recent = conn.execute(
                select(func.count())
                .select_from(SubmissionRow)
                .where(
                    SubmissionRow.submitter == submission.submitter, SubmissionRow.created > now - RATE_WINDOW
                )
            ).scalar_one()
            if recent >= per_day:
                raise SubmissionRefused(
                    "rate_limit",
                    f"{submission.submitter} has made {recent} submissions in the "
                    f"last 24 hours; the limit is {per_day}. Try again later",
                )
            return conn.execute(
                SubmissionRow.__table__.insert()
                .values(
                    model_name=submission.model_name,
                    checkpoint=submission.checkpoint,
                    is_local=submission.is_local,
                    base=submission.base,
                    revision=submission.revision,
                    weights=submission.weights,
                    precision=submission.precision,
                    tasks=list(submission.tasks),
                    scoring=submission.scoring,
                    submitter=submission.submitter,
                    size_bytes=submission.size_bytes,
                    dedupe_key=submission.dedupe_key,
                    status=PENDING,
                    attempts=0,
                    created=now,
                )
                .returning(SubmissionRow.id)
            ).scalar_one()

    # --- working -------------------------------------------------------------------------------

    def claim(self, worker: str, lease_s: float, now: datetime | None = None) -> Job | None:
        """Take the oldest PENDING job for `worker`, or None when there is none."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            self._recover(conn, now)
            oldest = select(SubmissionRow.id).where(SubmissionRow.status == PENDING)
            oldest = oldest.order_by(SubmissionRow.created, SubmissionRow.id).limit(1)
            if conn.dialect.name == "postgresql":
                job_id = conn.execute(oldest.with_for_update(skip_locked=True)).scalar()
                if job_id is None:
                    return None
                target = SubmissionRow.id == job_id
            else:
                target = SubmissionRow.id == oldest.scalar_subquery()
            row = (
                conn.execute(
                    update(SubmissionRow)
                    .where(target, SubmissionRow.status == PENDING)
                    .values(
                        status=RUNNING,
                        worker=worker,
                        started=now,
                        finished=None,
                        error=None,
                        lease_expires=now + timedelta(seconds=lease_s),
                        attempts=SubmissionRow.attempts + 1,
                    )
                    .returning(*[SubmissionRow.__table__.c[field] for field in Job.__dataclass_fields__])
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return Job(**{**row, "tasks": tuple(row["tasks"])})

    def _owned(self, job_id: int, worker: str):
        return and_(
            SubmissionRow.id == job_id, SubmissionRow.worker == worker, SubmissionRow.status == RUNNING
        )

    def renew(self, job_id: int, worker: str, lease_s: float) -> bool:
        """Extend the lease; False when the job is no longer this worker's (its lease ran out)."""
        with self.engine.begin() as conn:
            expires = utcnow() + timedelta(seconds=lease_s)
            return (
                conn.execute(
                    update(SubmissionRow).where(self._owned(job_id, worker)).values(lease_expires=expires)
                ).rowcount
                == 1
            )

    def finish(self, job_id: int, worker: str, run_ids: list[str]) -> bool:
        return self._close(job_id, worker, status=FINISHED, run_ids=run_ids, error=None)

    def fail(self, job_id: int, worker: str, error: str, run_ids: list[str] | None = None) -> bool:
        return self._close(
            job_id, worker, status=FAILED, run_ids=run_ids or None, error=error[:MAX_ERROR_CHARS]
        )

    def release(self, job_id: int, worker: str) -> bool:
        """Give a job back untouched (the worker was stopped): PENDING again, the attempt not counted."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(SubmissionRow)
                    .where(self._owned(job_id, worker))
                    .values(
                        status=PENDING,
                        worker=None,
                        started=None,
                        lease_expires=None,
                        attempts=SubmissionRow.attempts - 1,
                    )
                ).rowcount
                == 1
            )

    def _close(self, job_id: int, worker: str, **values: Any) -> bool:
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(SubmissionRow)
                    .where(self._owned(job_id, worker))
                    .values(finished=utcnow(), lease_expires=None, **values)
                ).rowcount
                == 1
            )

    def recover_expired(self, now: datetime | None = None) -> int:
        with self.engine.begin() as conn:
            return self._recover(conn, now or utcnow())

    def _recover(self, conn: Connection, now: datetime) -> int:
        """Jobs whose worker stopped renewing: back to PENDING, or FAILED after max_attempts lost workers."""
        expired = and_(SubmissionRow.status == RUNNING, SubmissionRow.lease_expires < now)
        failed = conn.execute(
            update(SubmissionRow)
            .where(expired, SubmissionRow.attempts >= self.max_attempts)
            .values(
                status=FAILED,
                finished=now,
                lease_expires=None,
                error=f"the worker running it stopped without finishing (lease expired) {self.max_attempts} times",
            )
        ).rowcount
        requeued = conn.execute(
            update(SubmissionRow).where(expired).values(status=PENDING, worker=None, lease_expires=None)
        ).rowcount
        return failed + requeued

    # --- listing and admin ---------------------------------------------------------------------

    def list(self, statuses: tuple[str, ...] = (), job_id: int | None = None) -> list[dict[str, Any]]:
        query = select(*[SubmissionRow.__table__.c[name] for name in LISTED_COLUMNS]).order_by(
            SubmissionRow.id
        )
        if statuses:
            query = query.where(SubmissionRow.status.in_(statuses))
        if job_id is not None:
            query = query.where(SubmissionRow.id == job_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def get(self, job_id: int) -> dict[str, Any]:
        rows = self.list(job_id=job_id)
        if not rows:
            raise UserError(f"no submission #{job_id}")
        return rows[0]

    def requeue(self, job_id: int) -> None:
        """Admin: put a FAILED or FINISHED job (or a stuck RUNNING one) back in the queue."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(SubmissionRow)
                .where(SubmissionRow.id == job_id)
                .values(
                    status=PENDING,
                    worker=None,
                    lease_expires=None,
                    started=None,
                    finished=None,
                    error=None,
                    attempts=0,
                )
            ).rowcount
        if not changed:
            raise UserError(f"no submission #{job_id}")

    def delete(self, job_id: int) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(delete(SubmissionRow).where(SubmissionRow.id == job_id)).rowcount:
                raise UserError(f"no submission #{job_id}")


def submit_checkpoint(
    queue: SubmissionQueue,
    request: SubmissionRequest,
    policy: SubmissionPolicy,
    open_hub: CheckpointOpener = HubCheckpoint,
) -> tuple[int, ValidatedSubmission]:
    """Validate and queue one submission (`harness submit` and the app's Submit tab)."""
    submission = validate_submission(request, policy, open_hub)
    return queue.submit(submission, per_day=policy.per_day), submission
