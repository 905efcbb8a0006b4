"""Prepared tasks: the question set of one (task, variant, option source, seed) on disk.

A prepared task folder holds
- `data/`: an HF `datasets` DatasetDict (split "test") saved with `save_to_disk`,
- `lmms/`: thin lmms-eval task YAMLs including the templates in `tasks/lmms/`, one per scoring,
- `prepared.json`: what went in (source, option source, seed, counts, fingerprint).
It is cached under a fingerprint of its inputs and written to a temporary folder that is renamed
into place at the end, so an interrupted preparation never leaves a half-written task behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import yaml

from harness.errors import UserError
from harness.paths import prepared_root
from harness.results import write_json_atomic
from tasks import options as option_builders
from tasks.datasets.base import DatasetSplit
from tasks.prompts import question_for
from tasks.registry import TASK_VERSION, TaskSpec
from tasks.scoring import option_letters

TEMPLATE_DIR = Path(__file__).resolve().parent / "lmms"
TEMPLATES = {"generate": TEMPLATE_DIR / "_fgvr_generate.yaml", "loglik": TEMPLATE_DIR / "_fgvr_loglik.yaml"}
META_FILE = "prepared.json"

FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "image": datasets.Image(),
        "image_key": datasets.Value("string"),
        "question": datasets.Value("string"),
        "options": datasets.Sequence(datasets.Value("string")),
        "option_labels": datasets.Sequence(datasets.Value("int32")),
        "answer_index": datasets.Value("int32"),
        "answer_letter": datasets.Value("string"),
        "label": datasets.Value("int32"),
        "class_name": datasets.Value("string"),
    }
)


@dataclass(frozen=True)
class PreparedTask:
    spec: TaskSpec
    variant: str
    path: Path
    meta: dict[str, Any]

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def lmms_dir(self) -> Path:
        return self.path / "lmms"

    @property
    def n_questions(self) -> int:
        return int(self.meta["n_questions"])

    def lmms_task_name(self, scoring: str) -> str:
        return self.spec.lmms_task_name(scoring, self.variant)

    def load(self) -> datasets.Dataset:
        return datasets.load_from_disk(str(self.data_dir))["test"]


@dataclass(frozen=True)
class OptionPlan:
    """How the options are built: from a choice file, or `k` seeded random negatives."""

    source: str  # "choice_file" | "random" | "all_classes"
    k: int | None = None
    choice_file: Path | None = None
    skip_missing: bool = False  # choice-file entries that cannot be placed are skipped and listed

    @property
    def variant(self) -> str:
        if self.source == "all_classes":
            return "all"
        return "k4" if self.source == "choice_file" or self.k == 4 else f"k{self.k}"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(spec: TaskSpec, split: DatasetSplit, plan: OptionPlan, seed: int) -> str:
    listing = hashlib.sha256("\n".join(f"{i.key}\t{i.label}" for i in split.items).encode()).hexdigest()
    inputs = {
        "task": spec.key,
        "task_version": TASK_VERSION,
        "root": str(split.root.resolve()),
        "format": split.format,
        "class_names": split.class_names,
        "listing": listing,
        "option_source": plan.source,
        "k": plan.k,
        "choice_file": _sha256_file(plan.choice_file) if plan.choice_file else None,
        "skip_missing": plan.skip_missing,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def build_questions(split: DatasetSplit, plan: OptionPlan, seed: int) -> tuple[list[option_builders.Question], list[str]]:
    """The questions, and a description of every choice-file entry that was skipped."""
    if plan.source == "choice_file":
        from tasks.choices import match_choices, read_choice_file

        match = match_choices(read_choice_file(plan.choice_file), split, skip_missing=plan.skip_missing)
        triples = [(m.item, m.entry.options, m.option_labels) for m in match.matched]
        return option_builders.fixed_option_questions(triples, seed), match.unmapped + match.ambiguous + match.mislabelled
    if plan.source == "all_classes":
        return option_builders.all_class_questions(split, seed), []
    return option_builders.random_negative_questions(split, plan.k or 4, seed), []


def _records(spec: TaskSpec, split: DatasetSplit, questions: list[option_builders.Question]):
    question = question_for(spec.noun)
    for number, q in enumerate(questions):
        yield {
            "question_id": f"{spec.key}-{number:05d}",
            "image": str(q.item.image),
            "image_key": q.item.key,
            "question": question,
            "options": list(q.options),
            "option_labels": list(q.option_labels),
            "answer_index": q.answer_index,
            "answer_letter": option_letters(len(q.options))[q.answer_index],
            "label": q.item.label,
            "class_name": split.class_names[q.item.label],
        }


def _write_task_yamls(folder: Path, spec: TaskSpec, variant: str, final_data_dir: Path) -> None:
    folder.mkdir(parents=True)
    for scoring, template in TEMPLATES.items():
        config = {
            "include": str(template),
            "task": spec.lmms_task_name(scoring, variant),
            "dataset_path": str(final_data_dir),
            "metadata": {"version": TASK_VERSION, "fgvr_task": spec.key, "variant": variant},
        }
        (folder / f"{config['task']}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def prepare_task(
    spec: TaskSpec,
    split: DatasetSplit,
    plan: OptionPlan,
    *,
    seed: int = 0,
    cache_root: Path | None = None,
    force: bool = False,
) -> PreparedTask:
    """Build (or reuse) the prepared question set for `split` under `plan`."""
    if not split.items:
        raise UserError(f"{split.root}: the {spec.dataset} test split is empty; nothing to evaluate")
    root = cache_root or prepared_root()
    key = fingerprint(spec, split, plan, seed)
    final = Path(root) / f"{spec.key}-{plan.variant}-{key[:12]}"
    if (final / META_FILE).is_file() and not force:
        return PreparedTask(spec, plan.variant, final, json.loads((final / META_FILE).read_text()))

    questions, skipped_entries = build_questions(split, plan, seed)
    if not questions:
        raise UserError(f"no questions could be built for {spec.key} from {split.root}")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        table = datasets.Dataset.from_list(list(_records(spec, split, questions)), features=FEATURES)
        datasets.DatasetDict({"test": table}).save_to_disk(str(staging / "data"))
        _write_task_yamls(staging / "lmms", spec, plan.variant, final / "data")
        meta = {
            "task": spec.key,
            "dataset": spec.dataset,
            "task_version": TASK_VERSION,
            "variant": plan.variant,
            "fingerprint": key,
            "source_root": str(split.root),
            "source_format": split.format,
            "n_classes": split.n_classes,
            "n_questions": len(questions),
            "skipped": split.skipped,
            "skipped_choice_entries": skipped_entries,
            "option_source": plan.source,
            "k": len(questions[0].options),
            "choice_file": str(plan.choice_file) if plan.choice_file else None,
            "choice_file_sha256": _sha256_file(plan.choice_file) if plan.choice_file else None,
            "seed": seed,
        }
        write_json_atomic(staging / META_FILE, meta)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PreparedTask(spec, plan.variant, final, meta)
