"""The `harness` command line. `main(argv)` returns the exit code: 0 ok, 1 evaluation failed, 2 bad input."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.config import SCORINGS, RunConfig, parse_model_args, parse_task_paths
from harness.core.errors import EvaluationFailed, UserError

Handler = Callable[[argparse.Namespace], int]


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name (see `harness list models`)")
    parser.add_argument("--task", required=True, help="task name (see `harness list tasks`)")
    parser.add_argument(
        "--model-args", default="", help="k=v,k=v: pretrained=PATH_OR_HUB_ID, revision=, dtype=auto|bfloat16|float16|float32, "
        "device=cpu|cuda|auto, load_in_4bit=true, trust_remote_code=true, max_new_tokens=N"
    )
    parser.add_argument("--data-root", action="append", metavar="[TASK=]PATH",
                        help="the dataset folder in its original layout (or TASK=PATH, repeatable)")
    parser.add_argument("--choices", action="append", metavar="[TASK=]FILE",
                        help="a FOCI/Finedefics choice file: {class: [{image, options, groundtruth}]} (or TASK=FILE, repeatable)")
    parser.add_argument("--classnames", type=Path, help="class names, one per line in label order (Flowers-102)")
    parser.add_argument("--scoring", choices=SCORINGS, default="generate", help="generate an answer letter; or score each option letter's (loglik) or name's (loglik_name) log-likelihood")
    parser.add_argument("--variant", default="k4", help="without --choices: kN options per question (label-set size), "
                        "'all' classes, or 'open' (open-world: no options, the model names the class)")
    parser.add_argument("--options", choices=("random", "clip"), default="random",
                        help="without --choices: seeded random negatives, or CLIP hard negatives as the paper mined them")
    parser.add_argument("--clip-model", help="CLIP for --options clip: open_clip:ARCH:PRETRAINED (default "
                        "open_clip:ViT-L-14:laion2b_s32b_b82k) or hf:HUB_ID_OR_PATH")
    parser.add_argument("--circular", action="store_true", help="ask each question once per rotation of its options; "
                        "correct only if every rotation is")
    parser.add_argument("--limit", type=int, help="evaluate only the first N questions")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-processes", type=int, default=1, metavar="N",
                        help="data-parallel evaluation: N processes, one model replica each (one GPU each; gloo on CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seeds option order, random negatives and lmms-eval")
    parser.add_argument("--output-dir", type=Path, help="where run folders go (default: $HARNESS_HOME/runs)")
    parser.add_argument("--skip-missing", action="store_true", help="skip (and count) missing or unreadable images")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    from tasks.registry import get_task

    return RunConfig(
        model=args.model,
        task=args.task,
        model_args=parse_model_args(args.model_args),
        data_root=parse_task_paths(args.data_root, "--data-root").for_task(get_task(args.task).key),
        choices=parse_task_paths(args.choices, "--choices").for_task(get_task(args.task).key),
        classnames=args.classnames,
        scoring=args.scoring,
        variant=args.variant,
        options=args.options,
        clip_model=args.clip_model,
        circular=args.circular,
        limit=args.limit,
        batch_size=args.batch_size,
        seed=args.seed,
        output_dir=args.output_dir,
        skip_missing=args.skip_missing,
        num_processes=args.num_processes,
    )


def summary_line(summary: dict) -> dict:
    """The `--json` object: the headline numbers and where the files are."""
    keys = ("model", "task", "variant", "scoring", "n", "accuracy", "accuracy_ci95", "robust_accuracy",
            "unparseable", "errors", "option_source", "seed", "results_file", "samples_file", "run_id")
    out = {key: summary.get(key) for key in keys}
    out["summary_file"] = str(Path(summary["results_file"]).parent / "summary.json")
    return out


def format_table(summaries: Sequence[dict]) -> str:
    header = f"{'model':<14} {'task':<12} {'scoring':<11} {'n':>6} {'accuracy':>9} {'95% CI':>15} {'robust':>7} {'unparseable':>11}"
    lines = [header, "-" * len(header)]
    for s in summaries:
        low, high = s["accuracy_ci95"]
        robust = "-" if s.get("robust_accuracy") is None else f"{100 * s['robust_accuracy']:.2f}"
        unparseable = s["unparseable"] if s["scoring"] == "generate" else "-"
        task = s["task"] if s.get("variant", "k4") == "k4" else f"{s['task']}/{s['variant']}"
        lines.append(
            f"{s['model']:<14} {task:<12} {s['scoring']:<11} {s['n']:>6} {100 * s['accuracy']:>8.2f}% "
            f"{f'[{100 * low:.1f}, {100 * high:.1f}]':>15} {robust:>7} {unparseable:>11}"
        )
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import launch_ranks, run_evaluation
    from models import distributed

    config = _config_from_args(args)
    if config.num_processes > 1 and not distributed.is_rank_process():
        return launch_ranks(config, args.argv)
    summary = run_evaluation(config, command=["harness", *args.argv])
    if summary is None:  # a data-parallel rank other than 0: rank 0 gathers, reports and records
        return 0
    if not args.no_record:
        record(summary, args)
    print()
    print(format_table([summary]))
    print(f"results: {Path(summary['results_file']).parent}")
    if args.json:
        print(json.dumps(summary_line(summary)))
    return 0


def record(summary: dict, args: argparse.Namespace) -> None:
    """Adds the run to the leaderboard store; a failure here never loses the files already written."""
    try:
        from leaderboard.store import record_summary
    except ImportError:
        return
    try:
        record_summary(summary, db_url=getattr(args, "db_url", None))
    except Exception as error:  # noqa: BLE001 - the run's files are safe; say how to retry
        print(f"warning: could not record the run in the leaderboard store ({error}); "
              f"retry with `harness import {Path(summary['results_file']).parent}`", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from harness.demo import run_demo

    if args.train:
        from harness.demo import run_train_demo

        return run_train_demo(json_output=args.json)
    return run_demo(limit=args.limit, json_output=args.json)


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from models.registry import MODELS

        rows = [spec.as_dict() for spec in MODELS.values()]
        if args.json:
            print(json.dumps(rows))
        else:
            for r in rows:
                remote = " (remote code)" if r["remote_code"] else ""
                print(f"{r['name']:<22} {r['params_b']:>5.1f}B  {r['family']:<18} {r['hub_id']}{remote}")
    else:
        from tasks.registry import TASKS

        rows = [{"name": t.key, "dataset": t.dataset, "n_classes": t.n_classes, "n_test": t.n_test} for t in TASKS.values()]
        if args.json:
            print(json.dumps(rows))
        else:
            for r in rows:
                print(f"{r['name']:<12} {r['dataset']:<22} {r['n_classes']:>4} classes {r['n_test']:>6} test images")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Fine-grained visual recognition benchmarks for MLLMs")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate a model on a task through lmms-eval")
    _add_run_arguments(run)
    run.add_argument("--no-record", action="store_true", help="do not add the result to the leaderboard store")
    run.add_argument("--db-url", help="leaderboard store URL (default: $HARNESS_DB_URL or SQLite under $HARNESS_HOME)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="offline demo: tiny Idefics2 on a synthetic CUB-200 layout, both scorings")
    demo.add_argument("--limit", type=int, default=None)
    demo.add_argument("--json", action="store_true")
    demo.add_argument("--train", action="store_true",
                      help="train a tiny Finedefics on synthetic data and show held-out accuracy before and after")
    demo.set_defaults(func=cmd_demo)

    listing = sub.add_parser("list", help="list the registered models or tasks")
    listing.add_argument("what", choices=("models", "tasks"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    for register in _plugin_registrars():
        register(sub)
    return parser


def _plugin_registrars() -> list[Callable]:
    registrars = []
    for module_name in ("tasks.cli", "leaderboard.cli", "finedefics_train.cli"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        registrars.append(module.register)
    return registrars


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
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
