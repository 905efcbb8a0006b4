"""`harness probe repr`: features of one model on one task, probed as in He et al. (ICLR 2025).

Reads the train and test splits, extracts (cached) features, runs the chosen probes per feature
view and writes probes.json (harness.core.probe_results.ProbeReport) and the t-SNE PNGs."""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from harness import provenance
from harness.core import identity
from harness.core.errors import UserError, unknown_name
from harness.core.io import write_json_atomic
from harness.core.paths import harness_home
from harness.core.probe_results import PROBE_SCHEMA_VERSION, PROBES_FILE, ProbeReport, TsnePoints
from harness.probes import analysis
from harness.probes.data import TRAIN_SPLIT_SOURCE, read_test_split, read_train_split
from harness.probes.features import (
    CLIP_PREFIX,
    FeatureCache,
    FeatureExtractor,
    MLLMExtractor,
    image_features,
    image_key,
    load_clip_extractor,
    text_features,
)
from tasks.datasets.base import DatasetSplit
from tasks.registry import FGVR_TASKS, TaskSpec, get_task

PROBES = ("linear", "alignment", "distances", "tsne", "knowledge")
DEFAULT_PROBES = ("linear", "alignment", "distances", "tsne")
MLLM_VIEWS = ("last", "avg")


@dataclass(frozen=True)
class ProbeRecipe:
    """How the image linear probe is run: the question whose hidden states are an MLLM's image
    features (None: the task's open question) and the probe's training and selection."""

    name: str
    description: str
    prompt: str | None
    linear_probe: Callable[..., analysis.LinearProbe]


PROBE_RECIPES = {
    recipe.name: recipe
    for recipe in (
        ProbeRecipe(
            "harness",
            "standardised features, AdamW, weight decay and epochs chosen on a validation split of train",
            None,
            analysis.linear_probe,
        ),
        ProbeRecipe(
            "vlmclassifier",
            "VLMClassifier's probe: raw features, Adam 1e-3, batch 512, 500 epochs, best TEST accuracy",
            "What type of object is in this photo?",  # VLMClassifier feature_analysis/extract_feature.py
            analysis.linear_probe_test_selected,
        ),
    )
}


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
    overwrite: bool = False  # replace the report in a non-empty --out
    allow_overlap: bool = False  # probe although train images have the pixels of test images (recorded)
    recipe: str = "harness"  # a PROBE_RECIPES name: how the image linear probe is run

    def __post_init__(self) -> None:
        if self.recipe not in PROBE_RECIPES:
            raise unknown_name("probe recipe", self.recipe, PROBE_RECIPES)
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
        if self.descriptions_per_class < 2:
            raise UserError(f"--descriptions-per-class must be >= 2, got {self.descriptions_per_class}")
        self.data_root = Path(self.data_root).expanduser()
        if self.out is not None:
            self.out = Path(self.out).expanduser()
            check_out_folder(self.out, self.overwrite)

    @property
    def is_clip(self) -> bool:
        return self.model.startswith(CLIP_PREFIX)


REPORT_FILES = (PROBES_FILE, "tsne_*.png", "descriptions.json")  # what a probe run writes into --out


def check_out_folder(out: Path, overwrite: bool) -> None:
    """--out is a folder that holds no report yet (or `--overwrite`, which removes the old report's
    files): a second run never mixes its figures into another model's report."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the report (probes.json and the PNGs)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"--out {out} is not empty; choose a new folder, or pass --overwrite to replace the report in it"
        )


def clear_report(out: Path) -> None:
    """Remove an old report's files from `out` (--overwrite); anything else in the folder stays."""
    for path in [p for pattern in REPORT_FILES for p in out.glob(pattern)]:
        path.unlink()


def check_model(config: ReprConfig) -> None:
    """The model name and its --model-args (names and values), checked before any data is read."""
    if config.is_clip:
        return
    from models.registry import check_model_args, get_model_spec

    check_model_args(get_model_spec(config.model), config.model_args)


