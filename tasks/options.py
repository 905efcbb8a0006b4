"""Answer candidates for each test image, in a seeded order.

Option sources: a FOCI/Finedefics choice file (the paper's CLIP-mined hard negatives), or seeded
random negatives among the dataset's classes. Either way the order of the options is shuffled with
a generator seeded by (seed, image key), so the same seed gives the same questions whatever
subset or order the items are processed in (FOCI shuffles without a seed).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit, TestItem

_VARIANT_K = re.compile(r"^k(\d+)$")


def variant_k(variant: str) -> int | None:
    """Options per question of a `--variant kN` ("k4" -> 4); None for "all", "open" or anything else."""
    match = _VARIANT_K.match(variant)
    return int(match.group(1)) if match else None


def check_k(k: int, split: DatasetSplit) -> None:
    """k options per question need 2 <= k <= the number of classes of the split."""
    if not 2 <= k <= split.n_classes:
        raise UserError(
            f"--variant k{k} needs between 2 and {split.n_classes} options: "
            f"{split.root} has {split.n_classes} {split.task} classes"
        )


@dataclass(frozen=True)
class Question:
    item: TestItem
    options: tuple[str, ...]  # names shown to the model, in presentation order
    option_labels: tuple[int, ...]  # dataset label of each option
    answer_index: int  # position of the true class among the options


def _rng(seed: int, item: TestItem) -> random.Random:
    return random.Random(f"{seed}:{item.key}")


def order_options(item: TestItem, names: Sequence[str], labels: Sequence[int], seed: int) -> Question:
    """Shuffle (names, labels) with the item's seeded generator; the true label must be among them."""
    order = list(range(len(names)))
    _rng(seed, item).shuffle(order)
    shuffled_labels = tuple(labels[i] for i in order)
    return Question(
        item=item,
        options=tuple(names[i] for i in order),
        option_labels=shuffled_labels,
        answer_index=shuffled_labels.index(item.label),
    )


def random_negative_questions(split: DatasetSplit, k: int, seed: int) -> list[Question]:
    """k options per image: the true class plus k-1 classes drawn uniformly from the others."""
    check_k(k, split)
    questions = []
    for item in split.items:
        others = [label for label in range(split.n_classes) if label != item.label]
        labels = [item.label, *_rng(seed + 1, item).sample(others, k - 1)]
        questions.append(order_options(item, [split.class_names[i] for i in labels], labels, seed))
    return questions


def all_class_questions(split: DatasetSplit, seed: int) -> list[Question]:
    """Every class is an option (the label-set-size sweep's upper end)."""
    labels = list(range(split.n_classes))
    return [order_options(item, split.class_names, labels, seed) for item in split.items]


def fixed_option_questions(
    matched: Iterable[tuple[TestItem, Sequence[str], Sequence[int]]], seed: int
) -> list[Question]:
    """Questions whose option names and labels come from elsewhere (a choice file, a CLIP miner)."""
    return [order_options(item, names, labels, seed) for item, names, labels in matched]


def rotations(question: Question) -> list[Question]:
    """The question asked once per rotation of its options (circular evaluation)."""
    k = len(question.options)
    rotated = []
    for shift in range(k):
        order = [(i + shift) % k for i in range(k)]
        labels = tuple(question.option_labels[i] for i in order)
        rotated.append(
            Question(
                question.item,
                tuple(question.options[i] for i in order),
                labels,
                labels.index(question.item.label),
            )
        )
    return rotated


def open_world_questions(split: DatasetSplit) -> list[Question]:
    """No options: the model has to name the class."""
    return [Question(item, (), (), -1) for item in split.items]
