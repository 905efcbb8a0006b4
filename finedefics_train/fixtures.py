"""Synthetic Finedefics training data in the real on-disk schema, for tests and `harness train demo`.

`make_training_data(root)` draws a CUB-200-2011-layout dataset (tasks/fixtures/datasets.py: each
class has its own colour and shape), keeps its test split for evaluation through `harness run`, and
turns its TRAIN split into the `stage1/` and `stage2/` datasets and `manifest.json` that
`harness train data` writes (schema: `finedefics_train.training_data`). Attribute descriptions are
templates from each class's colour and shape (the class name is never in them); hard negatives are
the classes nearest in hue, each with one training image of its own.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from finedefics_train.training_data import mcq_row
from harness.core.io import write_json_atomic
from tasks.fixtures.datasets import make_cub
from tasks.prompts import open_question_for, question_for

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
HUES = ((0.04, "red"), (0.11, "orange"), (0.18, "yellow"), (0.45, "green"), (0.55, "cyan"),
        (0.70, "blue"), (0.80, "purple"), (0.93, "pink"), (1.01, "red"))  # fmt: skip
SUPERCLASS, SINGULAR, NOUN = "bird", "bird", "birds"
N_NEGATIVES = 3


@dataclass(frozen=True)
class SyntheticTrainingData:
    root: Path
    dataset: Path  # the CUB_200_2011 folder (its test split is the held-out evaluation set)
    data_dir: Path  # holds stage1/, stage2/, manifest.json
    class_names: list[str]


def class_hue(label: int) -> float:
    return (label * 0.618034) % 1.0  # as tasks.fixtures.datasets.draw_class_image


def describe_class(label: int) -> str:
    """A five-sentence description from the class's colour and shape; never names the class."""
    colour = next(name for bound, name in HUES if class_hue(label) < bound)
    shape = SHAPES[label % len(SHAPES)]
    return (
        f"The object is a {colour} {shape}. Its colour is a saturated {colour}. Its outline is a {shape}. "
        f"It sits near the centre of the picture. The background is a light grey noise."
    )


def nearest_classes(label: int, n_classes: int, k: int) -> list[int]:
    """The k other classes closest in hue (ties by label): the synthetic stand-in for CLIP negatives."""

    def distance(other: int) -> tuple[float, int]:
        gap = abs(class_hue(label) - class_hue(other))
        return (min(gap, 1 - gap), other)

    return sorted((c for c in range(n_classes) if c != label), key=distance)[:k]


def read_cub_train(folder: Path) -> list[tuple[str, int]]:
    """(relative image path, 0-based label) of every training image of a CUB_200_2011 folder."""

    def table(name: str) -> dict[str, str]:
        rows = (line.split(maxsplit=1) for line in (folder / name).read_text().splitlines() if line.strip())
        return dict(rows)

    images, labels, split = (
        table("images.txt"),
        table("image_class_labels.txt"),
        table("train_test_split.txt"),
    )
    return [(f"images/{images[i]}", int(labels[i]) - 1) for i in images if split[i] == "1"]


