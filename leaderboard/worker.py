"""`harness worker`: take one queued submission at a time, evaluate it with the runner, record the results."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cli_config import flag
from harness.config import RunConfig, TaskPaths
from harness.core.errors import UserError
from harness.core.results import RunSummary
from leaderboard.submissions import SubmissionPolicy  # no database code: the CLI stays light

if TYPE_CHECKING:  # the store (SQLAlchemy, pandas) loads when a worker starts, not when the CLI is built
    from leaderboard.queue import Job, SubmissionQueue
    from leaderboard.store import ResultStore
    from leaderboard.submissions import CheckpointOpener, SubmissionRequest, ValidatedSubmission

log = logging.getLogger(__name__)

Evaluate = Callable[[RunConfig], RunSummary]


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs its jobs; the evaluation settings are RunConfig's (same flags as `harness run`)."""

    data_root: TaskPaths = TaskPaths()
    choices: TaskPaths = TaskPaths()
    limit: int | None = None
    batch_size: int = 1
    output_dir: Path | None = None
    lease_s: float = field(
        default=300.0,
        metadata=flag(
            "a job whose worker has not renewed it for S seconds goes back to the queue",
            metavar="S",
            positive=True,
        ),
    )
    poll_s: float = field(default=30.0, metadata=flag("seconds between polls", metavar="S", positive=True))
    policy: SubmissionPolicy | None = (
        None  # the submission rules; None: from the environment, as `submit` reads them
    )


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def run_evaluation(config: RunConfig) -> RunSummary:
    from harness.runner import run_evaluation as evaluate  # torch and lmms-eval load only here

    return evaluate(config)


def job_model_args(job: Job, adapter_base: str | None = None) -> dict[str, str]:
    """The wrapper's model arguments for a submission: its checkpoint (or adapter on exactly the base it
    was validated with), revision and dtype; weights load from safetensors only."""
    if job.weights == "adapter":
        args = {"adapter": job.checkpoint, **({"pretrained": adapter_base} if adapter_base else {})}
    else:
        args = {"pretrained": job.checkpoint}
    if not job.is_local and job.revision != "main":
        args["revision"] = job.revision
    if job.precision != "auto":
        args["dtype"] = job.precision
    args["use_safetensors"] = "true"
    return args


def job_request(job: Job) -> SubmissionRequest:
    """The request a job was validated from, to validate it again when it is claimed."""
    from leaderboard.submissions import SubmissionRequest

    return SubmissionRequest(
        model=job.checkpoint,
        base=job.base,
        revision=None if job.is_local else job.revision,
        weights=job.weights,
        precision=job.precision,
        tasks=job.tasks,
        scoring=job.scoring,
        submitter=job.submitter,
    )


class LeaseKeeper:
    """Renews a job's lease in the background; `lost` is set when the queue says it is no longer ours."""

    def __init__(self, queue: SubmissionQueue, job_id: int, worker: str, lease_s: float):
        self.queue, self.job_id, self.worker, self.lease_s = queue, job_id, worker, lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self.queue.renew(self.job_id, self.worker, self.lease_s):
                    self.lost.set()
                    return
            except Exception:  # a database hiccup: try again at the next beat, the lease has slack
                log.exception("could not renew the lease of job %s", self.job_id)


