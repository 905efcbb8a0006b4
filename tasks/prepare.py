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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import datasets
import yaml
from PIL import Image
from tqdm import tqdm

from harness.core.errors import UserError
from harness.core.io import file_sha256, new_folder_mode, write_json_atomic
from harness.core.paths import prepared_root
from harness.core.records import read_record, record_to_dict
from harness.core.scorings import SCORING_KINDS
from tasks import options as option_builders
from tasks.datasets.base import DatasetSplit
from tasks.prompts import open_question_for, question_for
from tasks.registry import TASK_VERSION, TaskSpec
from tasks.scoring import option_letters

TEMPLATE_DIR = Path(__file__).resolve().parent / "lmms"
TEMPLATES = {name: TEMPLATE_DIR / kind.template for name, kind in SCORING_KINDS.items()}
OPEN_TEMPLATE = TEMPLATE_DIR / "_fgvr_open.yaml"
META_FILE = "prepared.json"

FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "group": datasets.Value("int32"),  # the question a row belongs to (rotations share it)
        "rotation": datasets.Value("int32"),
        "image": datasets.Image(),
        "image_key": datasets.Value("string"),
        "question": datasets.Value("string"),
        "options": datasets.Sequence(datasets.Value("string")),
        "option_labels": datasets.Sequence(datasets.Value("int32")),
        "answer_index": datasets.Value("int32"),
        "answer_letter": datasets.Value("string"),
        "label": datasets.Value("int32"),
        "class_name": datasets.Value("string"),
        "class_names": datasets.Sequence(datasets.Value("string")),  # open-world rows only
    }
)


@dataclass(frozen=True)
class PreparedMeta:
    """`prepared.json`: what went into a prepared task. Read back with every field checked, so a stale
    or damaged file is an error naming it, never a silent default."""

    task: str
    dataset: str
    task_version: str
    variant: str  # k4, k20, all, open, ..._circular
    fingerprint: str  # of every input; the cache key
    source_root: str
    source_format: str
    n_classes: int
    n_questions: int
    n_rows: int  # rows lmms-eval answers: one per question, or one per rotation in circular evaluation
    circular: bool
    skipped: tuple[str, ...]  # images left out (--skip-missing), with the reason
    skipped_choice_entries: tuple[str, ...]  # choice-file entries that could not be placed
    option_source: str  # choice_file, random, clip, all_classes, open; question_file (knowledge QA)
    clip_model: str | None
    k: int  # options per question
    choice_file: str | None  # knowledge QA: the question file
    choice_file_sha256: str | None
    seed: int
    n_question_records: int | None = None  # knowledge QA: records of the question file asked (None: fgvr)

    @classmethod
    def read(cls, folder: Path) -> PreparedMeta:
        fix = f"delete {folder} (or run `harness prepare ... --force`) to rebuild the prepared task"
        return read_record(cls, folder / META_FILE, fix)


@dataclass(frozen=True)
class PreparedTask:
    spec: TaskSpec
    path: Path
    meta: PreparedMeta

    @property
    def variant(self) -> str:
        return self.meta.variant

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def lmms_dir(self) -> Path:
        return self.path / "lmms"

    @property
    def n_questions(self) -> int:
        return self.meta.n_questions

    @property
    def n_rows(self) -> int:
        """Rows lmms-eval answers: one per question, or one per rotation in circular evaluation."""
        return self.meta.n_rows

    def lmms_task_name(self, scoring: str) -> str:
        return self.spec.lmms_task_name(scoring, self.variant)

    def load(self) -> datasets.Dataset:
        return datasets.load_from_disk(str(self.data_dir))["test"]


@dataclass(frozen=True)
class OptionPlan:
    """How the answer candidates of each question are built.

    source: "choice_file" (a FOCI/Finedefics file), "random" (k seeded random negatives), "clip"
    (the k most CLIP-similar classes, as the paper mined them), "all_classes", or "open" (no
    options: the model names the class). `circular` asks each question once per rotation of its
    options (correct only if every rotation is)."""

    source: str
    k: int | None = None
    choice_file: Path | None = None
    clip_model: str | None = None
    circular: bool = False
    skip_missing: bool = False  # unreadable images and unplaceable choice entries are skipped and listed

    def __post_init__(self) -> None:
        if self.source not in ("choice_file", "random", "clip", "all_classes", "open"):
            raise ValueError(f"unknown option source {self.source!r}")
        if self.circular and self.source == "open":
            raise UserError(
                "circular evaluation needs options; it cannot be combined with the open-world variant"
            )

    @property
    def variant(self) -> str:
        base = {"all_classes": "all", "open": "open"}.get(self.source, f"k{self.k or 4}")
        return f"{base}_circular" if self.circular else base


