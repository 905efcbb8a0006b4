"""The leaderboard's subcommands of `harness`: leaderboard, submit, queue, worker, import.

`harness.cli` calls `register(subparsers)`; each handler takes the parsed args and returns an exit
code. Bad input raises `UserError`, which the harness CLI prints and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
from pathlib import Path

from harness.core.output import JSON_HELP, emit_json
from leaderboard import DB_URL_ENV, spec

DB_URL_HELP = f"database URL (default: ${DB_URL_ENV}, else an SQLite file under the harness home)"


def _store(args: argparse.Namespace):
    from leaderboard.store import ResultStore

    return ResultStore.open(args.db_url)


def _print_json(payload) -> None:

    emit_json(payload)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from leaderboard.app import serve

    print(f"leaderboard on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    serve(host=args.host, port=args.port, db_url=args.db_url, block=True)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from harness.core.errors import UserError
    from leaderboard.queue import SubmissionQueue, submit_checkpoint
    from leaderboard.submissions import SubmissionPolicy, SubmissionRequest

    request = SubmissionRequest(
        model=args.model,
        base=args.base,
        revision=args.revision,
        weights=args.weights,
        precision=args.precision,
        tasks=tuple(args.tasks),
        scoring=args.scoring,
        submitter=args.submitter,
    )
    try:
        job_id, submission = submit_checkpoint(
            SubmissionQueue(_store(args)), request, SubmissionPolicy.from_env()
        )
    except UserError as exc:  # a refusal, or the operator's settings (store URL, limits): --json still prints
        if not args.json:
            raise
        _print_json({"status": "REFUSED", "check": getattr(exc, "check", "settings"), "reason": str(exc)})
        return exc.exit_code
    if args.json:
        _print_json(
            {
                "id": job_id,
                "status": "PENDING",
                "model_name": submission.model_name,
                "checkpoint": submission.checkpoint,
                "revision": submission.revision,
                "base": submission.base,
                "precision": submission.precision,
                "tasks": list(submission.tasks),
            }
        )
    else:
        print(
            f"queued submission #{job_id}: {submission.model_name} ({submission.base}, {submission.precision}); "
            f"`harness queue` shows its progress"
        )
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    from leaderboard.queue import SubmissionQueue

    rows = SubmissionQueue(_store(args)).list(tuple(args.status or ()))
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("the queue is empty")
    for row in rows:
        when = row["finished"] or row["started"] or row["created"]
        line = (
            f"#{row['id']:<4} {row['status']:<8} {row['model_name']} ({row['base']}, {row['precision']}) "
            f"{when:%Y-%m-%d %H:%M}"
        )
        if row["status"] == "RUNNING":
            line += f" on {row['worker']}"
        print(line + (f"\n       error: {row['error']}" if row["error"] else ""))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from harness.config import parse_task_paths
    from leaderboard.worker import QueueWorker, WorkerSettings

    settings = WorkerSettings(
        data_root=parse_task_paths(args.data_root, "--data-root"),
        choices=parse_task_paths(args.choices, "--choices"),
        limit=args.limit,
        batch_size=args.batch_size,
        output_dir=args.output_dir,
        lease_s=args.lease_s,
        poll_s=args.poll_s,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # SIGTERM becomes SystemExit, so a stopped worker hands its job back instead of leaving it to the lease
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return QueueWorker(_store(args), settings, worker_id=args.worker_id).run(once=args.once)
    except KeyboardInterrupt:
        return 130


def cmd_import(args: argparse.Namespace) -> int:
    from leaderboard.importer import import_path

    report = import_path(_store(args), args.path)
    if args.json:
        _print_json(report.as_dict())
    elif report.files == 0 and not report.refused:
        print(f"no results file (summary.json or lmms-eval results JSON) under {args.path}")
    else:
        print(
            f"{report.files} results files: {report.added} results added, {report.unchanged} already in the store"
        )
        for path, reason in report.refused:
            print(f"  refused {path}: {reason}")
    return 0 if report.files and not report.refused else 1


def cmd_export(args: argparse.Namespace) -> int:
    from leaderboard.export import collect, export

    items = collect(args.target, args.db_url)
    written = export(items, args.format, args.out, dataset_id=args.dataset_id, source_url=args.source_url)
    if args.json:
        _print_json(
            {
                "format": args.format,
                "results": len(items),
                "questions": sum(len(item.outcomes) for item in items),
                "files": [str(path) for path in written],
            }
        )
    else:
        for path in written:
            print(path)
    return 0


def before_run(config, args: argparse.Namespace) -> None:
    """Before `harness run`: a `--name` held by a registry model, a paper row or other weights (another
    fingerprint) is refused now, not after the evaluation."""
    if not args.name or args.no_record:
        return
    from harness.core import identity
    from harness.runner import check_pretrained
    from leaderboard.store import ResultStore, check_model_name
    from models.registry import get_model_spec

    check_model_name(args.name)
    pretrained = check_pretrained(get_model_spec(config.model), config.model_args)
    revision = identity.weights_fingerprint(
        pretrained, config.model_args.get("revision"), config.model_args.get("adapter")
    )
    store = ResultStore.open(args.db_url)
    try:
        store.check_name_free(args.name, revision)
    finally:
        store.close()


def before_train(args: argparse.Namespace) -> None:
    """Before `harness train --eval-after` trains: the format of --name (whether other weights hold it is
    checked before the evaluation, once the adapter exists)."""
    if args.name and not args.no_record:
        from leaderboard.store import check_model_name

        check_model_name(args.name)


def after_run(summary: dict, args: argparse.Namespace) -> None:
    """After `harness run`: add the run to the store (unless --no-record); a failure here never loses the
    files already written."""
    if args.no_record:
        return
    try:
        from leaderboard.store import record_summary
    except ImportError:  # installed without the leaderboard extra: nothing to record into
        return
    try:
        record_summary(summary, db_url=args.db_url, model_name=args.name)
    except Exception as error:  # noqa: BLE001 - the run's files are safe; say how to retry
        print(
            f"warning: could not record the run in the leaderboard store ({error}); "
            f"retry with `harness import {Path(summary['results_file']).parent}`",
            file=sys.stderr,
        )


def after_probe(folder, args: argparse.Namespace) -> None:
    """After `harness probe repr`: add the report to the store (unless --no-record); a failure here
    never loses the report folder."""
    if getattr(args, "no_record", False):
        return
    from leaderboard.store import record_probe_report

    try:
        record_probe_report(folder, db_url=getattr(args, "db_url", None))
    except Exception as error:  # noqa: BLE001 - the report files are safe; say how to retry
        print(
            f"warning: could not record the probes in the leaderboard store ({error}); "
            f"retry with `harness import {folder}`",
            file=sys.stderr,
        )


def register(subparsers) -> None:
    """Add the leaderboard subcommands to the `harness` parser."""
    from harness.cli_config import add_dataclass_arguments
    from harness.config import RunConfig
    from leaderboard.submissions import PRECISIONS, WEIGHTS
    from leaderboard.worker import WorkerSettings

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--db-url", help=DB_URL_HELP)
        parser.set_defaults(func=handler)
        return parser

    app = command("leaderboard", cmd_leaderboard, "serve the leaderboard app (Gradio)")
    app.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    app.add_argument("--port", type=int, default=7860)

    submit = command("submit", cmd_submit, "submit a checkpoint for evaluation by the queue")
    submit.add_argument(
        "--model", required=True, help="a folder under $HARNESS_SUBMISSION_ROOT, or a hub id owner/name"
    )
    submit.add_argument(
        "--base", required=True, help="the registry architecture it is based on, e.g. idefics2"
    )
    submit.add_argument("--revision", help="hub branch, tag or commit (hub ids only)")
    submit.add_argument("--weights", choices=WEIGHTS, default="full")
    submit.add_argument("--precision", choices=PRECISIONS, default="auto")
    submit.add_argument(
        "--tasks",
        nargs="+",
        default=list(spec.TASK_KEYS),
        metavar="TASK",
        help=f"tasks to evaluate (default: all of {', '.join(spec.TASK_KEYS)})",
    )
    add_dataclass_arguments(submit, RunConfig, only=("scoring",))
    submit.add_argument(
        "--submitter", default=getpass.getuser(), help="who submits (rate limits count per submitter)"
    )
    submit.add_argument("--json", action="store_true", help=JSON_HELP)

    queue = command("queue", cmd_queue, "list the submissions and their states")
    queue.add_argument("--status", action="append", choices=("PENDING", "RUNNING", "FINISHED", "FAILED"))
    queue.add_argument("--json", action="store_true", help=JSON_HELP)

    worker = command("worker", cmd_worker, "evaluate queued submissions, one at a time")
    worker.add_argument("--once", action="store_true", help="take at most one job, then exit")
    add_dataclass_arguments(
        worker, WorkerSettings, only=("poll_s", "lease_s"), rename={"poll_s": "--poll", "lease_s": "--lease"}
    )
    # the evaluation flags are `harness run`'s: one definition, in RunConfig
    add_dataclass_arguments(
        worker, RunConfig, only=("data_root", "choices", "limit", "batch_size", "output_dir")
    )
    worker.add_argument("--worker-id", help="name shown in the queue (default host:pid:random)")

    from leaderboard.export import BENCHMARK_DATASET_ID, FORMATS, SOURCE_URL

    exporter = command(
        "export", cmd_export, "write results in the ecosystem's formats (HF .eval_results, Every Eval Ever)"
    )
    exporter.add_argument(
        "target",
        metavar="RUN_DIR_OR_MODEL",
        help="a run folder (or a folder of runs), or a model in the store",
    )
    exporter.add_argument("--format", required=True, choices=FORMATS)
    exporter.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write into")
    exporter.add_argument(
        "--dataset-id",
        default=BENCHMARK_DATASET_ID,
        help=f"the benchmark's Hub dataset id in .eval_results entries (default {BENCHMARK_DATASET_ID})",
    )
    exporter.add_argument("--source-url", default=SOURCE_URL, help="the source link of .eval_results entries")
    exporter.add_argument("--json", action="store_true", help="print one JSON object")

    importer = command(
        "import",
        cmd_import,
        "import results files (summary.json, lmms-eval results JSON, Every Eval Ever records)",
    )
    importer.add_argument(
        "path", type=Path, metavar="DIR", help="a run folder, a folder of runs, or one results file"
    )
    importer.add_argument("--json", action="store_true", help=JSON_HELP)