class QueueWorker:
    def __init__(
        self,
        store: ResultStore,
        settings: WorkerSettings = WorkerSettings(),
        evaluate: Evaluate | None = None,
        worker_id: str | None = None,
        revalidate: bool = True,
        open_hub: CheckpointOpener | None = None,
    ):
        """`revalidate=False` skips checking the checkpoint again at claim (the queue-mechanics tests, whose
        jobs name no real checkpoint); a real worker always checks."""
        from leaderboard.queue import SubmissionQueue

        self.store = store
        self.queue = SubmissionQueue(store)
        self.settings = settings
        self.evaluate = evaluate or run_evaluation
        self.worker_id = worker_id or default_worker_id()
        self.revalidate = revalidate
        self.open_hub = open_hub

    def run(self, once: bool = False) -> int:
        """Work the queue: with `once`, one pass (at most one job); otherwise until interrupted."""
        while True:
            worked = self.run_one()
            if once:
                return 0
            if not worked:
                time.sleep(self.settings.poll_s)

    def run_one(self) -> bool:
        """Claim and run one job; False when the queue had none."""
        job = self.queue.claim(self.worker_id, self.settings.lease_s)
        if job is None:
            log.info("no pending submission")
            return False
        log.info("worker %s runs submission #%s (%s)", self.worker_id, job.id, job.model_name)
        try:
            with LeaseKeeper(self.queue, job.id, self.worker_id, self.settings.lease_s) as lease:
                self._run_job(job, lease)
        except BaseException:  # Ctrl-C or SIGTERM mid-job: hand the job back for another worker
            self.queue.release(job.id, self.worker_id)
            raise
        return True

    def verify(self, job: Job) -> ValidatedSubmission | None:
        """The submission validated again, now: the folder may have changed since `submit` (a pickle file
        swapped in, other weights). Refused unless it passes every rule and its fingerprint is unchanged."""
        if not self.revalidate:
            return None
        from leaderboard.submissions import (
            HubCheckpoint,
            SubmissionPolicy,
            SubmissionRefused,
            validate_submission,
        )

        validated = validate_submission(
            job_request(job),
            self.settings.policy or SubmissionPolicy.from_env(),
            self.open_hub or HubCheckpoint,
        )
        if job.is_local and validated.revision != job.revision:
            raise SubmissionRefused(
                "changed",
                f"the checkpoint changed after it was submitted (fingerprint "
                f"{validated.revision}, submitted {job.revision}); submit it again",
            )
        return validated

    def _run_job(self, job: Job, lease: LeaseKeeper) -> None:
        run_ids: list[str] = []
        try:
            validated = self.verify(job)
        except UserError as exc:
            self.queue.fail(job.id, self.worker_id, f"refused when claimed: {exc}")
            return
        adapter_base = validated.adapter_base if validated else None
        for task in job.tasks:
            try:
                summary = self.evaluate(self.run_config(job, task, adapter_base))
                self.verify(job)  # the weights evaluated are still the ones submitted
                self.store.record_summary(
                    summary, model_name=job.model_name, outcomes=run_outcomes_of(summary)
                )
            except Exception as exc:
                log.exception("submission #%s failed on %s", job.id, task)
                self.queue.fail(job.id, self.worker_id, f"{task}: {type(exc).__name__}: {exc}", run_ids)
                return
            run_ids.append(summary["run_id"])
            if lease.lost.is_set():
                log.error("submission #%s: lease lost (this worker stalled past it); stopping", job.id)
                return
        if not self.queue.finish(job.id, self.worker_id, run_ids):
            log.error("submission #%s was taken from this worker before it finished", job.id)

    def run_config(self, job: Job, task: str, adapter_base: str | None = None) -> RunConfig:
        settings = self.settings
        output_dir = settings.output_dir / f"submission-{job.id}" / task if settings.output_dir else None
        from leaderboard.submissions import ADAPTER_BASES

        model = ADAPTER_BASES[0] if job.weights == "adapter" else job.base  # the wrapper that loads adapters
        return RunConfig(
            model=model,
            task=task,
            model_args=job_model_args(job, adapter_base),
            scoring=job.scoring,
            data_root=settings.data_root.for_task(task),
            choices=settings.choices.for_task(task),
            limit=settings.limit,
            batch_size=settings.batch_size,
            output_dir=output_dir,
        )


def run_outcomes_of(summary: RunSummary) -> list:
    """The per-question outcomes of a run the worker just made (its run folder holds the samples)."""
    from leaderboard.store import run_outcomes

    return run_outcomes(summary, Path(summary.get("results_file") or ".").parent)
