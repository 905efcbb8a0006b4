"""The queue (claim, lease, recovery) and the worker, including several worker processes at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from harness.config import TaskPaths, parse_task_paths
from harness.core.errors import EvaluationFailed, UserError
from leaderboard.db import utcnow
from leaderboard.queue import FAILED, FINISHED, PENDING, RUNNING, SubmissionQueue
from leaderboard.submissions import (
    SubmissionPolicy,
    SubmissionRequest,
    ValidatedSubmission,
    validate_submission,
)
from leaderboard.worker import QueueWorker, WorkerSettings, job_model_args
from tests.leaderboard.lb_factories import fake_evaluate, make_checkpoint

REPO = Path(__file__).resolve().parents[1]


def submission(name: str, tasks=("bird200",), **kw) -> ValidatedSubmission:
    fields = dict(
        model_name=name,
        checkpoint=f"/subs/{name}",
        is_local=True,
        base="idefics2",
        revision=f"local-{name}",
        weights="full",
        precision="float32",
        tasks=tuple(tasks),
        scoring="generate",
        submitter="alice",
        size_bytes=1000,
    )
    fields.update(kw)
    return ValidatedSubmission(**fields)


@pytest.fixture
def queue(store):
    return SubmissionQueue(store)


def add_jobs(queue, count, tasks=("bird200",)) -> list[int]:
    return [queue.submit(submission(f"m{index}", tasks), per_day=10_000) for index in range(count)]


def test_claims_are_first_in_first_out_and_move_through_the_states(queue):
    first, second = add_jobs(queue, 2)
    job = queue.claim("w1", lease_s=60)
    assert (job.id, job.model_name, job.tasks, job.attempts) == (first, "m0", ("bird200",), 1)
    row = queue.get(first)
    assert (row["status"], row["worker"]) == (RUNNING, "w1") and row["started"] and row["lease_expires"]
    assert queue.claim("w2", lease_s=60).id == second
    assert queue.claim("w3", lease_s=60) is None
    assert queue.finish(first, "w1", ["run-a"]) is True
    assert queue.fail(second, "w2", "bird200: out of memory") is True
    done, failed = queue.get(first), queue.get(second)
    assert (done["status"], done["run_ids"], done["finished"] is not None) == (FINISHED, ["run-a"], True)
    assert (failed["status"], failed["error"]) == (FAILED, "bird200: out of memory")


def test_only_the_owner_can_close_or_renew_a_job(queue):
    (job_id,) = add_jobs(queue, 1)
    queue.claim("w1", lease_s=60)
    assert queue.finish(job_id, "intruder", []) is False
    assert queue.renew(job_id, "intruder", 60) is False
    assert queue.renew(job_id, "w1", 60) is True
    assert queue.get(job_id)["status"] == RUNNING


def test_an_expired_lease_puts_the_job_back_and_the_old_worker_loses_it(queue):
    (job_id,) = add_jobs(queue, 1)
    queue.claim("w1", lease_s=30)
    assert queue.claim("w2", lease_s=30) is None  # still leased
    later = utcnow() + timedelta(seconds=31)
    job = queue.claim("w2", lease_s=30, now=later)
    assert (job.id, job.attempts) == (job_id, 2)
    assert queue.renew(job_id, "w1", 30) is False
    assert queue.finish(job_id, "w1", []) is False
    assert queue.finish(job_id, "w2", []) is True


def test_a_job_that_keeps_losing_its_worker_fails(store):
    queue = SubmissionQueue(store, max_attempts=2)
    (job_id,) = add_jobs(queue, 1)
    now = utcnow()
    for attempt in range(2):
        now += timedelta(seconds=61)
        assert queue.claim(f"w{attempt}", lease_s=60, now=now) is not None
    assert queue.recover_expired(now + timedelta(seconds=61)) == 1
    row = queue.get(job_id)
    assert row["status"] == FAILED and "lease expired" in row["error"] and "2 times" in row["error"]


def test_release_requeue_and_delete(queue):
    (job_id,) = add_jobs(queue, 1)
    queue.claim("w1", lease_s=60)
    assert queue.release(job_id, "w1") is True
    assert (queue.get(job_id)["status"], queue.get(job_id)["attempts"]) == (PENDING, 0)
    queue.claim("w1", lease_s=60)
    queue.fail(job_id, "w1", "boom")
    queue.requeue(job_id)
    assert (queue.get(job_id)["status"], queue.get(job_id)["error"]) == (PENDING, None)
    queue.delete(job_id)
    with pytest.raises(UserError, match=f"no submission #{job_id}"):
        queue.get(job_id)
    with pytest.raises(UserError):
        queue.requeue(job_id)


def test_worker_runs_every_task_and_records_under_the_submission_name(store, queue):
    queue.submit(submission("my-ft", tasks=("dog120", "bird200")), per_day=10)
    configs = []

    def evaluate(config):
        configs.append(config)
        return fake_evaluate(config)

    settings = WorkerSettings(
        data_root=parse_task_paths(["/data/all", "bird200=/data/cub"], "--data-root"),
        choices=parse_task_paths(["bird200=/c/bird.json"], "--choices"),
        limit=5,
    )
    worker = QueueWorker(store, settings, evaluate=evaluate, worker_id="w", revalidate=False)
    assert worker.run(once=True) == 0
    assert [(c.task, str(c.data_root), c.choices and str(c.choices), c.limit) for c in configs] == [
        ("dog120", "/data/all", None, 5),
        ("bird200", "/data/cub", "/c/bird.json", 5),
    ]
    assert configs[0].model == "idefics2"
    assert configs[0].model_args == {
        "pretrained": "/subs/my-ft",
        "dtype": "float32",
        "use_safetensors": "true",
    }
    row = queue.list()[0]
    assert row["status"] == FINISHED and len(row["run_ids"]) == 2
    info, results = store.model_info("my-ft")
    assert info["base"] == "idefics2" and sorted(r["task"] for r in results) == ["bird200", "dog120"]
    assert worker.run_one() is False  # nothing left


def test_a_failing_evaluation_fails_the_job_with_its_reason_and_keeps_finished_tasks(store, queue):
    queue.submit(submission("flaky", tasks=("dog120", "bird200")), per_day=10)

    def evaluate(config):
        if config.task == "bird200":
            raise EvaluationFailed("lmms-eval crashed: CUDA out of memory")
        return fake_evaluate(config)

    QueueWorker(store, evaluate=evaluate, worker_id="w", revalidate=False).run_one()
    row = queue.list()[0]
    assert row["status"] == FAILED
    assert row["error"] == "bird200: EvaluationFailed: lmms-eval crashed: CUDA out of memory"
    assert len(row["run_ids"]) == 1
    assert [r["task"] for r in store.model_info("flaky")[1]] == ["dog120"]


def test_an_interrupted_worker_hands_its_job_back(store, queue):
    (job_id,) = add_jobs(queue, 1)

    def evaluate(config):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        QueueWorker(store, evaluate=evaluate, worker_id="w", revalidate=False).run_one()
    assert queue.get(job_id)["status"] == PENDING


def test_task_paths():
    paths = parse_task_paths(["/all", "car196=/cars"], "--data-root")
    assert paths == TaskPaths(Path("/all"), {"car196": Path("/cars")})
    assert (paths.for_task("car196"), paths.for_task("bird200")) == (Path("/cars"), Path("/all"))
    assert parse_task_paths(None, "--choices").for_task("bird200") is None
    with pytest.raises(UserError, match="unknown task 'cars'"):
        parse_task_paths(["cars=/x"], "--data-root")
    with pytest.raises(UserError, match="twice without a task"):
        parse_task_paths(["/a", "/b"], "--data-root")
    with pytest.raises(UserError, match="neither PATH nor TASK=PATH"):
        parse_task_paths(["bird200="], "--data-root")


def test_model_args_for_adapters_hub_revisions_and_precision(queue):
    queue.submit(
        submission("hub", checkpoint="org/ft", is_local=False, revision="v2", precision="auto"), per_day=10
    )
    queue.submit(submission("lora", weights="adapter", precision="bfloat16"), per_day=10)
    hub, lora = queue.claim("w", 60), queue.claim("w", 60)
    assert job_model_args(hub) == {"pretrained": "org/ft", "revision": "v2", "use_safetensors": "true"}
    assert job_model_args(lora, "/subs/base") == {
        "adapter": "/subs/lora",
        "pretrained": "/subs/base",
        "dtype": "bfloat16",
        "use_safetensors": "true",
    }


def test_queue_and_worker_cli(db_url, store, queue, monkeypatch, capsys, tmp_path):
    from tests.leaderboard.lb_cli import run_cli

    root = tmp_path / "submissions"
    monkeypatch.setenv("HARNESS_SUBMISSION_ROOT", str(root))
    policy = SubmissionPolicy(root=root)
    queue.submit(validate_submission(request_for(make_checkpoint(root / "cli-ft")), policy), per_day=10)
    monkeypatch.setattr("leaderboard.worker.run_evaluation", fake_evaluate)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # leave pytest's handlers alone
    assert run_cli(["worker", "--db-url", db_url, "--once", "--poll", "0.1"]) == 0
    assert run_cli(["queue", "--db-url", db_url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model_name"], r["status"]) for r in rows] == [("local/alice/cli-ft", FINISHED)]
    assert run_cli(["queue", "--db-url", db_url]) == 0
    assert "FINISHED local/alice/cli-ft (idefics2, float32)" in capsys.readouterr().out


def request_for(folder: Path, **kw) -> SubmissionRequest:
    fields = dict(
        model=str(folder), base="idefics2", precision="float32", tasks=("bird200",), submitter="alice"
    )
    return SubmissionRequest(**{**fields, **kw})


# --- the worker trusts nothing it was told at submit time (issue 9, items 4 and 5) ------------------


@pytest.fixture
def root(tmp_path, monkeypatch):
    folder = tmp_path / "submissions"
    folder.mkdir()
    monkeypatch.setenv("HARNESS_SUBMISSION_ROOT", str(folder))
    return folder


def _work_one(store, configs: list) -> None:
    def evaluate(config):
        configs.append(config)
        return fake_evaluate(config)

    QueueWorker(store, evaluate=evaluate, worker_id="w").run_one()


def test_a_pickle_swapped_in_after_submit_is_refused_when_claimed(store, queue, root):
    folder = make_checkpoint(root / "ft")
    queue.submit(validate_submission(request_for(folder), SubmissionPolicy(root=root)), per_day=10)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 never unpickled")
    configs: list = []
    _work_one(store, configs)
    row = queue.list()[0]
    assert configs == [] and row["status"] == FAILED
    assert row["error"].startswith("refused when claimed: ") and "pickle weight files" in row["error"]


def test_weights_changed_after_submit_fail_the_job(store, queue, root):
    folder = make_checkpoint(root / "ft")
    queue.submit(validate_submission(request_for(folder), SubmissionPolicy(root=root)), per_day=10)
    make_checkpoint(folder, seed=5)  # other weights, same names and sizes
    configs: list = []
    _work_one(store, configs)
    row = queue.list()[0]
    assert configs == [] and row["status"] == FAILED and "changed after it was submitted" in row["error"]


def test_weights_changed_during_the_evaluation_are_not_recorded(store, queue, root):
    folder = make_checkpoint(root / "ft")
    queue.submit(validate_submission(request_for(folder), SubmissionPolicy(root=root)), per_day=10)

    def evaluate(config):
        make_checkpoint(folder, seed=9)
        return fake_evaluate(config)

    QueueWorker(store, evaluate=evaluate, worker_id="w").run_one()
    assert queue.list()[0]["status"] == FAILED
    assert not (store.result_frame()["source"] == "reproduced").any()


def test_an_adapter_job_loads_exactly_its_validated_base(store, queue, root):
    base = make_checkpoint(root / "base")
    adapter = make_checkpoint(root / "lora", weights="adapter", base=str(base))
    queue.submit(
        validate_submission(request_for(adapter, weights="adapter"), SubmissionPolicy(root=root)), per_day=10
    )
    configs: list = []
    _work_one(store, configs)
    assert queue.list()[0]["status"] == FINISHED
    (config,) = configs
    assert config.model == "finedefics"
    assert config.model_args == {
        "adapter": str(adapter.resolve()),
        "pretrained": str(base.resolve()),
        "dtype": "float32",
        "use_safetensors": "true",
    }


# --- several processes ---------------------------------------------------------------------------


def start_worker(db_url: str, log: Path, mode: str, lease_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.leaderboard.queue_worker_process",
            db_url,
            str(log),
            mode,
            str(lease_s),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.subprocess
def test_several_worker_processes_run_each_job_exactly_once(db_url, store, queue, tmp_path):
    tasks = ("dog120", "bird200")
    job_ids = add_jobs(queue, 30, tasks)
    log = tmp_path / "evaluations.log"
    workers = [start_worker(db_url, log, "drain", 30) for _ in range(4)]
    for process in workers:
        assert process.wait(timeout=120) == 0
    lines = [line.split() for line in log.read_text().splitlines()]
    counts = Counter((checkpoint, task) for checkpoint, task, _ in lines)
    assert set(counts.values()) == {1} and len(counts) == len(job_ids) * len(tasks)
    assert len({pid for _, _, pid in lines}) > 1  # the work really was shared
    assert all(row["status"] == FINISHED for row in queue.list())
    assert (store.result_frame()["source"] == "reproduced").sum() == len(job_ids) * len(tasks)


@pytest.mark.subprocess
def test_a_killed_workers_job_is_recovered_when_its_lease_expires(db_url, store, queue, tmp_path):
    (job_id,) = add_jobs(queue, 1)
    log = tmp_path / "evaluations.log"
    hanging = start_worker(db_url, log, "hang", 1.5)
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text()):
        assert time.monotonic() < deadline and hanging.poll() is None, "the worker never started the job"
        time.sleep(0.05)
    time.sleep(1.0)  # longer than a renewal period: the live worker keeps its lease
    assert queue.get(job_id)["status"] == RUNNING
    assert queue.claim("rescuer", 60) is None
    hanging.send_signal(signal.SIGKILL)
    hanging.wait(timeout=10)
    time.sleep(1.6)  # the lease runs out
    rescuer = QueueWorker(store, evaluate=fake_evaluate, worker_id="rescuer", revalidate=False)
    assert rescuer.run_one() is True
    row = queue.get(job_id)
    assert (row["status"], row["attempts"]) == (FINISHED, 2)
