"""`harness probe repr` (and `harness probe build-qa`): registered into the harness CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.core.output import JSON_HELP, emit_json
from harness.core.probe_results import PROBES_FILE


def _csv(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


def cmd_repr(args: argparse.Namespace) -> int:
    from harness.config import parse_model_args
    from harness.probes.representation import DEFAULT_PROBES, ReprConfig, format_report, run_repr

    described = args.descriptions or args.describe_llm
    probes = _csv(args.probes) or (DEFAULT_PROBES + (("knowledge",) if described else ()))
    config = ReprConfig(
        model=args.model,
        task=args.task,
        data_root=args.data_root,
        model_args=parse_model_args(args.model_args),
        views=_csv(args.features),
        probes=probes,
        descriptions=args.descriptions,
        classnames=args.classnames,
        out=args.out,
        batch_size=args.batch_size,
        seed=args.seed,
        tsne_classes=args.tsne_classes,
        skip_missing=args.skip_missing,
        overwrite=args.overwrite,
        allow_overlap=args.allow_overlap,
        describe_llm=args.describe_llm,
        descriptions_per_class=args.descriptions_per_class,
        recipe=args.recipe,
    )
    report, folder = run_repr(config, command=["harness", *args.argv])
    print()
    print(format_report(report))
    print(f"probes: {folder / PROBES_FILE}")
    for hook in args.after_probe:  # e.g. the leaderboard's records the report (unless --no-record)
        hook(folder, args)
    if args.json:
        emit_json(
            {
                "model": report["model"],
                "task": report["task"],
                "views": report["views"],
                "probe_recipe": report["probe_recipe"],
                "probes_file": str(folder / PROBES_FILE),
                "linear": report["linear"],
                "knowledge": report["knowledge"],
                "alignment": {v: a["mean_cosine"] for v, a in report["alignment"].items()},
                "distances": report["distances"],
                "tsne": {v: str(folder / f) for v, f in report["tsne"].items()},
            }
        )
    return 0


def cmd_build_qa(args: argparse.Namespace) -> int:
    from harness.llm.chat import check_chat_spec, load_chat_backend
    from harness.probes.build_qa import build_questions, read_knowledge
    from tasks.registry import FGVR_TASKS

    check_build_args(args)
    base = args.task.removesuffix("_wikiqa")
    if base not in FGVR_TASKS:
        from harness.core.errors import unknown_name

        raise unknown_name("task", args.task, [*FGVR_TASKS, *(f"{key}_wikiqa" for key in FGVR_TASKS)])
    check_chat_spec(args.llm)  # a bad spec stops before the dataset is read
    task = FGVR_TASKS[base]
    from harness.probes.data import read_test_split

    class_names = read_test_split(task, args.source, classnames=args.classnames).class_names
    knowledge = read_knowledge(args.knowledge, class_names)
    backend = load_chat_backend(args.llm)
    report = build_questions(
        backend,
        knowledge,
        class_names,
        noun=task.noun,
        singular=task.singular,
        per_class=args.per_class,
        out=args.out,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    info = {"task": f"{base}_wikiqa", "out": str(args.out), "llm": args.llm, **report.as_dict()}
    if report.accepted == 0:
        from harness.core.errors import UserError

        rejected = ", ".join(f"{reason} {n}" for reason, n in info["rejected"].items() if n) or "none"
        raise UserError(
            f"no question accepted (0 of {report.prompts}; rejected: {rejected}), so no bank was written "
            f"to {args.out}; the replies are kept in {args.out}.replies.jsonl: try another --llm or more "
            "knowledge text"
        )
    rejected = ", ".join(f"{reason} {n}" for reason, n in info["rejected"].items() if n) or "none"
    print(f"{info['accepted']} of {info['prompts']} questions accepted for {info['task']} -> {args.out}")
    print(f"rejected: {rejected}")
    if report.classes_without_text:
        print(f"{len(report.classes_without_text)} classes have no knowledge text")
    print(f"run it: harness run --task {info['task']} --questions {args.out} --data-root {args.source} ...")
    if args.json:
        emit_json(info)
    return 0


def check_build_args(args: argparse.Namespace) -> None:
    """Counts and the output file, checked before the dataset is read or the LLM loaded."""
    from harness.core.errors import UserError

    for flag, value in (
        ("--per-class", args.per_class),
        ("--batch-size", args.batch_size),
        ("--max-new-tokens", args.max_new_tokens),
    ):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give the question bank's file name (e.g. bank.jsonl)")


def register(sub) -> argparse.ArgumentParser:
    """Add `harness probe repr` and `harness probe build-qa`; returns the `repr` parser (for hooks)."""
    probe = sub.add_parser("probe", help="representation probes and knowledge-QA question building")
    probe_sub = probe.add_subparsers(dest="probe_command", required=True)
    rep = probe_sub.add_parser(
        "repr", help="linear probes, alignment, distances and t-SNE of a model's features"
    )
    rep.add_argument(
        "--model",
        required=True,
        help="registry name (hidden states of the language model), or "
        "clip:hf:ID_OR_PATH / clip:open_clip:ARCH:PRETRAINED (CLIP/SigLIP embeddings)",
    )
    rep.add_argument(
        "--model-args", default="", help="k=v,...: as for `harness run` (pretrained=, dtype=, device=, ...)"
    )
    rep.add_argument("--task", required=True, help="task name (see `harness list tasks`)")
    rep.add_argument(
        "--data-root", type=Path, required=True, help="the dataset folder in its original layout"
    )
    rep.add_argument(
        "--features", help="feature views, comma-separated: last,avg (MLLM; default both) or embed (CLIP)"
    )
    rep.add_argument(
        "--probes",
        help="comma-separated from linear,alignment,distances,tsne,knowledge "
        "(default: all but knowledge; knowledge too when --descriptions is given)",
    )
    rep.add_argument(
        "--descriptions",
        type=Path,
        help="per-class descriptions for the knowledge probe and "
        "description distances: {class: [texts]} JSON or {classname, text} JSONL",
    )
    rep.add_argument(
        "--describe-llm",
        metavar="SPEC",
        help="let an LLM write the descriptions instead: "
        "hf:PATH_OR_ID or openai:BASE_URL#MODEL (saved as descriptions.json in the report folder)",
    )
    rep.add_argument(
        "--descriptions-per-class", type=int, default=10, help="descriptions asked per class (--describe-llm)"
    )
    rep.add_argument("--classnames", type=Path, help="class names, one per line in label order (Flowers-102)")
    rep.add_argument(
        "--recipe",
        default="harness",
        help="the image linear probe: harness (default; epochs and weight decay chosen on a validation "
        "split) or vlmclassifier (VLMClassifier's: prompt 'What type of object is in this photo?', Adam "
        "1e-3, batch 512, 500 epochs, the best TEST accuracy; labelled test-selected)",
    )
    rep.add_argument(
        "--out", type=Path, help="report folder (default: $HARNESS_HOME/probes/<model>__<task>__<time>)"
    )
    rep.add_argument(
        "--overwrite", action="store_true", help="replace the report in a non-empty --out (else refused)"
    )
    rep.add_argument(
        "--allow-overlap",
        action="store_true",
        help="probe although train images have the pixels of test images (recorded in the report)",
    )
    rep.add_argument("--batch-size", type=int, default=8)
    rep.add_argument("--seed", type=int, default=0, help="seeds the validation split, the probes and t-SNE")
    rep.add_argument(
        "--tsne-classes", type=int, default=10, help="classes shown in the t-SNE plots (the first N)"
    )
    rep.add_argument("--skip-missing", action="store_true", help="skip (and count) missing images")
    rep.add_argument(
        "--no-record", action="store_true", help="do not add the report to the leaderboard store"
    )
    rep.add_argument(
        "--db-url", help="leaderboard store URL (default: $HARNESS_DB_URL or SQLite under $HARNESS_HOME)"
    )
    rep.add_argument("--json", action="store_true", help=JSON_HELP)
    rep.set_defaults(func=cmd_repr, after_probe=[])  # harness.cli adds its plugins' after_probe hooks

    qa = probe_sub.add_parser(
        "build-qa",
        help="knowledge questions (ImageWikiQA format) for an FGVR task, "
        "written by an LLM from per-class knowledge text and validated",
    )
    qa.add_argument("task", help="an FGVR task (bird200) or its QA task (bird200_wikiqa)")
    qa.add_argument("--source", type=Path, required=True, help="the dataset folder (for its class names)")
    qa.add_argument(
        "--knowledge",
        type=Path,
        required=True,
        help="per-class text: a folder of <class>.txt files "
        "or a JSONL file of {classname, text} rows (e.g. Wikipedia extracts)",
    )
    qa.add_argument(
        "--llm",
        required=True,
        help="hf:PATH_OR_ID (local transformers chat model) or "
        "openai:BASE_URL#MODEL (an OpenAI-compatible server, e.g. vLLM or `transformers serve`)",
    )
    qa.add_argument(
        "--out", type=Path, required=True, help="the question bank to write (JSONL, ImageWikiQA format)"
    )
    qa.add_argument("--per-class", type=int, default=5, help="questions asked per class (one per passage)")
    qa.add_argument("--classnames", type=Path, help="class names, one per line in label order (Flowers-102)")
    qa.add_argument("--batch-size", type=int, default=16, help="prompts sent to the backend at a time")
    qa.add_argument("--max-new-tokens", type=int, default=384)
    qa.add_argument("--json", action="store_true", help=JSON_HELP)
    qa.set_defaults(func=cmd_build_qa)
    return rep