def make_training_data(
    root: Path, n_classes: int = 8, per_class_train: int = 12, per_class_test: int = 4, seed: int = 0,
    open_fraction: float = 0.5,
) -> SyntheticTrainingData:  # fmt: skip
    from datasets import Dataset

    from tasks.datasets.cub import read_cub

    root = Path(root)
    dataset = make_cub(root / "source", n_classes, per_class_test, per_class_train, seed)
    class_names = read_cub(dataset).class_names
    train = read_cub_train(dataset)
    rng = random.Random(seed)
    by_class: dict[int, list[str]] = {}
    for path, label in train:
        by_class.setdefault(label, []).append(path)
    stage1, stage2 = [], []
    for path, label in train:
        image = {"bytes": (dataset / path).read_bytes(), "path": Path(path).name}
        negatives = nearest_classes(label, n_classes, N_NEGATIVES)
        stage1.append({
            "image": image, "image_id": path, "task": "bird200", "label": label, "category": class_names[label],
            "superclass": SUPERCLASS, "attribute": describe_class(label),
            "neg_categories": [class_names[c] for c in negatives],
            "neg_attributes": [describe_class(c) for c in negatives],
            "neg_image_ids": [rng.choice(by_class[c]) for c in negatives], "source": "synthetic-template",
        })  # fmt: skip
        stage2.append(stage2_row(image, path, label, class_names, negatives, rng, open_fraction))
    data_dir = root / "data"
    Dataset.from_list(stage1, features=_stage1_features()).save_to_disk(str(data_dir / "stage1"))
    Dataset.from_list(stage2, features=_stage2_features()).save_to_disk(str(data_dir / "stage2"))
    write_json_atomic(data_dir / "manifest.json", {
        "source": "finedefics_train.fixtures", "tasks": ["bird200"], "dataset": str(dataset), "seed": seed,
        "attributes": "synthetic-template", "negatives": "nearest-hue", "n_stage1": len(stage1),
        "n_stage2": len(stage2), "n_classes": n_classes,
    })  # fmt: skip
    return SyntheticTrainingData(root, dataset, data_dir, class_names)


def stage2_row(image, path, label, class_names, negatives, rng, open_fraction) -> dict:
    """Open-set QA (`open_fraction` of the rows), else a 4-option question in one of the two
    evaluation prompts: answered by letter (letter instruction) or by name (name instruction)."""
    truth = class_names[label]
    common = {"image": image, "image_id": path, "task": "bird200", "label": label, "category": truth}
    if rng.random() < open_fraction:
        return common | {
            "type": "open",
            "question": open_question_for(SINGULAR),
            "answer": truth,
            "options": [],
        }
    options = [truth, *(class_names[c] for c in negatives)]
    rng.shuffle(options)
    by_letter = rng.random() < 0.5
    return common | mcq_row(question_for(NOUN), options, options.index(truth), by_name=not by_letter)


def _stage1_features():
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features({
        "image": Image(), "image_id": text, "task": text, "label": Value("int64"), "category": text,
        "superclass": text, "attribute": text, "neg_categories": List(text), "neg_attributes": List(text),
        "neg_image_ids": List(text), "source": text,
    })  # fmt: skip


def _stage2_features():
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features({
        "image": Image(), "image_id": text, "task": text, "label": Value("int64"), "category": text,
        "type": text, "question": text, "answer": text, "options": List(text),
    })  # fmt: skip


def build_training_base(
    out_dir: Path, arch: str = "idefics2", head_scale: float = 40.0, seed: int = 0
) -> Path:
    """The tiny random `arch` checkpoint with its output layer scaled by `head_scale`.

    A tiny random model's lm_head (std 0.02 over 64 dims) caps its logits at a spread of about 0.2,
    so no answer can become likely and LM losses stall; scaled, LoRA alone can learn the answers
    while every base weight stays frozen. Reused when already built with the same settings."""
    import torch
    from transformers import AutoProcessor

    from models.fixtures.tiny_models import ARCHS, build_tiny_model

    out_dir = Path(out_dir)
    marker = {"arch": arch, "head_scale": head_scale, "seed": seed}
    if (out_dir / "training_base.json").is_file() and json.loads(
        (out_dir / "training_base.json").read_text()
    ) == marker:
        return out_dir
    plain = build_tiny_model(arch, out_dir.with_name(out_dir.name + "-plain"), seed=seed)
    model = ARCHS[arch].model_class.from_pretrained(plain)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(head_scale)
    model.save_pretrained(out_dir)
    AutoProcessor.from_pretrained(plain).save_pretrained(out_dir)
    write_json_atomic(out_dir / "training_base.json", marker)
    return out_dir


def held_out_images(data: SyntheticTrainingData) -> tuple[list, list[int]]:
    """The evaluation (test) split's images and labels: never seen in training."""
    from PIL import Image

    from tasks.datasets.cub import read_cub

    split = read_cub(data.dataset)
    return [Image.open(item.image).convert("RGB") for item in split.items], [
        item.label for item in split.items
    ]
