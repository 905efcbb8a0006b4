"""`harness prepare` and `harness data info`: the data side of the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.config import RunConfig


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="task name (see `harness list tasks`)")
    parser.add_argument("--source", type=Path, required=True, help="the dataset folder in its original layout")
    parser.add_argument("--choices", type=Path, help="a FOCI/Finedefics choice file")
    parser.add_argument("--classnames", type=Path, help="class names, one per line in label order")
    parser.add_argument("--questions", type=Path, help="knowledge-QA tasks: the ImageWikiQA-format question file")
    parser.add_argument("--skip-missing", action="store_true", help="skip (and count) missing or unreadable images")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _read(args: argparse.Namespace):
    from harness.runner import read_split
    from tasks.registry import get_task

    task = get_task(args.task)
    config = RunConfig(model="-", task=task.key, data_root=args.source, choices=args.choices, classnames=args.classnames,
                       skip_missing=args.skip_missing)
    return task, config, read_split(task, config)


def cmd_prepare(args: argparse.Namespace) -> int:
    from harness.runner import option_plan
    from tasks.prepare import prepare_task
    from tasks.registry import get_task

    if getattr(get_task(args.task), "is_qa", False):
        from tasks.knowledge_qa import prepare_qa_task, qa_variant

        task = get_task(args.task)
        prepared = prepare_qa_task(task, args.source, args.questions, variant=qa_variant(args.variant, "generate"),
                                   seed=args.seed, skip_missing=args.skip_missing, classnames=args.classnames,
                                   force=args.force)
    else:
        task, config, split = _read(args)
        config.choices, config.variant, config.circular = args.choices, args.variant, args.circular
        config.options, config.clip_model = args.options, args.clip_model
        prepared = prepare_task(task, split, option_plan(config), seed=args.seed, force=args.force)
    info = {
        "task": task.key,
        "variant": prepared.variant,
        "n_questions": prepared.n_questions,
        "path": str(prepared.path),
        "include_path": str(prepared.lmms_dir),
        "lmms_tasks": {p.stem.rsplit("_", 1)[-1]: p.stem for p in sorted(prepared.lmms_dir.glob("*.yaml"))},
        "option_source": prepared.meta["option_source"],
        "skipped": len(prepared.meta.get("skipped", [])),
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(f"prepared {info['n_questions']} {task.key} questions ({info['option_source']}) in {info['path']}")
        print(f"lmms-eval: --include_path {info['include_path']} --tasks {'|'.join(info['lmms_tasks'].values())}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from tasks.registry import get_task

    if getattr(get_task(args.task), "is_qa", False):
        from tasks.knowledge_qa import qa_info

        return qa_info(get_task(args.task), args.source, args.questions, skip_missing=args.skip_missing,
                       classnames=args.classnames, json_output=args.json)
    task, _, split = _read(args)
    options = {}
    if args.choices is not None:
        from tasks.choices import match_choices, read_choice_file

        for matched in match_choices(read_choice_file(args.choices), split, skip_missing=args.skip_missing).matched:
            options[matched.item.key] = list(matched.entry.options)
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
            {"image": str(item.image), "class": split.class_names[item.label],
             **({"options": options[item.key]} if item.key in options else {})}
            for item in split.items
            if args.choices is None or item.key in options
        ],
    }
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{task.key}: {split.format} at {split.root}")
    print(f"  {info['n_classes']} classes, {info['n_test']} test images" + (f", {len(split.skipped)} skipped" if split.skipped else ""))
    counts = sorted(info["class_counts"].values())
    print(f"  images per class: min {counts[0]}, max {counts[-1]}")
    print(f"  first classes: {', '.join(split.class_names[:5])}{' ...' if split.n_classes > 5 else ''}")
    if args.choices is not None:
        print(f"  choice file: {len(options)} questions mapped onto the test split")
    return 0


def register(sub) -> None:
    prepare = sub.add_parser("prepare", help="build (or reuse) the prepared question set of a task")
    _add_source_arguments(prepare)
    prepare.add_argument("--variant", default="k4", help="without --choices: kN options, 'all' classes, or 'open'")
    prepare.add_argument("--options", choices=("random", "clip"), default="random", help="random or CLIP hard negatives")
    prepare.add_argument("--clip-model", help="open_clip:ARCH:PRETRAINED or hf:HUB_ID_OR_PATH")
    prepare.add_argument("--circular", action="store_true", help="one row per rotation of the options")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--force", action="store_true", help="rebuild even when a cached copy exists")
    prepare.set_defaults(func=cmd_prepare)

    data = sub.add_parser("data", help="inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="class names, counts and test items of a dataset on disk")
    _add_source_arguments(info)
    info.set_defaults(func=cmd_data_info)
