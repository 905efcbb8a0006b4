"""`harness prepare` and `harness data info`: the data side of the CLI."""

from __future__ import annotations

import argparse

from harness.cli_config import add_dataclass_arguments, config_from_args
from harness.config import RunConfig
from harness.core.output import JSON_HELP, emit_json

SOURCE_FIELDS = ("task", "data_root", "choices", "classnames", "questions", "skip_missing")
OPTION_FIELDS = ("variant", "options", "clip_model", "circular", "seed")


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """TASK --source DIR [--choices FILE] [--classnames FILE] [--questions FILE] [--skip-missing] [--json];
    the flags are RunConfig's (one definition with `harness run`), the dataset folder named --source here."""
    add_dataclass_arguments(
        parser,
        RunConfig,
        only=SOURCE_FIELDS,
        positional=("task",),
        required=("data_root",),
        rename={"data_root": "--source"},
        per_task=False,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help=JSON_HELP,
    )


def _config(args: argparse.Namespace):
    from tasks.registry import get_task

    task = get_task(args.task)
    return task, config_from_args(RunConfig, args, model="-", task=task.key)


def _read(args: argparse.Namespace):
    from harness.runner import read_split

    task, config = _config(args)
    return task, config, read_split(task, config)


def cmd_prepare(args: argparse.Namespace) -> int:
    from harness.runner import option_plan, read_split
    from tasks.prepare import prepare_task

    task, config = _config(args)
    if task.kind == "qa":  # knowledge-QA tasks: questions from --questions (tasks.knowledge_qa)
        from tasks.knowledge_qa import prepare_qa_task, qa_variant

        prepared = prepare_qa_task(
            task,
            config.data_root,
            config.questions,
            variant=qa_variant(config.variant, "generate"),
            seed=config.seed,
            skip_missing=config.skip_missing,
            classnames=config.classnames,
            force=args.force,
        )
    else:
        prepared = prepare_task(
            task, read_split(task, config), option_plan(config), seed=config.seed, force=args.force
        )
    info = {
        "task": task.key,
        "variant": prepared.variant,
        "n_questions": prepared.n_questions,
        "path": str(prepared.path),
        "include_path": str(prepared.lmms_dir),
        "lmms_tasks": {p.stem.rsplit("_", 1)[-1]: p.stem for p in sorted(prepared.lmms_dir.glob("*.yaml"))},
        "option_source": prepared.meta.option_source,
        "skipped": len(prepared.meta.skipped),
        "n_images": len(set(prepared.load().select_columns(["image_key"])["image_key"])),
    }
    info["repeated_images"] = info["n_questions"] - info["n_images"]  # a choice file may ask an image twice
    if args.json:
        emit_json(info)
    else:
        repeated = (
            f", {info['repeated_images']} image(s) asked twice by the choice file"
            if info["repeated_images"]
            else ""
        )
        print(
            f"prepared {info['n_questions']} {task.key} questions on {info['n_images']} images{repeated} "
            f"({info['option_source']}) in {info['path']}"
        )
        print(
            f"lmms-eval: --include_path {info['include_path']} --tasks {'|'.join(info['lmms_tasks'].values())}"
        )
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    task, config = _config(args)
    if task.kind == "qa":
        from tasks.knowledge_qa import qa_info

        return qa_info(
            task,
            config.data_root,
            config.questions,
            skip_missing=config.skip_missing,
            classnames=config.classnames,
            json_output=args.json,
        )
    task, _, split = _read(args)
    questions = []  # (item, options): one per choice-file entry, so an image asked twice is listed twice
    if args.choices is not None:
        from tasks.choices import match_choices, read_choice_file

        match = match_choices(read_choice_file(args.choices), split, skip_missing=args.skip_missing)
        questions = [(matched.item, list(matched.entry.options)) for matched in match.matched]
    info = {
        "task": task.key,
        "format": split.format,
        "root": str(split.root),
        "n_classes": split.n_classes,
        "n_test": len(split.items),
        "class_names": split.class_names,
        "class_counts": split.class_counts(),
        "skipped": split.skipped,
        "items": [
            {
                "image": str(item.image),
                "class": split.class_names[item.label],
                **({"options": options} if options else {}),
            }
            for item, options in (
                questions if args.choices is not None else [(item, None) for item in split.items]
            )
        ],
    }
    if args.choices is not None:
        info["n_questions"] = len(questions)
        info["repeated_images"] = len(questions) - len({item.key for item, _ in questions})
    if args.json:
        emit_json(info)
        return 0
    print(f"{task.key}: {split.format} at {split.root}")
    print(
        f"  {info['n_classes']} classes, {info['n_test']} test images"
        + (f", {len(split.skipped)} skipped" if split.skipped else "")
    )
    counts = sorted(info["class_counts"].values())
    print(f"  images per class: min {counts[0]}, max {counts[-1]}")
    print(f"  first classes: {', '.join(split.class_names[:5])}{' ...' if split.n_classes > 5 else ''}")
    if args.choices is not None:
        repeated = f" ({info['repeated_images']} image(s) asked twice)" if info["repeated_images"] else ""
        print(f"  choice file: {len(questions)} questions mapped onto the test split{repeated}")
    return 0


def register(sub) -> None:
    prepare = sub.add_parser("prepare", help="build (or reuse) the prepared question set of a task")
    _add_source_arguments(prepare)
    add_dataclass_arguments(prepare, RunConfig, only=OPTION_FIELDS)
    prepare.add_argument("--force", action="store_true", help="rebuild even when a cached copy exists")
    prepare.set_defaults(func=cmd_prepare)

    data = sub.add_parser("data", help="inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="class names, counts and test items of a dataset on disk")
    _add_source_arguments(info)
    info.set_defaults(func=cmd_data_info)
