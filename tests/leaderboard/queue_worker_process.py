"""A queue worker process for the concurrency tests: `python queue_worker_process.py DB_URL LOG MODE LEASE_S`.

MODE "drain": work until the queue is empty, logging "job task pid" per evaluation (O_APPEND, so lines
from several processes never interleave). MODE "hang": claim one job, log it, then hang in evaluate
(the test kills the process).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from leaderboard.store import ResultStore
from leaderboard.worker import QueueWorker, WorkerSettings
from tests.leaderboard.lb_factories import fake_evaluate


def main() -> None:
    db_url, log_path, mode, lease_s = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def evaluate(config):
        os.write(log, f"{config.model_args['pretrained']} {config.task} {os.getpid()}\n".encode())
        if mode == "hang":
            time.sleep(3600)
        time.sleep(0.01)
        return fake_evaluate(config)

    worker = QueueWorker(
        ResultStore.open(db_url),
        WorkerSettings(lease_s=lease_s, poll_s=0.1),
        evaluate=evaluate,
        revalidate=False,
    )  # the jobs name no real checkpoint
    while worker.run_one():
        pass


if __name__ == "__main__":
    main()