def load_extractor(config: ReprConfig, task: TaskSpec) -> tuple[FeatureExtractor, dict]:
    """The extractor and what the report records about the model."""
    if config.is_clip:
        extractor = load_clip_extractor(config.model, config.model_args)
        info = {"pretrained": config.model.removeprefix(CLIP_PREFIX), "prompt": None}
    else:
        from harness.config import format_model_args
        from harness.runner import check_pretrained
        from models.registry import get_model_spec
        from tasks.prompts import open_question_for

        spec = get_model_spec(config.model)
        pretrained = check_pretrained(spec, config.model_args)
        args = format_model_args({**config.model_args, "pretrained": pretrained})
        wrapper = spec.load_wrapper().create_from_arg_string(args, {"batch_size": config.batch_size})
        question = PROBE_RECIPES[config.recipe].prompt or open_question_for(task.singular)
        recipe = f"features:{question}|{wrapper.torch_dtype}"  # the prompt and the dtype `auto` resolved to
        of = identity.identify(spec.name, pretrained, config.model_args, protocol=recipe)
        extractor = MLLMExtractor(wrapper, question, of, MLLM_VIEWS)
        info = {"pretrained": pretrained, "prompt": question}
    info["model_revision"] = extractor.identity.weights  # the base's and the adapter's content
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
    test_keys: list[str] = field(default_factory=list)  # the images' pixel hashes (feature cache keys)
    train_keys: list[str] = field(default_factory=list)
    overlap: list[tuple[str, str]] = field(default_factory=list)  # (test key, train key) with equal pixels
    test_x: dict[str, np.ndarray] = field(default_factory=dict)
    train_x: dict[str, np.ndarray] | None = None
    name_x: dict[str, np.ndarray] = field(default_factory=dict)
    description_x: dict[str, np.ndarray] | None = None

    @property
    def test_labels(self) -> np.ndarray:
        return np.array([item.label for item in self.test.items])

    @property
    def fingerprint(self) -> str:
        """The data's content: every image's pixels (test and train) and the class names."""
        entries = {f"test/{i.key}": k for i, k in zip(self.test.items, self.test_keys)}
        if self.train is not None:
            entries.update((f"train/{i.key}", k) for i, k in zip(self.train.items, self.train_keys))
        entries["classes"] = "\n".join(self.test.class_names)
        return identity.listing_fingerprint(entries)


def hash_images(data: ProbeData, allow_overlap: bool) -> None:
    """Every image's pixel hash; train images with a test image's pixels stop the probe (train/test
    leakage) unless `allow_overlap`, and are then recorded in the report."""
    data.test_keys = [image_key(item) for item in data.test.items]
    if data.train is None:
        return
    data.train_keys = [image_key(item) for item in data.train.items]
    test_of = {key: item.key for key, item in zip(data.test_keys, data.test.items)}
    data.overlap = [
        (test_of[key], item.key) for key, item in zip(data.train_keys, data.train.items) if key in test_of
    ]
    if data.overlap and not allow_overlap:
        shown = "; ".join(f"test {test} == train {train}" for test, train in data.overlap[:3])
        raise UserError(
            f"{len(data.overlap)} train image(s) have the pixels of test images (train/test leakage: "
            f"{shown}); remove them from the train split, or pass --allow-overlap to record them and go on"
        )


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
    data = ProbeData(test, train, split)
    hash_images(data, config.allow_overlap)
    return data


def extract(extractor: FeatureExtractor, data: ProbeData, batch_size: int) -> None:
    """Every feature the probes need, cached on disk (see harness.probes.features)."""
    kwargs = {"cache": FeatureCache(extractor.identity), "batch_size": batch_size}
    data.test_x = image_features(
        extractor, data.test.items, desc="test image features", keys=data.test_keys, **kwargs
    )
    names = [extractor.name_text(name) for name in data.test.class_names]
    data.name_x = text_features(extractor, names, desc="category name features", **kwargs)
    if data.train is not None:
        data.train_x = image_features(
            extractor, data.train.items, desc="train image features", keys=data.train_keys, **kwargs
        )
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
        results["linear"] = (
            PROBE_RECIPES[config.recipe]
            .linear_probe(
                data.train_x[view], train_labels, data.test_x[view], labels, len(names), seed=config.seed
            )
            .as_dict()
        )
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
        results["tsne"], results["tsne_points"] = write_tsne(
            out, view, data.test_x[view], labels, data.name_x[view], names, config, task
        )
    return results


