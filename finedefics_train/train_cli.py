"""`harness train stage1|stage2|run|merge`: train Finedefics (two-stage QLoRA) and merge its adapter.

    harness train stage1 --data DIR --base PATH_OR_ID --out DIR [--config FILE] [--set SECTION.FIELD=VALUE ...] [--recipe NAME] [--resume] [--json]
    harness train stage2 --data DIR --base PATH_OR_ID --out DIR [--init-adapter STAGE1_DIR] ...
    harness train run    --data DIR --base PATH_OR_ID --out DIR ...   # OUT/stage1, OUT/stage1-merged, then OUT
    harness train merge  --adapter DIR --out DIR [--base PATH_OR_ID]  # a merged safetensors checkpoint

Every input is checked (data columns, base architecture, bitsandbytes, config, evaluation data)
before any weights load. Several GPUs: `harness train run --num-processes 8 ...` (accelerate's launcher), or
`accelerate launch --num_processes 8 -m harness.cli train run ...` / `torchrun ...` (several hosts:
docs/scaling.md). N processes of B rows train exactly as one process of N*B rows.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from harness import launch
from harness.core.errors import UserError
from harness.core.output import JSON_HELP, emit_json
from harness.core.scorings import SCORINGS
from models import distributed

STAGE_DIRS = {"stage1": "stage1", "stage2": "stage2", "joint": "joint"}


def register(stages: argparse._SubParsersAction) -> None:
    for name, help_text in (
        ("stage1", "Stage I: attribute-augmented contrastive learning + description generation"),
        ("stage2", "Stage II: classification-centred instruction tuning"),
        (
            "run",
            "the recipe's stages: Stage I, merged into the base, then Stage II with a fresh LoRA "
            "(--recipe finedefics_continued: Stage II trains Stage I's adapter on)",
        ),
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
    merge.add_argument(
        "--force",
        action="store_true",
        help="merge onto a --base other than the one the adapter was trained on",
    )
    merge.add_argument("--json", action="store_true", help=JSON_HELP)
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
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="SECTION.FIELD=VALUE",
        help="set one config field over --config, e.g. --set stage1.learning_rate=1e-4 --set model.lora_r=4 "
        f"(VALUE read as YAML; kept in the adapter's record); fields: {config_fields()}",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop every stage after N optimiser steps (--set stage1.max_steps=N --set stage2.max_steps=N)",
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
        help=f"{'|'.join(SCORINGS)}, each optionally with its variant: generate:open loglik_name",
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
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def config_fields() -> str:
    """Every field --set can set, by section, from the config dataclasses."""
    from dataclasses import fields

    from finedefics_train.config import SECTIONS

    by_class = {}
    for name, cls in SECTIONS.items():  # stage1 and stage2 share StageConfig
        by_class.setdefault(cls, []).append(name)
    return "; ".join(
        f"{'|'.join(names)}.{{{','.join(f.name for f in fields(cls))}}}" for cls, names in by_class.items()
    )


@dataclass
class TrainingPlan:
    runs: list  # StageRun, in order
    eval_configs: list  # RunConfig, run on the last stage's adapter


def plan_training(args: argparse.Namespace) -> TrainingPlan:
    """Resolves and checks every input; loads no weights."""
    from finedefics_train.config import load_config
    from finedefics_train.recipes import get_recipe
    from finedefics_train.trainer import (
        StageRun,
        check_engine_device,
        config_engine,
        prepare_stage,
        start_after,
    )

    recipe = get_recipe(args.recipe)
    overrides = list(args.overrides)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise UserError(f"--max-steps must be >= 1, got {args.max_steps}")
        overrides = [f"stage1.max_steps={args.max_steps}", f"stage2.max_steps={args.max_steps}", *overrides]
    config = load_config(args.config, overrides)
    check_recipe_overrides(recipe, config.overrides)
    stages = list(recipe.stages) if args.train_stage == "run" else [args.train_stage]
    if args.train_stage != "run" and args.train_stage not in recipe.stages:
        raise UserError(
            f"recipe {recipe.name} has no {args.train_stage} (its stages: {', '.join(recipe.stages)}); "
            "use `harness train run` or another --recipe"
        )
    if args.num_processes < 1:
        raise UserError(f"--num-processes must be >= 1, got {args.num_processes}")
    if args.accelerate_config and not distributed.is_rank_process():
        check_engine_device(
            config_engine(args.accelerate_config), f"--accelerate-config {args.accelerate_config}"
        )
    processes = distributed.world_size() if distributed.is_rank_process() else args.num_processes
    runs = []
    for index, stage in enumerate(stages):
        # the last stage's adapter is OUT itself (the name the leaderboard shows); earlier ones OUT/<stage>
        out = args.out / STAGE_DIRS[stage] if index < len(stages) - 1 else args.out
        run = StageRun(stage, args.data, args.base, out, config, recipe,
                       init_adapter=args.init_adapter if index == 0 else None, num_processes=processes)  # fmt: skip
        prepare_stage(run)
        if index:  # starts from the stage before, whose adapter does not exist yet
            start_after(run, runs[-1])
        runs.append(run)
    mark_resume(runs, args.resume)
    return TrainingPlan(runs, eval_configs(args, runs[-1].out, runs[-1].training_base))


def check_recipe_overrides(recipe, overrides: dict) -> None:
    """A --set the recipe would undo (--recipe no_ccc --set loss.ccc_weight=0.5) is refused, not ignored."""
    for name, value in recipe.loss_overrides.items():
        given = overrides.get(f"loss.{name}")
        if given is not None and given != value:
            raise UserError(
                f"--set loss.{name}={given}: --recipe {recipe.name} sets loss.{name} to {value}; "
                "drop the --set or choose another --recipe"
            )


def mark_resume(runs: list, resume: bool) -> None:
    """--resume: finished stages (an adapter record of the same run) are skipped, the first unfinished one
    resumes from its last complete checkpoint, or starts from the stage before's adapter when it was
    stopped before its first checkpoint. A stage trained with other settings is refused, naming them."""
    from finedefics_train.resume import (
        RECORD_FILE,
        check_same_processes,
        check_same_run,
        incomplete_checkpoints,
        last_checkpoint,
        recorded_identity,
    )

    if not resume:
        return
    for index, run in enumerate(runs):
        check_same_run(run, *recorded_identity(run))
        if (run.out / RECORD_FILE).is_file():
            run.done = True
            continue
        if (checkpoint := last_checkpoint(run.out)) is not None:
            check_same_processes(run, checkpoint)
            run.resume = True
        elif not (index and runs[index - 1].done):
            torn = incomplete_checkpoints(run.out)
            passed = f" ({len(torn)} incomplete one(s) passed over)" if torn else ""
            raise UserError(f"--resume: no checkpoint under {run.out / 'checkpoints'} to resume from{passed}")
        return


def eval_configs(args: argparse.Namespace, adapter: Path, base: str) -> list:
    from finedefics_train.evaluate import adapter_run_config, check_eval_config
    from harness.config import parse_task_paths
    from harness.plugins import plugin_hooks
    from tasks.registry import get_task

    if not args.eval_after:
        return []
    for check in plugin_hooks("before_train"):  # e.g. the leaderboard's: the format of --name
        check(args)
    roots = parse_task_paths(args.eval_data_root, "--eval-data-root")
    choices = parse_task_paths(args.eval_choices, "--eval-choices")
    configs = []
    for name in args.eval_after:
        spec = get_task(name)
        if spec.kind != "fgvr":
            raise UserError(
                f"--eval-after {name}: a knowledge-QA task needs a question file, which --eval-after cannot "
                f"pass; after training, run `harness run --model finedefics --model-args adapter={adapter} "
                f"--task {name} --questions FILE`"
            )
        task = spec.key
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
            check_eval_config(configs[-1], args.data)
    return configs


def cmd_train(args: argparse.Namespace) -> int:
    from harness.core.io import folder_lock

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; pass the adapter folder")
    plan = plan_training(args)
    if args.num_processes > 1 and not distributed.is_rank_process():
        # checked here once; every rank then trains (and evaluates) its share of each global batch
        print(f"launching {args.num_processes} data-parallel processes", file=sys.stderr)
        argv = launch.without_num_processes(args.argv)
        return launch.launch(argv, args.num_processes, config_file=args.accelerate_config)
    # one process holds the lock: the only one, or the main rank of a launched run (never the launcher,
    # which has returned above, so rank 0 is not refused by its own parent)
    with folder_lock(args.out, "`harness train`") if distributed.is_main_process() else nullcontext():
        return train_plan(plan, args)


def train_plan(plan: TrainingPlan, args: argparse.Namespace) -> int:
    from finedefics_train.evaluate import evaluate_adapter
    from finedefics_train.resume import start_afresh
    from finedefics_train.trainer import train_stage
    from finedefics_train.training_data import data_contamination

    main = distributed.is_main_process()
    if not args.resume and main:
        for run in plan.runs:  # the previous run's records and checkpoints no longer describe OUT
            start_afresh(run)
    contamination = data_contamination(plan.runs[0].data)
    if contamination and main:
        print(f"warning: {plan.runs[0].data} holds {contamination['test_images_in_training']} test image(s) "
              "(--allow-overlap); the adapter's record and every evaluation of it say so", file=sys.stderr)  # fmt: skip
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
        from harness.plugins import plugin_hooks

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
        emit_json({
            "out": str(adapter), "recipe": args.recipe, "stages": [r.stage for r in plan.runs],
            "metrics": {r["stage"]: r["metrics"] for r in records if r},
            "eval": [{"task": s["task"], "scoring": s["scoring"], "variant": s["variant"], "accuracy": s["accuracy"],
                      "summary": str(Path(s["results_file"]).parent / "summary.json")} for s in summaries],
        })  # fmt: skip
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from finedefics_train.merge import merge_adapter

    out, base = merge_adapter(args.adapter, args.out, args.base, force=args.force)
    print(f"merged checkpoint in {out} (onto {base})")
    if args.json:
        emit_json({"out": str(out), "adapter": str(args.adapter), "base": base})
    return 0
