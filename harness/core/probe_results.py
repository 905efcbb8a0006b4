"""The probes contract: `probes.json`, written by `harness probe repr` and read by the leaderboard.

One `ProbeReport` per (model, task) probe run. Results are keyed by feature view: "last" (the
language model's last-token hidden state), "avg" (its token mean) or "embed" (a CLIP/SigLIP
embedding). Accuracies and cosines are fractions; t-SNE figures are PNG files next to probes.json,
and their coordinates are recorded in it (`tsne_points`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NotRequired, TypedDict

from harness.core.results import Provenance

PROBE_SCHEMA_VERSION = 1
PROBES_FILE = "probes.json"


class LinearProbeResult(TypedDict):
    accuracy: float
    accuracy_ci95: tuple[float, float]
    chance: float
    n_train: int
    n_val: int  # carved from train to choose weight_decay and epochs
    n_test: int
    n_classes: int
    weight_decay: float
    epochs: int
    val_accuracy: float | None
    selection: str
    selected_on: NotRequired[str]  # "validation" (ours; absent in older reports) or "test" (VLMClassifier's)


class AlignmentResult(TypedDict):
    mean_cosine: float  # mean over classes of the per-class mean image-name cosine
    per_class: dict[str, float]


class DistanceResult(TypedDict):
    inter_class_distance: float | None  # mean distance between class centroids (L2-normalised features)
    intra_class_variance: float | None  # mean squared distance of members to their centroid
    n_classes: int
    n: int


class Discriminability(TypedDict):
    objects: DistanceResult  # test images
    categories: DistanceResult  # category names, one point each (no intra-class variance)
    descriptions: DistanceResult | None  # category descriptions, when given


class TsnePoints(TypedDict):
    """One view's t-SNE coordinates (as drawn in its PNG): [x, y, k] per point, k indexing `classes`."""

    classes: list[str]  # the class names plotted (the first --tsne-classes present in the test split)
    images: list[list[float]]  # one per test image of those classes
    names: list[list[float]]  # one per class name, in the order of `classes`


class ProbeReport(TypedDict):
    schema_version: int
    run_id: str
    created: str  # ISO 8601, UTC
    model: str  # registry name, or "clip:SPEC"
    model_args: dict[str, str]
    pretrained: str
    model_revision: str | None
    task: str
    data_root: str
    train_split: str | None  # how the train split was read ("reader", "cub train_test_split.txt")
    prompt: str | None  # the image question whose hidden states are the features (MLLMs)
    views: list[str]
    descriptions_source: str | None  # the --descriptions file or the --describe-llm spec
    n_classes: int
    n_train: int
    n_test: int
    seed: int
    identity: NotRequired[str]  # harness.core.identity.computation_key: weights, model-args, data, recipe
    train_test_overlap: NotRequired[
        list[list[str]]
    ]  # [test key, train key] with equal pixels (--allow-overlap)
    probe_recipe: NotRequired[str]  # harness.probes.representation.PROBE_RECIPES; absent: "harness"
    linear: dict[str, LinearProbeResult]
    knowledge: dict[str, LinearProbeResult]
    knowledge_left_out: list[str]  # classes with fewer than two descriptions
    alignment: dict[str, AlignmentResult]
    distances: dict[str, Discriminability]
    tsne: dict[str, str]  # view -> PNG file name in the report folder
    tsne_points: NotRequired[dict[str, TsnePoints]]  # view -> its coordinates; absent in older reports
    provenance: Provenance


def load_probe_report(path: Path) -> ProbeReport:
    """Read probes.json (the file or its folder) and check its schema version."""
    path = Path(path)
    if path.is_dir():
        path = path / PROBES_FILE
    data = json.loads(path.read_text())
    if data.get("schema_version") != PROBE_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {data.get('schema_version')!r}, expected {PROBE_SCHEMA_VERSION}"
        )
    return data