def new_run_id(config: ReprConfig, task: TaskSpec, now: datetime) -> str:
    """A probe run's id, unique per run (never the --out folder's name, which runs can share)."""
    model = config.model.replace(":", "_").replace("/", "_")
    return f"{model}__{task.key}__{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def run_repr(config: ReprConfig, command: list[str] | None = None) -> tuple[ProbeReport, Path]:
    """Runs the probes; returns the report and the folder holding probes.json and the PNGs."""
    task = get_task(config.task)
    if task.kind != "fgvr":
        raise UserError(
            f"--task {task.key}: representation probes take an image-classification task "
            f"({', '.join(FGVR_TASKS)})"
        )
    check_model(config)
    now = datetime.now(UTC)
    run_id = new_run_id(config, task, now)
    out = config.out or harness_home() / "probes" / run_id
    clear_report(out)
    data = read_probe_data(config, task, out)
    extractor, info = load_extractor(config, task)
    extract(extractor, data, config.batch_size)
    report: ProbeReport = {
        "schema_version": PROBE_SCHEMA_VERSION,
        "run_id": run_id,
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
        "identity": identity.computation_key(
            replace(
                extractor.identity,
                data=data.fingerprint,
                protocol=f"{extractor.identity.protocol}|probe:{config.recipe}",
            )
        ),
        "train_test_overlap": [list(pair) for pair in data.overlap],
        "probe_recipe": config.recipe,
        "linear": {},
        "knowledge": {},
        "knowledge_left_out": data.descriptions.left_out if data.descriptions else [],
        "alignment": {},
        "distances": {},
        "tsne": {},
        "tsne_points": {},
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
    """Descriptions written by `--describe-llm`, saved as `descriptions.json` in the report folder (the
    format --descriptions reads), and kept under $HARNESS_HOME/descriptions by the request (LLM spec,
    task, count, class names) so that probing again, into any folder, asks the LLM nothing."""
    from harness.llm.chat import load_chat_backend
    from harness.probes.descriptions import describe_classes, read_descriptions

    request = [config.describe_llm, task.singular, config.descriptions_per_class, class_names]
    cached = (
        harness_home()
        / "descriptions"
        / f"{hashlib.sha256(json.dumps(request).encode()).hexdigest()[:24]}.json"
    )
    if cached.is_file():
        descriptions = read_descriptions(cached, class_names)
    else:
        backend = load_chat_backend(config.describe_llm)
        descriptions = describe_classes(backend, class_names, task.singular, config.descriptions_per_class)
        if not any(descriptions.values()):  # never kept, so the next run asks again
            raise UserError(
                f"--describe-llm {config.describe_llm} wrote no usable description (sentences of 20 "
                "characters or more, one per line) for any class; try another LLM"
            )
        write_json_atomic(cached, descriptions)
    write_json_atomic(out / "descriptions.json", descriptions)
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
) -> tuple[str, TsnePoints]:
    """The view's t-SNE PNG (its file name) and the coordinates it was drawn from."""
    from harness.probes.tsne import draw_tsne, save_png_atomic, tsne_points

    present = sorted(set(int(label) for label in labels))
    classes = present[: config.tsne_classes]
    title = f"{config.model} on {task.key}: {view} features, {len(classes)} classes"
    file_name = f"tsne_{view}.png"
    points = tsne_points(image_x, labels, name_x, names, classes, config.seed)
    save_png_atomic(draw_tsne(points, title), Path(out) / file_name)
    return file_name, points


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
    recipe = PROBE_RECIPES[report.get("probe_recipe", "harness")]
    lines = [
        f"{report['model']} on {report['task']}: {report['n_train']} train / {report['n_test']} test images, "
        f"{report['n_classes']} classes",
        f"linear probe recipe {recipe.name} ({selection_label(report)}): {recipe.description}",
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


def selection_label(report: ProbeReport) -> str:
    """How the image linear probe's figures were selected: "test-selected" (VLMClassifier's recipe:
    the best test accuracy over epochs, optimistic) or "validation-selected" (ours)."""
    chosen = {result.get("selected_on", "validation") for result in report["linear"].values()}
    return "test-selected" if "test" in chosen else "validation-selected"
