"""Evaluating a trained adapter through the harness (`harness run --model finedefics --model-args
adapter=DIR`): the same runner, files and leaderboard rows as any other run, with provenance that
names the training run."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from finedefics_train.trainer import RECORD_FILE
from harness.config import RunConfig
from harness.core.errors import UserError
from harness.core.io import write_json_atomic
from harness.core.results import SUMMARY_FILE


def training_provenance(adapter: Path) -> dict:
    """What the leaderboard row says about where the weights came from."""
    record_file = Path(adapter) / RECORD_FILE
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    return {
        "adapter": str(Path(adapter).resolve()),
        "base": record.get("base"),
        "recipe": record.get("recipe"),
        "stage": record.get("stage"),
        "data_manifest_sha256": record.get("data_manifest_sha256"),
        # test images in the training data (--allow-overlap): shown beside every result of this adapter
        "contamination": record.get("contamination"),
        "final_metrics": record.get("metrics"),
    }


def adapter_run_config(
    adapter: Path,
    task: str,
    data_root: Path,
    *,
    scoring: str = "generate",
    variant: str = "k4",
    choices: Path | None = None,
    base: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    output_dir: Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> RunConfig:
    if data_root is None:
        raise UserError(f"--eval-after {task}: no test data; pass --eval-data-root {task}=PATH")
    from models.idefics2 import adapter_base

    model_args = {
        "pretrained": base or adapter_base(Path(adapter)),  # the runner checks it before loading
        "adapter": str(Path(adapter).resolve()),
        "dtype": dtype,
        "device": device,
    }
    return RunConfig(
        model="finedefics", task=task, model_args=model_args, data_root=data_root, choices=choices,
        scoring=scoring, variant=variant, batch_size=batch_size, output_dir=output_dir, limit=limit, seed=seed,
    )  # fmt: skip


def check_eval_config(config: RunConfig, data: Path | None = None) -> None:
    """What `harness run` would refuse about an --eval-after evaluation, found before training starts
    (the adapter does not exist yet; everything else does; a knowledge-QA task is refused by the CLI): model args and device, the task's test data,
    its choice file or variant, the scoring, and that it spells the class names as the training data
    `data` does. The prepared task is cached, so the evaluation reuses it."""
    from harness.runner import option_plan, read_split
    from models.base import resolve_device
    from models.registry import check_model_args, get_model_spec
    from tasks.prepare import prepare_task
    from tasks.registry import get_task

    task = get_task(config.task)
    check_model_args(get_model_spec(config.model), config.model_args)
    resolve_device(config.model_args.get("device"))
    split = read_split(task, config)
    prepare_task(task, split, option_plan(config), seed=config.seed)
    if data is not None:
        shown = split.class_names
        if config.choices is not None:
            from tasks.choices import read_choice_file

            shown = [name for entry in read_choice_file(config.choices) for name in entry.options]
        check_surface_forms(shown, data, task.key, config.choices)


def check_surface_forms(shown: Sequence[str], data: Path, task: str, choices: Path | None) -> None:
    """The evaluation prompt must show each class in the surface form the training data taught: a model
    trained on "Western_Gull" and asked about "Western Gull" loses most of what it learnt."""
    from tasks.names import normalize_class_name

    manifest = Path(data) / "manifest.json"
    try:
        taught = json.loads(manifest.read_text())["inputs"][task]["class_names"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not written by `harness train data` (the synthetic fixtures), or another task
    by_key = {normalize_class_name(name): name for name in taught}
    differ = sorted({(name, by_key[key]) for name in shown if (key := normalize_class_name(name)) in by_key
                     and by_key[key] != name})  # fmt: skip
    if differ:
        asked, learnt = differ[0]
        fix = (f"rebuild it with `harness train data --choices {task}={choices}`" if choices else
               "rebuild it without --choices, or evaluate with the choice file it was built with")  # fmt: skip
        raise UserError(
            f"--eval-after {task}: the evaluation shows {len(differ)} class name(s) spelt otherwise than the "
            f"training data ({manifest}) teaches them, e.g. '{asked}' for '{learnt}'; {fix}"
        )


def evaluate_adapter(
    configs: Sequence[RunConfig], adapter: Path, command: list[str], record=None
) -> list[dict]:
    """Runs each config through the harness runner; each summary's provenance names the training run,
    and `record(summary)` (the CLI's plugins' `after_run` hooks, e.g. the leaderboard's) is called on it,
    after the provenance is written, when given."""
    from harness.runner import run_evaluation

    summaries = []
    for config in configs:
        summary = run_evaluation(config, command=command)
        if summary is None:  # a data-parallel rank other than 0
            continue
        summary["provenance"]["training_run"] = training_provenance(adapter)
        write_json_atomic(Path(summary["results_file"]).parent / SUMMARY_FILE, summary)
        if record is not None:
            record(summary)
        summaries.append(summary)
    return summaries


def predicted_classes(summary: dict, class_names: Sequence[str]) -> Counter:
    """How often each class was predicted in a run (from lmms-eval's per-sample file): a model that
    collapses onto a few classes shows here even when its accuracy looks passable."""
    from tasks.scoring import loglik_choice, open_world_class

    counts: Counter = Counter()
    for line in Path(summary["samples_file"]).read_text().splitlines():
        sample = json.loads(line)
        responses = sample["filtered_resps"]
        if summary["variant"] == "open":
            index = open_world_class(str(responses[0]), class_names)
            counts[class_names[index] if index is not None else None] += 1
        else:
            choice = loglik_choice([float(r[0]) for r in responses])
            counts[sample["doc"]["options"][choice]] += 1
    return counts
