"""`harness train stage1|stage2|run|merge`: train Finedefics (two-stage QLoRA) and merge its adapter.

    harness train stage1 --data DIR --base PATH_OR_ID --out DIR [--config FILE] [--recipe NAME] [--resume] [--json]
    harness train stage2 --data DIR --base PATH_OR_ID --out DIR [--init-adapter STAGE1_DIR] ...
    harness train run    --data DIR --base PATH_OR_ID --out DIR ...   # the recipe's stages: OUT/stage1, then OUT
    harness train merge  --adapter DIR --out DIR [--base PATH_OR_ID]  # a merged safetensors checkpoint

Every input is checked (data columns, base architecture, bitsandbytes, config, evaluation data)
before any weights load. Several GPUs: `harness train run --num-processes 8 ...` (accelerate's launcher), or
`accelerate launch --num_processes 8 -m harness.cli train run ...` / `torchrun ...` (several hosts:
docs/scaling.md). N processes of B rows train exactly as one process of N*B rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UserError
from models import distributed

STAGE_DIRS = {"stage1": "stage1", "stage2": "stage2", "joint": "joint"}


def register(stages: argparse._SubParsersAction) -> None:
    for name, help_text in (
        ("stage1", "Stage I: attribute-augmented contrastive learning + description generation"),
        ("stage2", "Stage II: classification-centred instruction tuning"),
        ("run", "both stages of the recipe, Stage II continuing Stage I's adapter"),
    ):
        parser = stages.add_parser(name, help=help_text)
        _add_training_arguments(parser)
        parser.set_defaults(func=cmd_train, train_stage=name)
    merge = stages.add_parser(
        "merge", help="merge a LoRA adapter into its base: a full safetensors checkpoint"
    )
    merge.add_argument(
        "--adapter", type=Path, required=True, help="an adapter folder written by harness train"
    )
    merge.add_argument("--out", type=Path, required=True, help="where the merged checkpoint goes")
    merge.add_argument(
        "--base", default=None, help="the base checkpoint (default: the one the adapter records)"
    )
    merge.add_argument("--json", action="store_true")
    merge.set_defaults(func=cmd_merge)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from finedefics_train.recipes import RECIPES

    parser.add_argument(
        "--data", type=Path, required=True, help="the folder `harness train data` wrote (stage1/, stage2/)"
    )
    parser.add_argument(
        "--base", required=True, help="Idefics2 or LLaVA-1.5 checkpoint: local folder or hub id"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the adapter folder (checkpoints go in OUT/checkpoints)"
    )
    parser.add_argument("--config", default=None, help="a YAML config, or a name: paper (default), tiny_cpu")
    parser.add_argument("--recipe", default="finedefics", help=f"one of {', '.join(RECIPES)}")
    parser.add_argument(
        "--init-adapter", type=Path, default=None, help="continue this adapter (Stage II after Stage I)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="stop every stage after N optimiser steps"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint under OUT")
    parser.add_argument(
        "--num-processes", type=int, default=1, metavar="N",
        help="data-parallel processes on this host (one per GPU), started through accelerate's launcher after "
        "the input is checked; the global batch and the result are those of one process",
    )  # fmt: skip
    parser.add_argument(
        "--accelerate-config", default=None, metavar="FILE",
        help="with --num-processes: an accelerate config file, e.g. finedefics_train/configs/accelerate/fsdp_qlora.yaml",
    )  # fmt: skip
    parser.add_argument(
        "--eval-after", nargs="+", default=[], metavar="TASK", help="evaluate on these test sets afterwards"
    )
    parser.add_argument("--eval-data-root", action="append", default=None, metavar="[TASK=]PATH")
    parser.add_argument("--eval-choices", action="append", default=None, metavar="[TASK=]FILE")
    parser.add_argument(
        "--eval-scoring",
        nargs="+",
        default=["generate"],
        metavar="SCORING[:VARIANT]",
        help="generate|loglik|loglik_name, each optionally with its variant: generate:open loglik_name",
    )
    parser.add_argument(
        "--eval-variant", default="k4", help="k4 (default), open, ...; ignored with a choice file"
    )
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--eval-device", default="cpu")
    parser.add_argument("--eval-dtype", default="float32")
    parser.add_argument(
        "--no-record", action="store_true", help="do not add the evaluations to the leaderboard store"
    )
    parser.add_argument(
        "--name",
        default=None,
        help="the leaderboard name of the trained adapter's evaluations, as "
        "with harness run --name (default: ADAPTER_FOLDER@FINGERPRINT)",
    )
    parser.add_argument("--db-url", default=None, help="leaderboard store URL, as with harness run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


@dataclass
class TrainingPlan:
    runs: list  # StageRun, in order
    eval_configs: list  # RunConfig, run on the last stage's adapter


def plan_training(args: argparse.Namespace) -> TrainingPlan:
    """Resolves and checks every input; loads no weights."""
    from finedefics_train.config import load_config
    from finedefics_train.recipes import get_recipe
    from finedefics_train.trainer import StageRun, prepare_stage

    recipe = get_recipe(args.recipe)
    config = load_config(args.config)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise UserError(f"--max-steps must be >= 1, got {args.max_steps}")
        config.stage1.max_steps = config.stage2.max_steps = args.max_steps
    stages = list(recipe.stages) if args.train_stage == "run" else [args.train_stage]
    if args.train_stage != "run" and args.train_stage not in recipe.stages:
        raise UserError(
            f"recipe {recipe.name} has no {args.train_stage} (its stages: {', '.join(recipe.stages)}); "
            "use `harness train run` or another --recipe"
        )
    if args.num_processes < 1:
        raise UserError(f"--num-processes must be >= 1, got {args.num_processes}")
    processes = distributed.world_size() if distributed.is_rank_process() else args.num_processes
    runs = []
    for index, stage in enumerate(stages):
        # the last stage's adapter is OUT itself (the name the leaderboard shows); earlier ones OUT/<stage>
        out = args.out / STAGE_DIRS[stage] if index < len(stages) - 1 else args.out
        run = StageRun(stage, args.data, args.base, out, config, recipe,
                       init_adapter=args.init_adapter if index == 0 else None, num_processes=processes)  # fmt: skip
        prepare_stage(run)
        if index:  # continues the stage before, whose adapter does not exist yet
            run.init_adapter = runs[-1].out
        runs.append(run)
    mark_resume(runs, args.resume)
    return TrainingPlan(runs, eval_configs(args, runs[-1].out, args.base))


def mark_resume(runs: list, resume: bool) -> None:
    """--resume: finished stages (an adapter record exists) are skipped, the first unfinished one resumes."""
    from finedefics_train.trainer import RECORD_FILE, last_checkpoint

    if not resume:
        return
    for run in runs:
        if (run.out / RECORD_FILE).is_file():
            run.done = True
            continue
        if last_checkpoint(run.out) is None:
            raise UserError(f"--resume: no checkpoint under {run.out / 'checkpoints'} to resume from")
        run.resume = True
        return


def eval_configs(args: argparse.Namespace, adapter: Path, base: str) -> list:
    from finedefics_train.evaluate import adapter_run_config
    from harness.config import SCORINGS, parse_task_paths
    from tasks.registry import get_task

    if not args.eval_after:
        return []
    roots = parse_task_paths(args.eval_data_root, "--eval-data-root")
    choices = parse_task_paths(args.eval_choices, "--eval-choices")
    configs = []
    for name in args.eval_after:
        task = get_task(name).key
        root = roots.for_task(task)
        if root is None or not root.exists():
            raise UserError(
                f"--eval-after {name}: pass its test data with --eval-data-root {name}=PATH (got {root})"
            )
        for item in args.eval_scoring:
            scoring, _, variant = item.partition(":")
            if scoring not in SCORINGS:
                raise UserError(f"--eval-scoring must be among {', '.join(SCORINGS)}, got {scoring!r}")
            configs.append(adapter_run_config(
                adapter, task, root, scoring=scoring, variant=variant or args.eval_variant, choices=choices.for_task(task),
                base=base, device=args.eval_device, dtype=args.eval_dtype, limit=args.eval_limit,
            ))  # fmt: skip
    return configs


def cmd_train(args: argparse.Namespace) -> int:
    from finedefics_train.evaluate import evaluate_adapter
    from finedefics_train.trainer import train_stage

    plan = plan_training(args)
    if args.num_processes > 1 and not distributed.is_rank_process():
        # checked here once; every rank then trains (and evaluates) its share of each global batch
        print(f"launching {args.num_processes} data-parallel processes", file=sys.stderr)
        argv = distributed.without_num_processes(args.argv)
        return distributed.launch(argv, args.num_processes, config_file=args.accelerate_config)
    main = distributed.is_main_process()
    records = []
    for run in plan.runs:
        if getattr(run, "done", False):
            if main:
                print(f"{run.stage}: already trained in {run.out}, skipped")
            continue
        record = train_stage(run, progress=not args.quiet)
        records.append(record)
        if main:
            print(f"{run.stage}: adapter in {run.out} ({record['metrics']['global_step']} steps)")
    adapter = plan.runs[-1].out
    summaries = []
    if plan.eval_configs:
        from harness.cli import plugin_hooks

        for check in plugin_hooks(
            "before_run"
        ):  # e.g. a --name held by other weights: refused before evaluating
            for config in plan.eval_configs:
                check(config, args)
        after_run = plugin_hooks(
            "after_run"
        )  # e.g. the leaderboard's: record each run, as `harness run` does

        def record(summary: dict) -> None:
            for hook in after_run:
                hook(summary, args)

        summaries = evaluate_adapter(plan.eval_configs, adapter, command=["harness", *getattr(args, "argv", [])],
                                     record=record)  # fmt: skip
        for summary in summaries:
            print(
                f"eval {summary['task']} {summary['scoring']} ({summary['variant']}): accuracy {summary['accuracy']:.3f}"
            )
    if args.json and main:
        print(json.dumps({
            "out": str(adapter), "recipe": args.recipe, "stages": [r.stage for r in plan.runs],
            "metrics": {r["stage"]: r["metrics"] for r in records if r},
            "eval": [{"task": s["task"], "scoring": s["scoring"], "variant": s["variant"], "accuracy": s["accuracy"],
                      "summary": str(Path(s["results_file"]).parent / "summary.json")} for s in summaries],
        }))  # fmt: skip
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from finedefics_train.merge import merge_adapter

    out = merge_adapter(args.adapter, args.out, args.base)
    print(f"merged checkpoint in {out}")
    if args.json:
        print(json.dumps({"out": str(out), "adapter": str(args.adapter)}))
    return 0
