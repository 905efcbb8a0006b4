"""`harness probe repr` (and `harness probe build-qa`): registered into the harness CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.core.probe_results import PROBES_FILE


def _csv(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


def cmd_repr(args: argparse.Namespace) -> int:
    from harness.config import parse_model_args
    from harness.probes.representation import DEFAULT_PROBES, ReprConfig, format_report, run_repr

    probes = _csv(args.probes) or (DEFAULT_PROBES + (("knowledge",) if args.descriptions else ()))
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
    )
    report, folder = run_repr(config, command=["harness", *args.argv])
    print()
    print(format_report(report))
    print(f"probes: {folder / PROBES_FILE}")
    if not args.no_record:
        _record(folder, args)
    if args.json:
        print(
            json.dumps(
                {
                    "model": report["model"],
                    "task": report["task"],
                    "views": report["views"],
                    "probes_file": str(folder / PROBES_FILE),
                    "linear": report["linear"],
                    "knowledge": report["knowledge"],
                    "alignment": {v: a["mean_cosine"] for v, a in report["alignment"].items()},
                    "distances": report["distances"],
                    "tsne": {v: str(folder / f) for v, f in report["tsne"].items()},
                }
            )
        )
    return 0


def _record(folder: Path, args: argparse.Namespace) -> None:
    """Adds the probe report to the leaderboard store when the leaderboard is installed."""
    import sys

    try:
        from leaderboard.store import record_probe_report
    except ImportError:
        return
    try:
        record_probe_report(folder, db_url=getattr(args, "db_url", None))
    except Exception as error:  # noqa: BLE001 - the report files are safe; say how to retry
        print(
            f"warning: could not record the probes in the leaderboard store ({error}); "
            f"retry with `harness import {folder}`",
            file=sys.stderr,
        )


def register(sub) -> None:
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
    rep.add_argument("--classnames", type=Path, help="class names, one per line in label order (Flowers-102)")
    rep.add_argument(
        "--out", type=Path, help="report folder (default: $HARNESS_HOME/probes/<model>__<task>__<time>)"
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
    rep.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    rep.set_defaults(func=cmd_repr)
