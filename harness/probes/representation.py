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
from tasks.registry import TaskSpec, get_task

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
    describe_llm: str | None = None  # models.chat spec: the LLM writes the descriptions instead
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
            from models.chat import check_chat_spec

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


def run_repr(config: ReprConfig, command: list[str] | None = None) -> tuple[ProbeReport, Path]:
    """Runs the probes; returns the report and the folder holding probes.json and the PNGs."""
    task = get_task(config.task)
    test = read_test_split(
        task, config.data_root, classnames=config.classnames, skip_missing=config.skip_missing
    )
    train = None
    if "linear" in config.probes:
        train = read_train_split(
            task, config.data_root, classnames=config.classnames, skip_missing=config.skip_missing
        )
    descriptions = {}
    if config.descriptions is not None:
        from harness.probes.descriptions import read_descriptions

        descriptions = read_descriptions(config.descriptions, test.class_names)
    now = datetime.now(UTC)
    out = (
        Path(config.out)
        if config.out
        else harness_home() / "probes" / f"{config.model.replace(':', '_').replace('/', '_')}__{task.key}__"
        f"{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    )
    if config.describe_llm is not None:
        descriptions = llm_descriptions(config, task, test.class_names, out)

    extractor, info = load_extractor(config, task)
    cache = FeatureCache(extractor.identity)
    names = test.class_names
    kwargs = {"cache": cache, "batch_size": config.batch_size}
    test_x = image_features(extractor, test.items, desc="test image features", **kwargs)
    test_y = np.array([i.label for i in test.items])
    name_x = text_features(
        extractor, [extractor.name_text(n) for n in names], desc="category name features", **kwargs
    )
    train_x = image_features(extractor, train.items, desc="train image features", **kwargs) if train else None
    knowledge = analysis.split_descriptions(descriptions, names, config.seed) if descriptions else None
    desc_texts = [*knowledge[0], *knowledge[2]] if knowledge else []
    desc_x = (
        text_features(extractor, desc_texts, desc="description features", **kwargs) if desc_texts else None
    )

    report: ProbeReport = {
        "schema_version": PROBE_SCHEMA_VERSION,
        "run_id": Path(out).name,
        "created": now.isoformat(timespec="seconds"),
        "model": config.model,
        "model_args": dict(config.model_args),
        **info,
        "task": task.key,
        "data_root": str(test.root),
        "train_split": None if train is None else TRAIN_SPLIT_SOURCE,
        "views": list(extractor.views),
        "descriptions_source": config.describe_llm
        or (str(config.descriptions) if config.descriptions else None),
        "n_classes": len(names),
        "n_train": 0 if train is None else len(train.items),
        "n_test": len(test.items),
        "seed": config.seed,
        "linear": {},
        "knowledge": {},
        "knowledge_left_out": knowledge[4] if knowledge else [],
        "alignment": {},
        "distances": {},
        "tsne": {},
        "provenance": provenance.collect(command or sys.argv, device=config.model_args.get("device", "auto")),
    }
    for view in extractor.views:
        if "linear" in config.probes:
            report["linear"][view] = analysis.linear_probe(
                train_x[view],
                [i.label for i in train.items],
                test_x[view],
                test_y,
                len(names),
                seed=config.seed,
            ).as_dict()
        if "knowledge" in config.probes and knowledge and knowledge[1] and knowledge[3]:
            report["knowledge"][view] = knowledge_probe(desc_x[view], knowledge, config.seed)
        if "alignment" in config.probes:
            report["alignment"][view] = analysis.alignment(test_x[view], test_y, name_x[view], names)
        if "distances" in config.probes:
            report["distances"][view] = {
                "objects": analysis.distances(test_x[view], test_y),
                "categories": analysis.distances(name_x[view], np.arange(len(names))),
                "descriptions": analysis.distances(desc_x[view], [*knowledge[1], *knowledge[3]])
                if desc_x
                else None,
            }
        if "tsne" in config.probes:
            report["tsne"][view] = write_tsne(
                out, view, test_x[view], test_y, name_x[view], names, config, task
            )
    write_json_atomic(out / PROBES_FILE, report)
    return report, out


def llm_descriptions(
    config: ReprConfig, task: TaskSpec, class_names: list[str], out: Path
) -> dict[str, list[str]]:
    """Descriptions written by `--describe-llm`, saved as `descriptions.json` in the report folder
    (the format --descriptions reads) and reused from there when the same folder is probed again."""
    from harness.probes.descriptions import describe_classes, read_descriptions
    from models.chat import load_chat_backend

    saved, marker = out / "descriptions.json", out / "descriptions.llm"
    if saved.is_file() and marker.is_file() and marker.read_text().strip() == config.describe_llm:
        return read_descriptions(saved, class_names)
    backend = load_chat_backend(config.describe_llm)
    descriptions = describe_classes(backend, class_names, task.singular, config.descriptions_per_class)
    write_json_atomic(saved, descriptions)
    marker.write_text(config.describe_llm + "\n")
    return descriptions


def knowledge_probe(desc_x: np.ndarray, knowledge: tuple, seed: int) -> dict:
    """The linear probe on masked descriptions, over the classes that have descriptions (chance is
    one over their number)."""
    train_t, train_y, _, test_y, _ = knowledge
    classes = {label: k for k, label in enumerate(sorted(set(train_y)))}
    n_fit = len(train_t)
    return analysis.linear_probe(
        desc_x[:n_fit],
        [classes[y] for y in train_y],
        desc_x[n_fit:],
        [classes[y] for y in test_y],
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
