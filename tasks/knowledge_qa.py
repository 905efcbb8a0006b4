"""Knowledge-QA tasks: ImageWikiQA (Zhang et al., NeurIPS 2024) and FGVR knowledge questions.

A question file is ImageWikiQA's released JSONL: one object a line with `image` (e.g.
`images/ILSVRC2012_val_00039210.JPEG`), `text` (the question about "this object", the options
"A. ..." to "D. ..." on their own lines and "Choose A, B, C, or D."), `label` (the answer letter),
`wiki` (the evidence sentence) and `classname`. The first release (`question_id` such as
`stretcher_C_question767_image3`, no classname) is read too.

- `imagewikiqa`: every question is asked about its own image, found under `--data-root` by file
  name (the released `images/` folder, or an ImageNet validation folder, flat or in synset folders).
- `<task>_wikiqa` (e.g. `bird200_wikiqa`): a question bank in the same format whose `classname` is a
  class of the FGVR task; every test image of that class is asked each of its class's questions.

Variants (`--variant`): `direct` (the six tasks' letter prompt, generation or log-likelihood), `cot`
(ImageWikiQA's text followed by "Let's think step by step.", a long generation read by
`tasks.answers.cot_letter`), and `oracle` / `oracle_cot`, where "this object" is replaced by the class name, so
that a model's score separates not recognising the object from not knowing the fact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UserError
from harness.core.io import file_sha256, write_json_atomic
from harness.core.output import emit_json
from harness.core.paths import prepared_root
from harness.core.protocols import VLMCLASSIFIER_TRIGGER
from harness.core.records import record_to_dict
from tasks.answers import LETTERS
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.registry import TaskSpec, get_task

QA_VERSION = "1.1"  # bump when question construction or scoring of the QA tasks changes
PLACEHOLDER = "this object"
INSTRUCTION = "Choose A, B, C, or D."
COT_TRIGGER = VLMCLASSIFIER_TRIGGER  # ImageWikiQA's chain-of-thought trigger
VARIANTS = ("direct", "cot", "oracle", "oracle_cot")
TEMPLATE_DIR = Path(__file__).resolve().parent / "lmms"
COT_TEMPLATE = TEMPLATE_DIR / "_fgvr_qa_cot.yaml"
_OPTION = re.compile(r"^\(?([A-Z])[.)]\s*(.*)$")
_FIRST_RELEASE_ID = re.compile(r"^(?P<classname>.+)_(?P<label>[A-D])_question\d+_image\d+$")


# ---- the question file ------------------------------------------------------------------------


@dataclass(frozen=True)
class QARecord:
    """One question of a question file."""

    where: str  # "<file> line N"
    image: str | None  # the file the question is about (imagewikiqa); None in a class-level bank
    question: str  # the question about "this object", without options and instruction
    options: tuple[str, ...]
    answer_index: int
    wiki: str
    classname: str
    qid: str


def parse_question_text(text: str, where: str) -> tuple[str, tuple[str, ...]]:
    """ImageWikiQA's `text` -> (question, options A..D)."""
    question_lines, options = [], []
    for line in (part.strip() for part in text.strip().splitlines()):
        match = _OPTION.match(line)
        expected = LETTERS[len(options)] if len(options) < len(LETTERS) else None
        if not line or line.lower().startswith("choose"):
            continue
        if match and match.group(1) == expected and question_lines:
            options.append(match.group(2).strip())
        elif options:
            raise UserError(
                f"{where}: unexpected line after the options ({line!r}); expected the options "
                f"A. to D. on their own lines, then '{INSTRUCTION}'"
            )
        else:
            question_lines.append(line)
    if len(options) != len(LETTERS) or not question_lines:
        raise UserError(
            f"{where}: `text` must hold a question and the four options 'A. ...' to 'D. ...' on their "
            f"own lines (found {len(options)} options)"
        )
    empty = [letter for letter, option in zip(LETTERS, options) if not option]
    if empty:
        raise UserError(f"{where}: option {', '.join(empty)} is empty; every option needs a text")
    if len({_canonical(option) for option in options}) != len(options):
        raise UserError(
            f"{where}: the options are not all different ({' / '.join(options)}); fix the question"
        )
    return " ".join(question_lines), tuple(options)


