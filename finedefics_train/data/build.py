"""`harness train data`: train splits -> leakage check -> descriptions -> hard negatives -> stage1/ and
stage2/ (HF `datasets` on disk), manifest.json, optionally CSV files in the reference repository's format.

Layout of `--out`:
  cache/          the stages' replies (JSONL, resumable); CLIP image embeddings go to the evaluation
                  miner's cache ($HARNESS_HOME/clip-cache), shared with `harness run --options clip`
  stage1/         one row per training image (STAGE1_FEATURES)
  stage2/         one instruction per training image, open-set or multiple choice (STAGE2_FEATURES)
  manifest.json   inputs and their hashes, backends, prompts, counts, failures, seed, package versions
  failures.jsonl  every request that failed after its retry, and every image left out, with the reason
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from finedefics_train.data import attributes as stages
from finedefics_train.data.attributes import Ask, ClassNameMasker, StageReport
from finedefics_train.data.cache import ReplyCache, reply_key
from finedefics_train.data.negatives import (
    N_NEGATIVES,
    clip_negative_labels,
    pick_negative_image,
    random_negative_labels,
)
from finedefics_train.data.prompts import DataPrompts, load_prompts
from finedefics_train.data.sources import (
    TrainSource,
    check_overlap,
    find_overlap,
    read_source,
    spell_as_choice_file,
    train_split,
)
from finedefics_train.training_data import BUILD_FILE, mcq_row, stage_one_turn
from harness.core.errors import UserError
from harness.core.io import folder_lock, write_json_atomic, write_lines_atomic
from harness.provenance import package_versions
from tasks.clip_miner import DEFAULT_CLIP
from tasks.datasets.base import TestItem
from tasks.options import order_options
from tasks.prompts import question_for
from tasks.registry import FGVR_TASKS, get_task

ATTRIBUTE_SOURCES = ("human", "llm-vqa", "class-tags")
NEGATIVE_SOURCES = ("clip", "random")
STAGES = ("discovery", "extraction", "summary")
OPEN_QUESTION = "What is the name of the {superclass} in this image?"
MANIFEST_VERSION = 1
PACKAGES = ("fgvr-harness", "torch", "transformers", "datasets", "lmms_eval", "open_clip_torch", "httpx")
CSV_COLUMNS = (
    "question",
    "answer",
    "type",
    "image_path",
    "attribute",
    "neg_attribute",
    "category",
    "neg_category",
)
CSV_JOIN = "\t\n"  # how the reference repository's CSV joins the negatives of one row


def stage1_features():
    import datasets

    text = datasets.Value("string")
    return datasets.Features({
        "image": datasets.Image(), "image_id": text, "task": text, "label": datasets.Value("int64"),
        "category": text, "superclass": text, "attribute": text,
        "neg_categories": datasets.Sequence(text), "neg_attributes": datasets.Sequence(text),
        "neg_image_ids": datasets.Sequence(text), "source": text,
    })  # fmt: skip


def stage2_features():
    import datasets

    text = datasets.Value("string")
    return datasets.Features({
        "image": datasets.Image(), "image_id": text, "task": text, "label": datasets.Value("int64"),
        "category": text, "type": text, "question": text, "answer": text, "options": datasets.Sequence(text),
    })  # fmt: skip


@dataclass
class DataConfig:
    """Everything `harness train data` takes; checked before any model loads."""

    sources: dict[str, Path]  # task -> its data folder
    out: Path
    attributes: str = "llm-vqa"
    llm: str | None = None
    vqa: str | None = None
    negatives: str = "clip"
    clip_model: str = DEFAULT_CLIP
    limit: int | None = None  # train images per class
    seed: int = 0
    mcq_ratio: float = 0.5  # the share of Stage II rows that are multiple choice (the rest open-set)
    allow_overlap: bool = False
    flowers_val: bool = False  # Flowers-102: train on trnid + valid
    prompts: dict[str, Path] = field(default_factory=dict)  # task -> a prompt YAML replacing the default
    classnames: dict[str, Path] = field(
        default_factory=dict
    )  # task -> class-name file (Flowers-102 needs one)
    choices: dict[str, Path] = field(
        default_factory=dict
    )  # task -> a choice file whose spelling of the class names the training data takes
    stop_after: str | None = None  # run the stages up to this one, then stop (no datasets written)
    retry_failed: bool = False
    export_csv: bool = False
    batch_size: int = 8
    concurrency: int = 8
    max_attributes: int = stages.MAX_ATTRIBUTES
    llm_max_new_tokens: int = 256
    vqa_max_new_tokens: int = 64

    def __post_init__(self) -> None:
        self.out = Path(self.out).expanduser()
        if not self.sources:
            raise UserError("no task to build: give TASK [TASK ...] and --source (DIR, or TASK=DIR per task)")
        for name, value, known in (
            ("--attributes", self.attributes, ATTRIBUTE_SOURCES),
            ("--negatives", self.negatives, NEGATIVE_SOURCES),
        ):
            if value not in known:
                raise UserError(f"{name} {value!r}: choose one of {', '.join(known)}")
        if self.stop_after is not None and self.stop_after not in STAGES:
            raise UserError(f"--stop-after {self.stop_after!r}: choose one of {', '.join(STAGES)}")
        if not 0.0 <= self.mcq_ratio <= 1.0:
            raise UserError(f"--mcq-ratio must lie in [0, 1], got {self.mcq_ratio}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1 image per class, got {self.limit}")
        unannotated = sorted(key for key in self.sources if not get_task(key).attribute_annotations)
        if self.attributes == "human" and unannotated:
            annotated = [spec.key for spec in FGVR_TASKS.values() if spec.attribute_annotations]
            raise UserError(
                f"--attributes human uses per-image attribute annotations: only {', '.join(annotated)} "
                f"has them, not {', '.join(unannotated)}"
            )
        needs = {"llm-vqa": ("llm", "vqa"), "class-tags": ("llm",), "human": ()}[self.attributes]
        for backend in needs:
            if not getattr(self, backend):
                raise UserError(
                    f"--attributes {self.attributes} needs --{backend} SPEC (see `harness train data --help`)"
                )
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} is a file; choose a folder for the training sets")
        for flag, value in (("--batch-size", self.batch_size), ("--concurrency", self.concurrency),
                            ("--max-attributes", self.max_attributes),
                            ("--llm-max-new-tokens", self.llm_max_new_tokens),
                            ("--vqa-max-new-tokens", self.vqa_max_new_tokens)):  # fmt: skip
            if value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        if self.stop_after and self.attributes != "llm-vqa":
            raise UserError("--stop-after applies to the llm-vqa stages (discovery, extraction, summary)")


class LazyBackend:
    """A backend loaded on first use: a re-run whose replies are all cached loads no model."""

    def __init__(self, spec: str, load):
        self.spec, self._load, self._backend = spec, load, None

    def __getattr__(self, name):
        if self._backend is None:
            self._backend = self._load()
        return getattr(self._backend, name)


@dataclass
class Described:
    """The description of one training image, or why it has none."""

    text: str | None
    source: str
    error: str = ""


def build(config: DataConfig) -> dict:
    """Runs the whole pipeline, holding OUT/.lock (a second build into OUT is refused); returns the
    summary printed by --json."""
    with folder_lock(config.out, "`harness train data`"):
        return _build(config)


def _build(config: DataConfig) -> dict:
    started = time.time()
    sources = {task: _read(task, root, config) for task, root in config.sources.items()}
    prompts = {task: load_prompts(task, config.prompts.get(task)) for task in sources}
    llm, vqa = _backends(config)
    overlaps, pixel_hashes = [], {}
    for task, source in sources.items():
        found, pixel_hashes[task] = find_overlap(source)
        overlaps += found
    check_overlap(overlaps, config.allow_overlap)
    reports: dict[str, StageReport] = {}
    pixels = {
        f"{task}/{key}": digest for task, hashes in pixel_hashes.items() for key, digest in hashes.items()
    }
    descriptions = describe_all(sources, prompts, config, llm, vqa, reports, pixels)
    if descriptions is None:  # --stop-after
        return {"out": str(config.out), "stopped_after": config.stop_after, "stages": _report_dicts(reports)}
    stage1, left_out = stage1_rows(sources, prompts, descriptions, config)
    stage2 = stage2_rows(sources, prompts, stage1, config)
    if not stage1:
        raise UserError(
            f"no training image got a description, so there is nothing to write; {_why_empty(left_out)}"
        )
    manifest = _manifest(
        config, sources, prompts, pixel_hashes, overlaps, llm, vqa, reports, stage1, stage2, left_out
    )
    manifest["seconds"] = round(time.time() - started, 1)
    failures = [
        json.dumps({"stage": name, **f}) for name, r in reports.items() for f in r.as_dict()["failures"]
    ]
    _publish(config, sources, stage1, stage2, manifest, failures + [json.dumps(entry) for entry in left_out])
    return {
        "out": str(config.out),
        "n_stage1": len(stage1),
        "n_stage2": len(stage2),
        "n_classes": sum(source.train.n_classes for source in sources.values()),
        "tasks": sorted(sources),
        "attributes": config.attributes,
        "negatives": config.negatives,
        "overlap": [str(pair) for pair in overlaps],
        "failed": manifest["counts"]["failed_requests"],
        "left_out": len(left_out),
    }


def _read(task: str, root: Path, config: DataConfig) -> TrainSource:
    source = read_source(
        task, root, classnames=config.classnames.get(task), flowers_val=config.flowers_val, limit=config.limit
    )
    if task in config.choices:
        source.renamed = spell_as_choice_file(source, config.choices[task])
    return source


def _backends(config: DataConfig):
    """The LLM and VQA backends; their specs are checked now, local models load on first use."""
    from finedefics_train.data.vqa import check_vqa_spec, load_vqa_backend
    from harness.llm.chat import check_chat_spec, load_chat_backend

    llm = vqa = None
    if config.llm:
        check_chat_spec(config.llm)
        llm = LazyBackend(config.llm, lambda: load_chat_backend(config.llm, **_chat_options(config)))
    if config.vqa and config.attributes == "llm-vqa":
        check_vqa_spec(config.vqa)
        vqa = LazyBackend(
            config.vqa,
            lambda: load_vqa_backend(
                config.vqa, batch_size=config.batch_size, concurrency=config.concurrency
            ),
        )
    return llm, vqa


def _chat_options(config: DataConfig) -> dict:
    if config.llm.startswith("openai:"):
        return {"concurrency": config.concurrency}
    return {"batch_size": config.batch_size}


# ---- descriptions ----------------------------------------------------------------------------------------


def describe_all(sources, prompts, config, llm, vqa, reports, pixels) -> dict[str, Described] | None:
    """image id -> its description, for every train image of every task. `pixels` (image id -> pixel
    hash) keys the cached replies about an image: a replaced image under the same path is asked again."""
    cache_dir = config.out / "cache"
    if config.attributes == "human":
        return _human(sources, prompts)
    if config.attributes == "class-tags":
        report = reports.setdefault("class-tags", StageReport("Class descriptions (LLM)"))
        return _class_tags(
            sources,
            prompts,
            llm,
            ReplyCache(cache_dir / "class_tags.jsonl", retry_failed=config.retry_failed),
            report,
            config,
        )
    return _llm_vqa(sources, prompts, config, llm, vqa, reports, pixels)


def _human(sources, prompts) -> dict[str, Described]:
    from finedefics_train.data.human import describe, read_human_attributes

    described = {}
    for task, source in sources.items():
        present = read_human_attributes(source.train.root)
        for item in source.train.items:
            names = present.get(item.key, [])
            text = describe(names, prompts[task].superclass) if names else None
            error = "" if names else "no attribute marked present with certainty >= probably"
            described[source.image_id(item)] = Described(text, "human", error)
    return described


def _class_tags(sources, prompts, llm, cache, report, config) -> dict[str, Described]:
    asks, keys = [], {}
    for task, source in sources.items():
        for name in source.train.class_names:
            ask = Ask(
                f"{task}/class/{name}", prompts[task].render("class_tags", category=name.replace("_", " "))
            )
            asks.append(ask)
            keys[(task, name)] = reply_key(ask.subject, ask.prompt, llm.spec)
    maskers = {task: _masker(sources[task], prompts[task]) for task in sources}
    replies = stages.summarise(
        asks,
        llm,
        lambda ask: maskers[ask.subject.split("/", 1)[0]],
        cache,
        report,
        batch_size=config.batch_size,
        max_new_tokens=config.llm_max_new_tokens,
    )
    described = {}
    for task, source in sources.items():
        for item in source.train.items:
            reply = replies[keys[(task, source.train.class_names[item.label])]]
            described[source.image_id(item)] = Described(
                reply.value["text"] if reply.ok else None,
                "class-tags",
                "" if reply.ok else f"class description failed: {reply.error}",
            )
    return described


def _llm_vqa(sources, prompts, config, llm, vqa, reports, pixels) -> dict[str, Described] | None:
    cache_dir = config.out / "cache"
    retry = config.retry_failed
    discovery = reports.setdefault("discovery", StageReport("1/3 Attribute discovery (LLM)"))
    by_superclass = {prompts[t].superclass: prompts[t].render("discovery") for t in sources}
    found = stages.discover_attributes(
        by_superclass,
        llm,
        ReplyCache(cache_dir / "discovery.jsonl", retry_failed=retry),
        discovery,
        batch_size=config.batch_size,
        max_new_tokens=config.llm_max_new_tokens,
    )
    empty = sorted(superclass for superclass, names in found.items() if not names)
    if empty:
        raise UserError(
            f"attribute discovery failed for {', '.join(empty)} (the LLM reply could not be parsed into attribute "
            f"names, twice); see {cache_dir / 'discovery.jsonl'}; check --llm {config.llm} or the 'discovery' prompt"
        )
    if config.stop_after == "discovery":
        return None
    attributes = {superclass: names[: config.max_attributes] for superclass, names in found.items()}
    questions = {}  # image id -> [(attribute or "overall", Ask)]
    for task, source in sources.items():
        p = prompts[task]
        for item in source.train.items:
            image_id = source.image_id(item)
            subject = image_subject(image_id, pixels)
            asks = [("overall", Ask(subject, p.render("general"), item.image))]
            asks += [
                (name, Ask(subject, p.render("vqa", attribute=name), item.image))
                for name in attributes[p.superclass]
            ]
            questions[image_id] = asks
    extraction = reports.setdefault("extraction", StageReport("2/3 Visual attribute extraction (VQA)"))
    answers = stages.extract_attributes(
        [a for asks in questions.values() for _, a in asks],
        vqa,
        ReplyCache(cache_dir / "extraction.jsonl", retry_failed=retry),
        extraction,
        max_new_tokens=config.vqa_max_new_tokens,
    )
    if config.stop_after == "extraction":
        return None
    return _summaries(sources, prompts, config, llm, questions, answers, reports, pixels)


def _summaries(sources, prompts, config, llm, questions, answers, reports, pixels) -> dict[str, Described]:
    summary_asks, described, key_of = [], {}, {}
    for task, source in sources.items():
        for item in source.train.items:
            image_id = source.image_id(item)
            lines = []
            for name, ask in questions[image_id]:
                reply = answers[reply_key(ask.subject, ask.prompt, config.vqa)]
                if reply.ok:
                    lines.append(f"- {name}: {reply.value}")
            if not lines:
                described[image_id] = Described(None, "llm-vqa", "every VQA answer failed")
                continue
            summary = prompts[task].render("summary", attributes="\n".join(lines))
            ask = Ask(image_subject(image_id, pixels), summary)
            summary_asks.append(ask)
            key_of[image_id] = reply_key(ask.subject, ask.prompt, llm.spec)
    maskers = {task: _masker(sources[task], prompts[task]) for task in sources}
    report = reports.setdefault("summary", StageReport("3/3 Summarisation (LLM)"))
    replies = stages.summarise(
        summary_asks,
        llm,
        lambda ask: maskers[ask.subject.split("/", 1)[0]],
        ReplyCache(config.out / "cache" / "summary.jsonl", retry_failed=config.retry_failed),
        report,
        batch_size=config.batch_size,
        max_new_tokens=config.llm_max_new_tokens,
    )
    for image_id, key in key_of.items():
        reply = replies[key]
        described[image_id] = Described(
            reply.value["text"] if reply.ok else None,
            "llm-vqa",
            "" if reply.ok else f"summary failed: {reply.error}",
        )
    return described


def image_subject(image_id: str, pixels: dict[str, str]) -> str:
    """What a reply about an image is cached under: its id and its pixels (not only its path)."""
    return f"{image_id}@{pixels[image_id][:16]}"


def _masker(source: TrainSource, prompts: DataPrompts) -> ClassNameMasker:
    return ClassNameMasker(source.train.class_names, prompts.superclass)


# ---- rows ------------------------------------------------------------------------------------------------


def stage1_rows(sources, prompts, descriptions, config) -> tuple[list[dict], list[dict]]:
    """One row per described training image with its negatives; and the images left out, with why."""
    rows, left_out = [], []
    for task, source in sources.items():
        split = source.train
        by_label: dict[int, list[TestItem]] = {}
        for item in split.items:
            if descriptions[source.image_id(item)].text is not None:
                by_label.setdefault(item.label, []).append(item)
        if config.negatives == "clip":
            negatives = clip_negative_labels(
                split, config.clip_model, cache_dir=config.out / "cache" / "clip"
            )
        else:  # only classes with a described image can give a negative description
            negatives = random_negative_labels(split, config.seed, labels=sorted(by_label))
        for item, negative_labels in zip(split.items, negatives, strict=True):
            image_id = source.image_id(item)
            own = descriptions[image_id]
            if own.text is None:
                left_out.append({"image_id": image_id, "reason": own.error})
                continue
            picked = [
                pick_negative_image(item, task, label, by_label.get(label, []), config.seed)
                for label in negative_labels
            ]
            if None in picked:
                missing = [split.class_names[label] for label, p in zip(negative_labels, picked) if p is None]
                left_out.append(
                    {"image_id": image_id, "reason": f"no described train image of {', '.join(missing)}"}
                )
                continue
            rows.append({
                "image_path": str(item.image), "image_id": image_id, "task": task, "label": item.label,
                "category": split.class_names[item.label], "superclass": prompts[task].superclass,
                "attribute": own.text,
                "neg_categories": [split.class_names[label] for label in negative_labels],
                "neg_attributes": [descriptions[source.image_id(p)].text for p in picked],
                "neg_image_ids": [source.image_id(p) for p in picked],
                "neg_labels": list(negative_labels), "source": own.source,
            })  # fmt: skip
    return rows, left_out


def stage2_rows(sources, prompts, stage1, config) -> list[dict]:
    """One instruction per Stage I row: multiple choice for a seeded `mcq_ratio` share, open-set for the rest.

    The multiple-choice prompt is one of the evaluation's two (tasks/prompts.py, `mcq_row`), seeded per
    image: half answered by letter, half by the option's name (so that `loglik_name` is learnt too), with
    the evaluation's seeded option order (tasks/options.py): the true category and the three hard negatives."""
    order = sorted(
        range(len(stage1)), key=lambda i: random.Random(f"{config.seed}:mix:{stage1[i]['image_id']}").random()
    )
    mcq = set(order[: round(config.mcq_ratio * len(stage1))])
    rows = []
    for index, row in enumerate(stage1):
        spec = sources[row["task"]].spec
        base = {key: row[key] for key in ("image_path", "image_id", "task", "label", "category")}
        if index not in mcq:
            question = OPEN_QUESTION.format(superclass=prompts[row["task"]].superclass)
            rows.append(
                {**base, "type": "open", "question": question, "answer": row["category"], "options": []}
            )
            continue
        item = TestItem(Path(row["image_path"]), row["label"], row["image_id"].split("/", 1)[1])
        asked = order_options(
            item, [row["category"], *row["neg_categories"]], [row["label"], *row["neg_labels"]], config.seed
        )
        by_name = random.Random(f"{config.seed}:answer-by:{row['image_id']}").random() < 0.5
        rows.append({**base, **mcq_row(question_for(spec.noun), asked.options, asked.answer_index, by_name)})
    return rows


