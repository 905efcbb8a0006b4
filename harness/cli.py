"""The `harness` command line. `main(argv)` returns the exit code: 0 ok, 1 evaluation failed, 2 bad input."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import data_cli, rescore
from harness.cli_config import add_dataclass_arguments, config_from_args
from harness.config import RunConfig, parse_task_paths
from harness.core.errors import EvaluationFailed, UserError
from harness.core.output import JSON_HELP, emit_json, json_document
from harness.plugins import load_plugins
from harness.probes import cli as probe_cli
from harness.report import format_table, summary_line

Handler = Callable[[argparse.Namespace], int]


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, RunConfig)  # every RunConfig field is a `harness run` flag
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of `harness run`: per-task paths (--data-root TASK=PATH) resolved for its task."""
    from tasks.registry import get_task

    task = get_task(args.task).key
    return config_from_args(
        RunConfig, args,
        data_root=parse_task_paths(args.data_root, "--data-root").for_task(task),
        choices=parse_task_paths(args.choices, "--choices").for_task(task),
    )  # fmt: skip


def cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import launch_ranks, run_evaluation
    from models import distributed

    config = run_config_from_args(args)
    for check in args.before_run:  # e.g. the leaderboard's: a --name held by other weights, refused now
        check(config, args)
    if config.num_processes > 1 and not distributed.is_rank_process():
        return launch_ranks(config, args.argv)
    summary = run_evaluation(config, command=["harness", *args.argv])
    if summary is None:  # a data-parallel rank other than 0: rank 0 gathers, reports and records
        return 0
    for hook in args.after_run:  # e.g. the leaderboard's: record the run in its store
        hook(summary, args)
    print()
    print(format_table([summary]))
    print(f"results: {Path(summary['results_file']).parent}")
    if args.json:
        emit_json(summary_line(summary))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from harness.demo import run_demo

    return run_demo(limit=args.limit, json_output=args.json)


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from models.registry import MODELS

        rows = [spec.as_dict() for spec in MODELS.values()]
        if args.json:
            emit_json(rows)
        else:
            for r in rows:
                remote = " (remote code)" if r["remote_code"] else ""
                print(
                    f"{r['name']:<22} {r['params_b']:>5.1f}B  {r['family']:<18} {r['hub_id']}{remote}  ({r['licence']})"
                )
    else:
        from tasks.registry import TASKS

        rows = [
            {"name": t.key, "dataset": t.dataset, "n_classes": t.n_classes, "n_test": t.n_test}
            for t in TASKS.values()
        ]
        if args.json:
            emit_json(rows)
        else:
            for r in rows:
                print(
                    f"{r['name']:<12} {r['dataset']:<22} {r['n_classes']:>4} classes {r['n_test']:>6} test images"
                )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Fine-grained visual recognition benchmarks for MLLMs"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate a model on a task through lmms-eval")
    _add_run_arguments(run)
    run.add_argument(
        "--no-record", action="store_true", help="do not add the result to the leaderboard store"
    )
    run.add_argument(
        "--name",
        help="the leaderboard name of these weights (default: the registry name for the "
        "registry's own weights, the hub id, or FOLDER@FINGERPRINT); refused when other weights hold it",
    )
    run.add_argument(
        "--db-url", help="leaderboard store URL (default: $HARNESS_DB_URL or SQLite under $HARNESS_HOME)"
    )
    run.set_defaults(func=cmd_run, before_run=[], after_run=[])

    demo = sub.add_parser(
        "demo", help="offline demo: tiny Idefics2 on a synthetic CUB-200 layout, both scorings"
    )
    demo.add_argument("--limit", type=int, default=None)
    demo.add_argument("--json", action="store_true", help=JSON_HELP)
    demo.set_defaults(func=cmd_demo)

    listing = sub.add_parser("list", help="list the registered models or tasks")
    listing.add_argument("what", choices=("models", "tasks"))
    listing.add_argument("--json", action="store_true", help=JSON_HELP)
    listing.set_defaults(func=cmd_list)

    data_cli.register(sub)
    rescore.register(sub)
    probe_repr = probe_cli.register(sub)
    for plugin in load_plugins():  # the leaderboard's and training's commands (harness.plugins)
        plugin.register(sub)
        for hook in ("before_run", "after_run"):
            if hasattr(plugin, hook):
                run.set_defaults(**{hook: [*run.get_default(hook), getattr(plugin, hook)]})
        if hasattr(plugin, "after_probe"):  # e.g. the leaderboard's: record the report in its store
            probe_repr.set_defaults(after_probe=[*probe_repr.get_default("after_probe"), plugin.after_probe])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with json_document(getattr(args, "json", False)):
            return args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except EvaluationFailed as error:
        print(f"evaluation failed: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished runs and prepared tasks are kept", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - an unexpected failure is still a failure, with its traceback
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