def _record(row: object, where: str, require_image: bool) -> QARecord:
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise UserError(f"{where}: expected a JSON object with `text`, `label` and `classname`")
    question, options = parse_question_text(row["text"], where)
    label = str(row.get("label", "")).strip().upper()
    if label not in LETTERS:
        raise UserError(f"{where}: `label` must be one of A, B, C, D, got {row.get('label')!r}")
    qid = str(row.get("question_id") or "")
    classname = row.get("classname")
    if not classname and (match := _FIRST_RELEASE_ID.match(qid)):
        classname = match.group("classname")
    if not isinstance(classname, str) or not classname.strip():
        raise UserError(f"{where}: `classname` is missing (the class the question is about)")
    image = row.get("image")
    if require_image and not (isinstance(image, str) and image.strip()):
        raise UserError(f"{where}: `image` is missing (the ImageNet file the question is about)")
    return QARecord(
        where,
        image if isinstance(image, str) and image.strip() else None,
        question,
        options,
        LETTERS.index(label),
        str(row.get("wiki") or ""),
        classname.strip(),
        qid,
    )


def read_question_file(path: Path, *, require_image: bool = False) -> list[QARecord]:
    """Every question of a JSONL question file, in file order; a malformed line names itself."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--questions {path} does not exist (an ImageWikiQA-format JSONL file)")
    records = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{where}: not JSON ({error})") from None
            records.append(_record(row, where, require_image))
    if not records:
        raise UserError(f"{path}: no questions")
    check_repeats(records)
    return records


def check_repeats(records: Sequence[QARecord]) -> None:
    """A question asked twice (the same question_id, or the same question on the same image of the same
    class) would be counted twice: refused, naming both lines."""
    first: dict[tuple, str] = {}
    for record in records:
        keys = [("question", record.classname, record.image, _canonical(record.question))]
        if record.qid:
            keys.append(("question_id", record.qid))
        for key in keys:
            if key in first:
                what = f"question_id {record.qid}" if key[0] == "question_id" else "question"
                raise UserError(
                    f"{record.where}: repeats the {what} of {first[key]}; remove the repeated line"
                )
            first[key] = record.where


# ---- images -------------------------------------------------------------------------------------


class ImageIndex:
    """Image files under a root, by file name: the released `images/` folder, or an ImageNet
    validation folder, flat or in synset subfolders."""

    SUFFIXES = (".jpeg", ".jpg", ".png")

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise UserError(
                f"--data-root {self.root} is not a folder (the ImageWikiQA images, or ImageNet val)"
            )
        self.by_name: dict[str, list[Path]] = {}
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.lower().endswith(self.SUFFIXES):
                    self.by_name.setdefault(name, []).append(Path(folder) / name)

    def find(self, image: str, where: str) -> Path | None:
        found = self.by_name.get(Path(image).name, [])
        if len(found) > 1:
            raise UserError(
                f"{where}: {Path(image).name} is found {len(found)} times under {self.root} "
                f"({found[0]}, {found[1]}); point --data-root at one copy"
            )
        return found[0] if found else None


# ---- tasks ----------------------------------------------------------------------------------------


# The tasks themselves are rows of `tasks.registry.TASKS` with kind "qa": `imagewikiqa` (base None)
# and `<key>_wikiqa` (base: the FGVR task whose test images a bank's questions are asked about).


def qa_variant(variant: str | None, scoring: str) -> str:
    """--variant of a QA task: direct (the default, also for the six tasks' default k4), cot,
    oracle or oracle_cot; the chain-of-thought protocols are generated."""
    chosen = "direct" if variant in (None, "", "k4") else variant
    if chosen not in VARIANTS:
        raise UserError(f"--variant {variant}: knowledge-QA tasks take {', '.join(VARIANTS)}")
    if chosen.endswith("cot") and scoring != "generate":
        raise UserError(
            f"--variant {chosen} is a generation protocol (chain of thought): use --scoring generate"
        )
    return chosen


# ---- question sets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QAQuestion:
    record: QARecord
    item: TestItem  # the image asked about; its label indexes `class_names`


def _canonical(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name).strip().lower()


def imagewikiqa_questions(records: Sequence[QARecord], root: Path, skip_missing: bool):
    """(questions, class names, skipped): every question on its own image, matched by file name."""
    index = ImageIndex(root)
    class_names = sorted({r.classname for r in records})
    label_of = {name: i for i, name in enumerate(class_names)}
    questions, skipped = [], []
    for record in records:
        path = index.find(record.image or "", record.where)
        if path is None:
            if not skip_missing:
                raise UserError(
                    f"{record.where}: image {Path(record.image or '').name} is not under {root}; give "
                    "--data-root the released images folder or ImageNet val, or pass --skip-missing"
                )
            skipped.append(f"{record.where}: {record.image}")
            continue
        key = path.relative_to(index.root).as_posix()
        questions.append(QAQuestion(record, TestItem(path, label_of[record.classname], key)))
    return questions, class_names, skipped


def bank_questions(records: Sequence[QARecord], split: DatasetSplit):
    """(questions, class names, skipped): each class's questions asked about each of its test images."""
    by_name = {_canonical(name): label for label, name in enumerate(split.class_names)}
    images: dict[int, list[TestItem]] = {}
    for item in split.items:
        images.setdefault(item.label, []).append(item)
    questions = []
    for record in records:
        label = by_name.get(_canonical(record.classname))
        if label is None:
            raise UserError(
                f"{record.where}: class '{record.classname}' is not a {split.task} class "
                f"(e.g. {', '.join(split.class_names[:3])})"
            )
        questions += [QAQuestion(record, item) for item in images.get(label, [])]
    return questions, list(split.class_names), list(split.skipped)


def oracle_question(question: str, class_name: str) -> str:
    """The question with "this object" replaced by "this <class name>"; a question without the
    placeholder is prefixed with the name, so the oracle always knows the class."""
    name = class_name.replace("_", " ")
    # a function, not a template: a class name is text, never a backreference or an escape
    replaced, count = re.subn(re.escape(PLACEHOLDER), lambda _: f"this {name}", question, flags=re.IGNORECASE)
    return replaced if count else f"The object in the image is a {name}. {question}"


def qa_prompt_text(question: str, options: Sequence[str]) -> str:
    """ImageWikiQA's own text: the question, the options A. to D., and the instruction."""
    return "\n".join(
        [question, *(f"{letter}. {option}" for letter, option in zip(LETTERS, options)), INSTRUCTION]
    )


# ---- the chain-of-thought answer parser ---------------------------------------------------------


def qa_info(
    spec: TaskSpec,
    data_root: Path | None,
    questions_file: Path | None,
    *,
    skip_missing: bool = False,
    classnames: Path | None = None,
    json_output: bool = False,
) -> int:
    """`harness data info` of a QA task: the questions, their classes and images."""
    questions, class_names, skipped, source_format = load_qa_questions(
        spec, data_root, questions_file, skip_missing=skip_missing, classnames=classnames
    )
    info = {
        "task": spec.key,
        "format": source_format,
        "root": str(data_root),
        "questions_file": str(questions_file),
        "n_question_records": len({q.record.where for q in questions}),
        "n_questions": len(questions),
        "n_classes": len({q.item.label for q in questions}),
        "skipped": skipped,
        "items": [
            {
                "image": str(q.item.image),
                "class": class_names[q.item.label],
                "question": q.record.question,
                "options": list(q.record.options),
                "answer": LETTERS[q.record.answer_index],
            }
            for q in questions
        ],
    }
    if json_output:
        emit_json(info)
        return 0
    print(f"{spec.key}: {source_format}, questions from {questions_file}, images under {data_root}")
    print(
        f"  {info['n_question_records']} questions in the file, {info['n_questions']} asked (question x image), "
        f"{info['n_classes']} classes" + (f", {len(skipped)} skipped" if skipped else "")
    )
    return 0


# ---- preparation ------------------------------------------------------------------------------


def load_qa_questions(
    spec: TaskSpec,
    data_root: Path | None,
    questions_file: Path | None,
    *,
    skip_missing: bool = False,
    classnames: Path | None = None,
):
    """(questions, class names, skipped, source format) of a QA task; bad input names the file and line."""
    if questions_file is None:
        raise UserError(
            f"{spec.key} needs --questions FILE: "
            + (
                "the released imagewikiqa.jsonl"
                if spec.base is None
                else "a question bank in ImageWikiQA's format (see `harness probe build-qa`)"
            )
        )
    if data_root is None or not Path(data_root).exists():
        raise UserError(
            f"--data-root {data_root} does not exist"
            if data_root
            else f"--data-root is required: the images of {spec.dataset}"
        )
    records = read_question_file(questions_file, require_image=spec.base is None)
    if spec.base is None:
        questions, class_names, skipped = imagewikiqa_questions(records, Path(data_root), skip_missing)
        return questions, class_names, skipped, "imagewikiqa-jsonl"
    base = get_task(spec.base)
    split = base.read(Path(data_root), classnames=classnames, skip_missing=skip_missing)
    questions, class_names, skipped = bank_questions(records, split)
    return questions, class_names, skipped, f"{split.format}+qa-bank"


def _rows(spec: TaskSpec, questions: Sequence[QAQuestion], class_names: Sequence[str], variant: str):
    oracle = variant.startswith("oracle")
    for number, q in enumerate(questions):
        class_name = class_names[q.item.label]
        stem = oracle_question(q.record.question, q.record.classname) if oracle else q.record.question
        yield {
            "question_id": f"{spec.key}-{number:05d}",
            "group": number,
            "rotation": 0,
            "image": str(q.item.image),
            "image_key": q.item.key,
            "question": stem,
            "options": list(q.record.options),
            "option_labels": list(range(len(q.record.options))),
            "answer_index": q.record.answer_index,
            "answer_letter": LETTERS[q.record.answer_index],
            "label": q.item.label,
            "class_name": class_name,
            "class_names": [],
            "protocol": "cot" if variant.endswith("cot") else "direct",
            "wiki": q.record.wiki,
            "source": q.record.where,
        }


def prepare_qa_task(
    spec: TaskSpec,
    data_root: Path | None,
    questions_file: Path | None,
    *,
    variant: str = "direct",
    seed: int = 0,
    skip_missing: bool = False,
    classnames: Path | None = None,
    cache_root: Path | None = None,
    force: bool = False,
):
    """Build (or reuse) the prepared question set of a QA task: the same layout as the six tasks'
    (tasks.prepare.PreparedTask), with three more columns: protocol, wiki and source."""
    import datasets

    from tasks.prepare import (
        FEATURES,
        META_FILE,
        TEMPLATES,
        PreparedMeta,
        PreparedTask,
        check_images,
        locked_cache_entry,
        staged_entry,
        write_task_yamls,
    )

    questions, class_names, skipped, source_format = load_qa_questions(
        spec, data_root, questions_file, skip_missing=skip_missing, classnames=classnames
    )
    images = DatasetSplit(
        spec.key,
        source_format,
        Path(data_root),
        list(class_names),
        list({q.item.key: q.item for q in questions}.values()),
    )
    readable = check_images(images, skip_missing)
    good = {item.key for item in readable.items}
    questions = [q for q in questions if q.item.key in good]
    skipped = [*skipped, *readable.skipped]
    if not questions:
        raise UserError(f"{questions_file}: no question is left to ask (no image of its classes was found)")
    listing = "\n".join(f"{q.record.where}\t{q.item.key}" for q in questions)
    key = hashlib.sha256(
        json.dumps(
            [
                spec.key,
                QA_VERSION,
                variant,
                str(Path(data_root).resolve()),
                file_sha256(questions_file),
                hashlib.sha256(listing.encode()).hexdigest(),
                seed,
            ]
        ).encode()
    ).hexdigest()
    root = Path(cache_root or prepared_root())
    final = root / f"{spec.key}-{key[:12]}"
    with locked_cache_entry(root, final.name):  # one process at a time builds it; the others reuse it
        if (final / META_FILE).is_file() and not force:
            return PreparedTask(spec, final, PreparedMeta.read(final))
        features = datasets.Features(
            {
                **FEATURES,
                "protocol": datasets.Value("string"),
                "wiki": datasets.Value("string"),
                "source": datasets.Value("string"),
            }
        )
        with staged_entry(final) as staging:
            table = datasets.Dataset.from_list(
                list(_rows(spec, questions, class_names, variant)), features=features
            )
            datasets.DatasetDict({"test": table}).save_to_disk(str(staging / "data"))
            templates = {"generate": COT_TEMPLATE} if variant.endswith("cot") else TEMPLATES
            write_task_yamls(staging / "lmms", spec, variant, final / "data", templates, QA_VERSION)
            meta = PreparedMeta(
                task=spec.key,
                dataset=spec.dataset,
                task_version=QA_VERSION,
                variant=variant,
                fingerprint=key,
                source_root=str(data_root),
                source_format=source_format,
                n_classes=len(class_names),
                n_questions=len(questions),
                n_rows=len(table),
                circular=False,
                skipped=tuple(skipped),
                skipped_choice_entries=(),
                option_source="question_file",
                clip_model=None,
                k=len(LETTERS),
                choice_file=str(questions_file),
                choice_file_sha256=file_sha256(questions_file),
                seed=seed,
                n_question_records=len({q.record.where for q in questions}),
            )
            write_json_atomic(staging / META_FILE, record_to_dict(meta))
        return PreparedTask(spec, final, meta)
