"""`harness train data TASK [TASK ...] --source DIR ...`: builds the Finedefics training sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.config import parse_task_paths
from harness.core.errors import UserError
from harness.core.output import JSON_HELP, emit_json
from tasks.registry import FGVR_TASKS

EPILOG = """\
backends:
  --llm hf:PATH_OR_ID              a local transformers chat model (attribute discovery, summaries, class tags)
  --llm openai:BASE_URL#MODEL      any OpenAI-compatible server (vLLM, SGLang, transformers serve, a hosted API);
                                   API key from FGVR_LLM_API_KEY or OPENAI_API_KEY
  --vqa model:NAME,pretrained=PATH one of our registered MLLMs (harness list models) answering per-image questions
  --vqa openai:BASE_URL#MODEL      a vision-language model on an OpenAI-compatible server (images sent inline)
requests per training image (llm-vqa): 1 + A VQA answers (A attributes, at most --max-attributes) and 1 LLM
summary, plus 1 LLM request per super-category; class-tags: 1 LLM request per class; human: none.
"""


def register(stages: argparse._SubParsersAction) -> None:
    parser = stages.add_parser(
        "data", help="build the Stage I / Stage II training sets from the datasets' train splits",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("tasks", nargs="+", metavar="TASK", help=" ".join(FGVR_TASKS))
    parser.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="[TASK=]DIR",
        help="the dataset folder (archive or HF mirror); repeat as TASK=DIR for several tasks",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (also holds the resumable cache)"
    )
    parser.add_argument(
        "--attributes",
        default="llm-vqa",
        choices=("human", "llm-vqa", "class-tags"),
        help="descriptions from CUB's human annotations, LLM + VQA (the paper), or one per class",
    )
    parser.add_argument("--llm", metavar="SPEC", help="hf:PATH_OR_ID or openai:BASE_URL#MODEL")
    parser.add_argument(
        "--vqa", metavar="SPEC", help="model:NAME,pretrained=PATH[,key=value...] or openai:BASE_URL#MODEL"
    )
    parser.add_argument(
        "--negatives",
        default="clip",
        choices=("clip", "random"),
        help="hard negatives by CLIP similarity (default) or random (the paper's simple negatives)",
    )
    parser.add_argument("--clip-model", metavar="SPEC", help="open_clip:ARCH:PRETRAINED or hf:ID_OR_PATH")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N train images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mcq-ratio",
        type=float,
        default=0.5,
        metavar="R",
        help="share of Stage II rows that are multiple choice; the rest are open-set (default 0.5)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="record train images identical to test images instead of stopping",
    )
    parser.add_argument("--flowers-val", action="store_true", help="Flowers-102: train on trnid + valid")
    parser.add_argument(
        "--prompts", action="append", metavar="TASK=FILE", help="a prompt YAML replacing the default"
    )
    parser.add_argument(
        "--classnames",
        action="append",
        metavar="[TASK=]FILE",
        help="class names, one per line (Flowers-102 has none in its archive)",
    )
    parser.add_argument(
        "--choices",
        action="append",
        metavar="[TASK=]FILE",
        help="the choice file you will evaluate with: the training data spells the class names as it does",
    )
    parser.add_argument(
        "--stop-after",
        choices=("discovery", "extraction", "summary"),
        help="run the llm-vqa stages up to this one and stop (resume later without it)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="ask again the requests that failed before"
    )
    parser.add_argument(
        "--export-csv",
        action="store_true",
        help="also write stage1.csv and stage2.csv in the reference repository's format",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="local model batch size")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel requests to an openai: endpoint")
    parser.add_argument("--max-attributes", type=int, default=8, help="attribute names kept from discovery")
    parser.add_argument("--llm-max-new-tokens", type=int, default=256, help="reply length of the LLM steps")
    parser.add_argument("--vqa-max-new-tokens", type=int, default=64, help="answer length of the VQA step")
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from finedefics_train.data.build import DataConfig
    from tasks.clip_miner import DEFAULT_CLIP
    from tasks.registry import get_task

    tasks = list(dict.fromkeys(get_task(task).key for task in args.tasks))
    sources = parse_task_paths(args.source, "--source")
    names = parse_task_paths(args.classnames, "--classnames")
    choices = parse_task_paths(args.choices, "--choices")
    roots = {}
    for task in tasks:
        root = sources.for_task(task)
        if root is None:
            raise UserError(f"no --source for {task}: give --source DIR, or --source {task}=DIR")
        roots[task] = root
    named = (*sources.per_task, *names.per_task, *choices.per_task)
    extra = sorted(set(named) - set(tasks))
    if extra:
        raise UserError(
            f"--source/--classnames/--choices name {', '.join(extra)}, which is not among the tasks {', '.join(tasks)}"
        )
    prompts = parse_task_paths(args.prompts, "--prompts")
    if prompts.default is not None:
        raise UserError("--prompts takes TASK=FILE (each dataset has its own super-category and unit)")
    return DataConfig(
        sources=roots, out=args.out, attributes=args.attributes, llm=args.llm, vqa=args.vqa, negatives=args.negatives,
        clip_model=args.clip_model or DEFAULT_CLIP, limit=args.limit, seed=args.seed, mcq_ratio=args.mcq_ratio,
        allow_overlap=args.allow_overlap, flowers_val=args.flowers_val, prompts=prompts.per_task,
        classnames={task: names.for_task(task) for task in tasks if names.for_task(task) is not None},
        choices={task: choices.for_task(task) for task in tasks if choices.for_task(task) is not None},
        stop_after=args.stop_after, retry_failed=args.retry_failed, export_csv=args.export_csv,
        batch_size=args.batch_size, concurrency=args.concurrency, max_attributes=args.max_attributes,
        llm_max_new_tokens=args.llm_max_new_tokens, vqa_max_new_tokens=args.vqa_max_new_tokens,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from finedefics_train.data.build import build

    summary = build(config_from_args(args))
    if args.json:
        emit_json(summary)
    else:
        print(
            f"wrote {summary.get('n_stage1', 0)} Stage I and {summary.get('n_stage2', 0)} Stage II rows to {summary['out']}"
        )
    return 0
