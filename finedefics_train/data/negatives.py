"""Hard negatives for every training image: the three incorrect categories most similar to it by CLIP
image-text similarity (the evaluation side's miner, tasks/clip_miner.py, and its embedding cache), or
three seeded random ones (the paper's "simple negatives", Table 6a); then, for each negative category,
one training image of it (seeded) whose description serves as the negative description."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit, TestItem

N_NEGATIVES = 3


def clip_negative_labels(
    split: DatasetSplit, clip_model: str, *, cache_dir: Path | None = None, n: int = N_NEGATIVES
) -> list[list[int]]:
    """Per item of `split`: the `n` incorrect labels whose text embedding is most similar, best first."""
    from tasks.clip_miner import ChoiceMiner, load_encoder

    _check_classes(split, n)
    miner = ChoiceMiner(load_encoder(clip_model), cache_dir=cache_dir)
    # The miner returns the top n+1 labels with the true one forced in: without it, the top n incorrect.
    return [
        [label for label in labels if label != item.label][:n] for item, _, labels in miner.mine(split, n + 1)
    ]


def random_negative_labels(
    split: DatasetSplit, seed: int, *, n: int = N_NEGATIVES, labels: Sequence[int] | None = None
) -> list[list[int]]:
    """Per item of `split`: `n` seeded random incorrect labels among `labels` (default: every class), the
    classes that have a training image with a description."""
    _check_classes(split, n)
    labels = range(split.n_classes) if labels is None else list(labels)
    if len(labels) < n + 1:
        raise UserError(
            f"{split.root}: only {len(labels)} of {split.n_classes} classes have a training image with a "
            f"description, but {n} negative categories per image need {n + 1}; describe more classes (a "
            "larger --limit, a source with train images of more classes, or fewer failed requests)"
        )
    return [
        random.Random(f"{seed}:negatives:{split.task}/{item.key}").sample(
            [x for x in labels if x != item.label], n
        )
        for item in split.items
    ]


def pick_negative_image(
    item: TestItem, task: str, label: int, candidates: Sequence[TestItem], seed: int
) -> TestItem | None:
    """One training image of category `label` among `candidates` (those with a description), seeded per
    (image, negative label); None when the category has none."""
    if not candidates:
        return None
    return random.Random(f"{seed}:negative-image:{task}/{item.key}:{label}").choice(list(candidates))


def _check_classes(split: DatasetSplit, n: int) -> None:
    if split.n_classes < n + 1:
        raise UserError(
            f"{split.root}: {split.n_classes} classes, but {n} negative categories per image need {n + 1}"
        )
