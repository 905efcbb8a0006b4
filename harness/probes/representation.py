"""`harness probe repr`: features of one model on one task, probed as in He et al. (ICLR 2025).

Reads the train and test splits, extracts (cached) features, runs the chosen probes per feature
view and writes probes.json (harness.core.probe_results.ProbeReport) and the t-SNE PNGs."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from harness import provenance
from harness.core.errors import UserError
from harness.core.io import write_json_atomic
from harness.core.paths import harness_home
from harness.core.probe_results import PROBE_SCHEMA_VERSION, PROBES_FILE, ProbeReport
from harness.probes import analysis
from harness.probes.data import TRAIN_SPLIT_SOURCE, read_test_split, read_train_split
from harness.probes.features import (
    CLIP_PREFIX,
    FeatureCache,
    FeatureExtractor,
    MLLMExtractor,
    image_features,
    load_clip_extractor,
    text_features,
)
from tasks.datasets.base import DatasetSplit
from tasks.registry import FGVR_TASKS, TaskSpec, get_task

PROBES = ("linear", "alignment", "distances", "tsne", "knowledge")
DEFAULT_PROBES = ("linear", "alignment", "distances", "tsne")
MLLM_VIEWS = ("last", "avg")


@dataclass
class ReprConfig:
    model: str  # registry name or clip:SPEC
    task: str
    data_root: Path
    model_args: dict[str, str] = field(default_factory=dict)
    views: tuple[str, ...] | None = None  # None: every view of the extractor
    probes: tuple[str, ...] = DEFAULT_PROBES
    descriptions: Path | None = None
    describe_llm: str | None = None  # harness.llm.chat spec: the LLM writes the descriptions instead
    descriptions_per_class: int = 10
    classnames: Path | None = None
    out: Path | None = None
    batch_size: int = 8
    seed: int = 0
    tsne_classes: int = 10
    skip_missing: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.probes) - set(PROBES))
        if unknown:
            raise UserError(f"--probes: unknown {', '.join(unknown)}; choose from {', '.join(PROBES)}")
        if "knowledge" in self.probes and self.descriptions is None and self.describe_llm is None:
            raise UserError(
                "--probes knowledge needs --descriptions FILE or --describe-llm SPEC (see the README)"
            )
        if self.descriptions is not None and self.describe_llm is not None:
            raise UserError("give --descriptions FILE or --describe-llm SPEC, not both")
        if self.describe_llm is not None:
            from harness.llm.chat import check_chat_spec

            check_chat_spec(self.describe_llm)
        if self.batch_size < 1 or self.tsne_classes < 2:
            raise UserError("--batch-size must be >= 1 and --tsne-classes >= 2")
        self.data_root = Path(self.data_root).expanduser()

    @property
    def is_clip(self) -> bool:
        return self.model.startswith(CLIP_PREFIX)


def load_extractor(config: ReprConfig, task: TaskSpec) -> tuple[FeatureExtractor, dict]:
    """The extractor and what the report records about the model."""
    if config.is_clip:
        extractor = load_clip_extractor(config.model, config.model_args.get("device", "cpu"))
        spec = config.model.removeprefix(CLIP_PREFIX)
        info = {
            "pretrained": spec,
            "model_revision": provenance.model_revision(spec.split(":", 1)[-1], None),
            "prompt": None,
        }
    else:
        from harness.config import format_model_args
        from harness.runner import check_pretrained
        from models.registry import get_model_spec
        from tasks.prompts import open_question_for

        spec = get_model_spec(config.model)
        pretrained = check_pretrained(spec, config.model_args)
        args = format_model_args({**config.model_args, "pretrained": pretrained})
        wrapper = spec.load_wrapper().create_from_arg_string(args, {"batch_size": config.batch_size})
        question = open_question_for(task.singular)
        revision = provenance.model_revision(pretrained, config.model_args.get("revision"))
        identity = f"mllm|{spec.name}|{pretrained}|{revision}|{wrapper.torch_dtype}|{question}"
        extractor = MLLMExtractor(wrapper, question, identity, MLLM_VIEWS)
        info = {"pretrained": pretrained, "model_revision": revision, "prompt": question}
    if config.views is not None:
        unknown = sorted(set(config.views) - set(extractor.views))
        if unknown:
            raise UserError(f"--features {','.join(unknown)}: this model gives {','.join(extractor.views)}")
        extractor.views = tuple(config.views)
    return extractor, info


@dataclass
class ProbeData:
    """What the probes run on: the splits, the descriptions and every feature view of them."""

    test: DatasetSplit
    train: DatasetSplit | None
    descriptions: analysis.DescriptionSplit | None
    test_x: dict[str, np.ndarray] = field(default_factory=dict)
    train_x: dict[str, np.ndarray] | None = None
    name_x: dict[str, np.ndarray] = field(default_factory=dict)
    description_x: dict[str, np.ndarray] | None = None

    @property
    def test_labels(self) -> np.ndarray:
        return np.array([item.label for item in self.test.items])


def read_probe_data(config: ReprConfig, task: TaskSpec, out: Path) -> ProbeData:
    """The splits and descriptions, all read (and checked) before any model is loaded."""
    kwargs = {"classnames": config.classnames, "skip_missing": config.skip_missing}
    test = read_test_split(task, config.data_root, **kwargs)
    train = read_train_split(task, config.data_root, **kwargs) if "linear" in config.probes else None
    if train is not None and train.class_names != test.class_names:
        raise UserError(f"{config.data_root}: the train and test splits list different classes")
    descriptions = {}
    if config.descriptions is not None:
        from harness.probes.descriptions import read_descriptions

        descriptions = read_descriptions(config.descriptions, test.class_names)
    elif config.describe_llm is not None:
        descriptions = llm_descriptions(config, task, test.class_names, out)
    split = analysis.split_descriptions(descriptions, test.class_names, config.seed) if descriptions else None
    return ProbeData(test, train, split)


def extract(extractor: FeatureExtractor, data: ProbeData, batch_size: int) -> None:
    """Every feature the probes need, cached on disk (see harness.probes.features)."""
    kwargs = {"cache": FeatureCache(extractor.identity), "batch_size": batch_size}
    data.test_x = image_features(extractor, data.test.items, desc="test image features", **kwargs)
    names = [extractor.name_text(name) for name in data.test.class_names]
    data.name_x = text_features(extractor, names, desc="category name features", **kwargs)
    if data.train is not None:
        data.train_x = image_features(extractor, data.train.items, desc="train image features", **kwargs)
    if data.descriptions is not None and data.descriptions.texts:
        data.description_x = text_features(
            extractor, data.descriptions.texts, desc="description features", **kwargs
        )


def probe_view(view: str, data: ProbeData, config: ReprConfig, task: TaskSpec, out: Path) -> dict:
    """The chosen probes on one feature view: {probe name: result}."""
    names, labels = data.test.class_names, data.test_labels
    results: dict = {}
    if "linear" in config.probes:
        train_labels = [item.label for item in data.train.items]
        results["linear"] = analysis.linear_probe(
            data.train_x[view], train_labels, data.test_x[view], labels, len(names), seed=config.seed
        ).as_dict()
    split = data.descriptions
    if "knowledge" in config.probes and split is not None and split.train_labels and split.test_labels:
        results["knowledge"] = knowledge_probe(data.description_x[view], split, config.seed)
    if "alignment" in config.probes:
        results["alignment"] = analysis.alignment(data.test_x[view], labels, data.name_x[view], names)
    if "distances" in config.probes:
        described = data.description_x is not None
        results["distances"] = {
            "objects": analysis.distances(data.test_x[view], labels),
            "categories": analysis.distances(data.name_x[view], np.arange(len(names))),
            "descriptions": analysis.distances(data.description_x[view], split.labels) if described else None,
        }
    if "tsne" in config.probes:
        results["tsne"] = write_tsne(
            out, view, data.test_x[view], labels, data.name_x[view], names, config, task
        )
    return results


def report_folder(config: ReprConfig, task: TaskSpec, now: datetime) -> Path:
    if config.out:
        return Path(config.out)
    model = config.model.replace(":", "_").replace("/", "_")
    return (
        harness_home()
        / "probes"
        / f"{model}__{task.key}__{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    )


def run_repr(config: ReprConfig, command: list[str] | None = None) -> tuple[ProbeReport, Path]:
    """Runs the probes; returns the report and the folder holding probes.json and the PNGs."""
    task = get_task(config.task)
    if task.kind != "fgvr":
        raise UserError(
            f"--task {task.key}: representation probes take an image-classification task "
            f"({', '.join(FGVR_TASKS)})"
        )
    now = datetime.now(UTC)
    out = report_folder(config, task, now)
    data = read_probe_data(config, task, out)
    extractor, info = load_extractor(config, task)
    extract(extractor, data, config.batch_size)
    report: ProbeReport = {
        "schema_version": PROBE_SCHEMA_VERSION,
        "run_id": out.name,
        "created": now.isoformat(timespec="seconds"),
        "model": config.model,
        "model_args": dict(config.model_args),
        **info,
        "task": task.key,
        "data_root": str(data.test.root),
        "train_split": None if data.train is None else TRAIN_SPLIT_SOURCE,
        "views": list(extractor.views),
        "descriptions_source": config.describe_llm
        or (str(config.descriptions) if config.descriptions else None),
        "n_classes": data.test.n_classes,
        "n_train": 0 if data.train is None else len(data.train.items),
        "n_test": len(data.test.items),
        "seed": config.seed,
        "linear": {},
        "knowledge": {},
        "knowledge_left_out": data.descriptions.left_out if data.descriptions else [],
        "alignment": {},
        "distances": {},
        "tsne": {},
        "provenance": provenance.collect(command or sys.argv, device=config.model_args.get("device", "auto")),
    }
    for view in extractor.views:
        for probe, result in probe_view(view, data, config, task, out).items():
            report[probe][view] = result
    write_json_atomic(out / PROBES_FILE, report)
    return report, out


def llm_descriptions(
    config: ReprConfig, task: TaskSpec, class_names: list[str], out: Path
) -> dict[str, list[str]]:
    """Descriptions written by `--describe-llm`, saved as `descriptions.json` in the report folder
    (the format --descriptions reads) and reused from there when the same folder is probed again."""
    from harness.llm.chat import load_chat_backend
    from harness.probes.descriptions import describe_classes, read_descriptions

    saved, marker = out / "descriptions.json", out / "descriptions.llm"
    if saved.is_file() and marker.is_file() and marker.read_text().strip() == config.describe_llm:
        return read_descriptions(saved, class_names)
    backend = load_chat_backend(config.describe_llm)
    descriptions = describe_classes(backend, class_names, task.singular, config.descriptions_per_class)
    write_json_atomic(saved, descriptions)
    marker.write_text(config.describe_llm + "\n")
    return descriptions


def knowledge_probe(description_x: np.ndarray, split: analysis.DescriptionSplit, seed: int) -> dict:
    """The linear probe on masked descriptions, over the classes that have descriptions (chance is
    one over their number)."""
    classes = {label: k for k, label in enumerate(sorted(set(split.train_labels)))}
    n_fit = len(split.train_texts)
    return analysis.linear_probe(
        description_x[:n_fit],
        [classes[y] for y in split.train_labels],
        description_x[n_fit:],
        [classes[y] for y in split.test_labels],
        len(classes),
        seed=seed,
    ).as_dict()


def write_tsne(
    out: Path, view: str, image_x, labels, name_x, names, config: ReprConfig, task: TaskSpec
) -> str:
    from harness.probes.tsne import save_png_atomic, tsne_figure

    present = sorted(set(int(label) for label in labels))
    classes = present[: config.tsne_classes]
    title = f"{config.model} on {task.key}: {view} features, {len(classes)} classes"
    file_name = f"tsne_{view}.png"
    save_png_atomic(
        tsne_figure(image_x, labels, name_x, names, classes, title, config.seed), Path(out) / file_name
    )
    return file_name


def format_report(report: ProbeReport) -> str:
    """The readable table: one row per feature view."""

    def pct(result):
        if not result:
            return "-"
        low, high = result["accuracy_ci95"]
        return f"{100 * result['accuracy']:.1f} [{100 * low:.1f},{100 * high:.1f}]"

    def num(value):
        return "-" if value is None else f"{value:.3f}"

    header = (
        f"{'view':<6} {'linear probe % [95% CI]':>24} {'knowledge % [95% CI]':>22} {'align cos':>9} "
        f"{'obj inter':>9} {'obj intra':>9} {'cat inter':>9}"
    )
    lines = [
        f"{report['model']} on {report['task']}: {report['n_train']} train / {report['n_test']} test images, "
        f"{report['n_classes']} classes",
        header,
        "-" * len(header),
    ]
    for view in report["views"]:
        dist = report["distances"].get(view, {})
        align = report["alignment"].get(view)
        lines.append(
            f"{view:<6} {pct(report['linear'].get(view)):>24} {pct(report['knowledge'].get(view)):>22} "
            f"{num(align and align['mean_cosine']):>9} {num(dist.get('objects', {}).get('inter_class_distance')):>9} "
            f"{num(dist.get('objects', {}).get('intra_class_variance')):>9} "
            f"{num(dist.get('categories', {}).get('inter_class_distance')):>9}"
        )
    return "\n".join(lines)