# ---- writing ---------------------------------------------------------------------------------------------


def _why_empty(left_out: list[dict]) -> str:
    reasons = Counter(entry["reason"] for entry in left_out)
    shown = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3))
    return (
        f"the {len(left_out)} images were left out: {shown}" if left_out else "the train split has no images"
    )


def _publish(config: DataConfig, sources, stage1: list[dict], stage2: list[dict], manifest: dict,
             failures: list[str]) -> None:  # fmt: skip
    """stage1/, stage2/ and manifest.json as one set: both datasets are written beside the old ones first;
    then the old manifest goes, the datasets are swapped in, and the new manifest (with the build id both
    datasets carry) comes last. Killed before the swap, the old set stays whole; during it, the folder has
    no manifest or mismatched build ids, which training refuses (training_data.check_same_build)."""
    build_id = uuid.uuid4().hex
    staged = {
        "stage1": _stage_dataset(config.out / "stage1", stage1, stage1_features(), build_id),
        "stage2": _stage_dataset(config.out / "stage2", stage2, stage2_features(), build_id),
    }
    (config.out / "manifest.json").unlink(missing_ok=True)
    for name, staging in staged.items():
        shutil.rmtree(config.out / name, ignore_errors=True)
        staging.rename(config.out / name)
    write_lines_atomic(config.out / "failures.jsonl", failures)
    if config.export_csv:
        export_csv(config.out, sources, stage1, stage2)
    write_json_atomic(config.out / "manifest.json", manifest | {"build_id": build_id})