def fingerprint(spec: TaskSpec, split: DatasetSplit, plan: OptionPlan, seed: int) -> str:
    listing = hashlib.sha256("\n".join(f"{i.key}\t{i.label}" for i in split.items).encode()).hexdigest()
    inputs = {
        "task": spec.key,
        "task_version": TASK_VERSION,
        "root": str(split.root.resolve()),
        "format": split.format,
        "class_names": split.class_names,
        "listing": listing,
        "plan": {**asdict(plan), "choice_file": file_sha256(plan.choice_file) if plan.choice_file else None},
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def build_questions(
    split: DatasetSplit, plan: OptionPlan, seed: int
) -> tuple[list[option_builders.Question], list[str]]:
    """The questions (rotations included), and a description of every choice-file entry skipped."""
    skipped: list[str] = []
    if plan.source in ("random", "clip"):
        option_builders.check_k(plan.k or 4, split)  # before any CLIP model loads
    if plan.source == "choice_file":
        from tasks.choices import match_choices, read_choice_file

        match = match_choices(read_choice_file(plan.choice_file), split, skip_missing=plan.skip_missing)
        triples = [(m.item, m.entry.options, m.option_labels) for m in match.matched]
        questions = option_builders.fixed_option_questions(triples, seed)
        skipped = match.unmapped + match.ambiguous + match.mislabelled
    elif plan.source == "clip":
        from tasks.clip_miner import DEFAULT_CLIP, ChoiceMiner, load_encoder

        miner = ChoiceMiner(load_encoder(plan.clip_model or DEFAULT_CLIP))
        questions = option_builders.fixed_option_questions(miner.mine(split, plan.k or 4), seed)
    elif plan.source == "all_classes":
        questions = option_builders.all_class_questions(split, seed)
    elif plan.source == "open":
        questions = option_builders.open_world_questions(split)
    else:
        questions = option_builders.random_negative_questions(split, plan.k or 4, seed)
    return questions, skipped


def _records(
    spec: TaskSpec, split: DatasetSplit, questions: list[option_builders.Question], plan: OptionPlan
):
    question = open_question_for(spec.singular) if plan.source == "open" else question_for(spec.noun)
    class_names = split.class_names if plan.source == "open" else []
    for number, q in enumerate(tqdm(questions, desc=f"Preparing {spec.key}", unit="q")):
        asked = option_builders.rotations(q) if plan.circular else [q]
        for rotation, r in enumerate(asked):
            yield {
                "question_id": f"{spec.key}-{number:05d}" + (f"-r{rotation}" if plan.circular else ""),
                "group": number,
                "rotation": rotation,
                "image": str(r.item.image),
                "image_key": r.item.key,
                "question": question,
                "options": list(r.options),
                "option_labels": list(r.option_labels),
                "answer_index": r.answer_index,
                "answer_letter": option_letters(len(r.options))[r.answer_index] if r.options else "",
                "label": r.item.label,
                "class_name": split.class_names[r.item.label],
                "class_names": class_names,
            }


def write_task_yamls(
    folder: Path, spec: TaskSpec, variant: str, final_data_dir: Path, templates: dict[str, Path], version: str
) -> None:
    """One lmms-eval task YAML per scoring: the template it includes, its name and the prepared data."""
    folder.mkdir(parents=True)
    for scoring, template in templates.items():
        config = {
            "include": str(template),
            "task": spec.lmms_task_name(scoring, variant),
            "dataset_path": str(final_data_dir),
            "metadata": {"version": version, "fgvr_task": spec.key, "variant": variant},
        }
        (folder / f"{config['task']}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def check_images(split: DatasetSplit, skip_missing: bool) -> DatasetSplit:
    """Decode every test image once: a missing, unreadable or truncated file is an error naming it,
    or with `skip_missing` it is left out and listed in `split.skipped`."""
    good, bad = [], []
    for item in tqdm(split.items, desc=f"Checking {split.task} images", unit="img"):
        try:
            with Image.open(item.image) as image:
                image.load()
        except (
            OSError,
            SyntaxError,
            ValueError,
            Image.DecompressionBombError,
        ) as error:  # a bomb: too many pixels
            if not skip_missing:
                raise UserError(
                    f"{item.image}: unreadable image ({error}); replace the file, or pass --skip-missing to "
                    "skip and count such images"
                ) from error
            bad.append(f"{item.key}: {error}")
            continue
        good.append(item)
    if not bad:
        return split
    return replace(split, items=good, skipped=[*split.skipped, *bad])


def _variant(plan: OptionPlan, questions: list[option_builders.Question]) -> str:
    if plan.source != "choice_file":
        return plan.variant
    return replace(plan, k=len(questions[0].options)).variant


def prepare_task(
    spec: TaskSpec,
    split: DatasetSplit,
    plan: OptionPlan,
    *,
    seed: int = 0,
    cache_root: Path | None = None,
    force: bool = False,
) -> PreparedTask:
    """Build (or reuse) the prepared question set for `split` under `plan`. One process at a time builds a
    cache entry (a file lock beside it); the others wait and then reuse it (or, with `force`, rebuild it)."""
    if not split.items:
        raise UserError(f"{split.root}: the {spec.dataset} test split is empty; nothing to evaluate")
    root = Path(cache_root or prepared_root())
    key = fingerprint(spec, split, plan, seed)
    with locked_cache_entry(root, f"{spec.key}-{key[:12]}"):
        return _prepare_locked(
            spec, split, plan, seed=seed, key=key, final=root / f"{spec.key}-{key[:12]}", force=force
        )


@contextmanager
def staged_entry(final: Path) -> Iterator[Path]:
    """A staging folder beside `final`, renamed onto it when the block succeeds and removed when it
    fails, so a cache entry is never seen half-written."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    staging.chmod(new_folder_mode())  # readable by whoever shares the cache, as mkdir would make it
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def locked_cache_entry(root: Path, name: str) -> Iterator[None]:
    """Hold the file lock of the cache entry `root/name` (beside it), so that one process at a time builds
    it, after removing the staging folders of a preparation that was killed."""
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        for stale in root.glob(f".{name}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        yield


def _prepare_locked(
    spec: TaskSpec, split: DatasetSplit, plan: OptionPlan, *, seed: int, key: str, final: Path, force: bool
) -> PreparedTask:
    if (final / META_FILE).is_file() and not force:
        return PreparedTask(spec, final, PreparedMeta.read(final))

    split = check_images(split, plan.skip_missing)
    if not split.items:
        raise UserError(f"{split.root}: no readable {spec.dataset} test image is left; nothing to evaluate")
    questions, skipped_entries = build_questions(split, plan, seed)
    if not questions:
        raise UserError(f"no questions could be built for {spec.key} from {split.root}")
    variant = _variant(plan, questions)
    with staged_entry(final) as staging:
        table = datasets.Dataset.from_list(list(_records(spec, split, questions, plan)), features=FEATURES)
        datasets.DatasetDict({"test": table}).save_to_disk(str(staging / "data"))
        templates = {"generate": OPEN_TEMPLATE} if plan.source == "open" else TEMPLATES
        write_task_yamls(staging / "lmms", spec, variant, final / "data", templates, TASK_VERSION)
        meta = PreparedMeta(
            task=spec.key,
            dataset=spec.dataset,
            task_version=TASK_VERSION,
            variant=variant,
            fingerprint=key,
            source_root=str(split.root),
            source_format=split.format,
            n_classes=split.n_classes,
            n_questions=len(questions),
            n_rows=len(table),
            circular=plan.circular,
            skipped=tuple(split.skipped),
            skipped_choice_entries=tuple(skipped_entries),
            option_source=plan.source,
            clip_model=plan.clip_model if plan.source == "clip" else None,
            k=len(questions[0].options),
            choice_file=str(plan.choice_file) if plan.choice_file else None,
            choice_file_sha256=file_sha256(plan.choice_file) if plan.choice_file else None,
            seed=seed,
        )
        write_json_atomic(staging / META_FILE, record_to_dict(meta))
    return PreparedTask(spec, final, meta)
