from pathlib import Path

import pytest

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.options import (
    all_class_questions,
    check_k,
    fixed_option_questions,
    random_negative_questions,
    variant_k,
)


def _split(n_classes=10, per_class=3) -> DatasetSplit:
    items = [
        TestItem(Path(f"/data/images/{c}/{i}.jpg"), c, f"images/{c}/{i}.jpg")
        for c in range(n_classes)
        for i in range(per_class)
    ]
    return DatasetSplit("bird200", "test", Path("/data"), [f"class_{c}" for c in range(n_classes)], items)


def test_random_negatives_are_seeded_and_contain_the_truth():
    split = _split()
    first = random_negative_questions(split, k=4, seed=7)
    again = random_negative_questions(split, k=4, seed=7)
    other = random_negative_questions(split, k=4, seed=8)
    assert first == again
    assert first != other
    for q in first:
        assert len(set(q.options)) == 4
        assert q.option_labels[q.answer_index] == q.item.label
        assert q.options[q.answer_index] == split.class_names[q.item.label]


def test_question_does_not_depend_on_which_items_are_processed():
    split = _split()
    full = {q.item.key: q for q in random_negative_questions(split, k=5, seed=1)}
    subset = DatasetSplit(split.task, split.format, split.root, split.class_names, split.items[::-1][:7])
    for q in random_negative_questions(subset, k=5, seed=1):
        assert full[q.item.key] == q


def test_answer_position_is_spread_over_letters():
    positions = {q.answer_index for q in random_negative_questions(_split(per_class=5), k=4, seed=0)}
    assert positions == {0, 1, 2, 3}


def test_fixed_options_keep_their_names_and_get_a_seeded_order():
    split = _split()
    item = split.items[4]  # label 1
    names = ["class_1", "class_2", "class_3", "class_4"]
    (q,) = fixed_option_questions([(item, names, [1, 2, 3, 4])], seed=3)
    assert sorted(q.options) == names
    assert q.options[q.answer_index] == "class_1"
    assert fixed_option_questions([(item, names, [1, 2, 3, 4])], seed=3)[0] == q


def test_all_classes_and_bad_k():
    split = _split(n_classes=6, per_class=1)
    assert all(len(q.options) == 6 for q in all_class_questions(split, seed=0))
    with pytest.raises(UserError, match="--variant k7 needs between 2 and 6 options"):
        random_negative_questions(split, k=7, seed=0)
    with pytest.raises(UserError, match="--variant k1 needs between 2 and 6"):
        check_k(1, split)
    check_k(6, split)


def test_variant_k_parses_only_kN():
    assert [variant_k(v) for v in ("k4", "k20", "all", "open", "k", "4", "k4_circular")] == [
        4,
        20,
        None,
        None,
        None,
        None,
        None,
    ]