def _stage_dataset(folder: Path, rows: list[dict], features, build_id: str) -> Path:
    """save_to_disk into a staging sibling of `folder` (returned): readers never see a half-written
    dataset. Images are embedded as bytes, so the folder needs nothing else."""
    import datasets

    staging = folder.with_name(f".{folder.name}.tmp")
    build_cache = folder.parent / "cache" / "hf-build"
    # from_generator's cache is keyed by the generator and its arguments, not the rows: never reuse one
    for leftover in (staging, build_cache):
        shutil.rmtree(leftover, ignore_errors=True)
    rows_file = folder.with_name(f".{folder.name}.rows.jsonl")
    write_lines_atomic(rows_file, (json.dumps(row) for row in rows))
    table = datasets.Dataset.from_generator(
        _rows_with_images,
        gen_kwargs={"rows_file": str(rows_file), "columns": ",".join(features)},
        features=features,
        cache_dir=str(build_cache),
    )
    table.save_to_disk(str(staging))
    del table
    write_json_atomic(staging / BUILD_FILE, {"build_id": build_id})
    rows_file.unlink()
    shutil.rmtree(build_cache, ignore_errors=True)
    return staging


def _rows_with_images(rows_file: str, columns: str):
    """Rows for `Dataset.from_generator` (list-valued gen_kwargs would be split into shards, hence the string)."""
    columns = columns.split(",")
    with open(rows_file, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            image = Path(row["image_path"])
            yield {
                **{c: row[c] for c in columns if c != "image"},
                "image": {"bytes": image.read_bytes(), "path": image.name},
            }


def export_csv(out: Path, sources, stage1: list[dict], stage2: list[dict]) -> None:
    """stage1.csv and stage2.csv with the reference repository's columns (question, answer, type,
    image_path, attribute, neg_attribute, category, neg_category); a row's negatives are joined by a
    tab and a newline, as its training script splits them. Stage I's question and answer are the
    trainer's (`stage_one_turn`: the description asked for by superclass)."""
    by_id = {row["image_id"]: row for row in stage1}
    stage1_csv = [
        {**dict(zip(("question", "answer"), stage_one_turn(row), strict=True)), "type": "stage1",
         **_csv_common(row)}
        for row in stage1
    ]  # fmt: skip
    stage2_csv = [
        {
            "question": r["question"],
            "answer": r["answer"],
            "type": r["type"],
            **_csv_common(by_id[r["image_id"]]),
        }
        for r in stage2
    ]
    for name, rows in (("stage1.csv", stage1_csv), ("stage2.csv", stage2_csv)):
        tmp = out / f".{name}.tmp"
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(out / name)


def _csv_common(row: dict) -> dict:
    return {
        "image_path": row["image_path"], "attribute": row["attribute"],
        "neg_attribute": CSV_JOIN.join(row["neg_attributes"]), "category": row["category"],
        "neg_category": CSV_JOIN.join(row["neg_categories"]),
    }  # fmt: skip


def _manifest(
    config, sources, prompts, pixel_hashes, overlaps, llm, vqa, reports, stage1, stage2, left_out
) -> dict:
    inputs = {}
    for task, source in sources.items():
        listing = "\n".join(f"{key} {digest}" for key, digest in sorted(pixel_hashes[task].items()))
        inputs[task] = {
            "source": str(source.root), "format": source.train.format, "train_split": train_split(get_task(task), config.flowers_val),
            "n_train": len(source.train.items), "n_test": len(source.test.items), "n_classes": source.train.n_classes,
            "class_names": source.train.class_names,
            # the surface form of the names taught: the archive's, or a choice file's (`--choices`)
            "class_name_form": f"choices:{config.choices[task]}" if task in config.choices else "archive",
            "renamed_class_names": source.renamed,
            "train_pixels_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        }  # fmt: skip
    failed = sum(len(report.failures) for report in reports.values())
    return {
        "manifest_version": MANIFEST_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs,
        "attributes": config.attributes,
        "negatives": {
            "source": config.negatives,
            "n": N_NEGATIVES,
            "clip_model": config.clip_model if config.negatives == "clip" else None,
        },
        "backends": {"llm": llm.spec if llm else None, "vqa": vqa.spec if vqa else None},
        "prompts": {task: p.as_dict() for task, p in prompts.items()},
        "stage2": {"mcq_ratio": config.mcq_ratio, "open_question": OPEN_QUESTION},
        "seed": config.seed,
        "limit_per_class": config.limit,
        "overlap": {"allowed": config.allow_overlap, "pairs": [pair.__dict__ for pair in overlaps]},
        "stages": _report_dicts(reports),
        "counts": {
            "stage1": len(stage1),
            "stage2": len(stage2),
            "stage2_mcq": sum(r["type"] == "mcq" for r in stage2),
            "stage2_open": sum(r["type"] == "open" for r in stage2),
            "failed_requests": failed,
            "left_out_images": len(left_out),
            "masked_class_names": _masked(reports),
        },  # fmt: skip
        "package_versions": package_versions(PACKAGES),
    }


def _report_dicts(reports: dict[str, StageReport]) -> dict:
    return {name: report.as_dict() for name, report in reports.items()}


def _masked(reports: dict[str, StageReport]) -> int:
    return sum(report.masked for report in reports.values())
