import math

import pytest

from harness.core.requests import FAILED_GENERATION, FAILED_NLL
from harness.core.stats import accuracy_ci95
from harness.metrics import summarise
from tasks.scoring import loglik_choice, paper_letter, question_accuracy, robust_letter, score_row

OPTIONS = ["Laysan_Albatross", "Sooty_Albatross", "Heermann_Gull", "Black_footed_Albatross"]


@pytest.mark.parametrize(
    ("answer", "paper", "robust"),
    [
        ("B", "B", "B"),
        ("B.", "B", "B"),
        (" c) Heermann Gull", "C", "C"),
        ("(C)", None, "C"),
        (
            "Answer: D",
            "A",
            "D",
        ),  # the paper's rule reads the first letter: a known weakness, kept for comparability
        ("The answer is (C).", None, "C"),
        ("the answer is a sooty albatross", None, "B"),
        ("Sooty Albatross", None, "B"),
        ("b", "B", "B"),
        ("a bird", "A", None),
        ("", None, None),
        ("E", None, None),
        ("Laysan albatross.", None, "A"),
        ("Albatross", "A", None),  # names three options: ambiguous for the robust parser
    ],
)
def test_answer_parsers(answer, paper, robust):
    assert paper_letter(answer, 4) == paper
    assert robust_letter(answer, OPTIONS) == robust


def test_score_row_counts_unparseable_answers_and_failed_requests():
    doc = {"group": 3, "label": 7, "options": OPTIONS, "option_labels": [4, 7, 9, 2], "answer_index": 1}
    right = score_row(doc, ["B"], "generate")
    assert (right.correct, right.robust_correct, right.unparseable, right.failed) == (
        True,
        True,
        False,
        False,
    )
    assert right.predicted_label == 7 and right.question == 3
    assert right.metrics() == {
        "accuracy": {"score": 1.0, "question": 3},
        "robust_accuracy": {"score": 1.0, "question": 3},
        "unparseable": 0,
        "errors": 0,
    }
    lenient = score_row(doc, ["(B)"], "generate")
    assert (lenient.correct, lenient.robust_correct, lenient.unparseable) == (False, True, True)
    failed = score_row(doc, [FAILED_GENERATION], "generate")
    assert (failed.correct, failed.unparseable, failed.metrics()["errors"]) == (False, False, 1)
    loglik = score_row(doc, [(3.0, False), (0.2, True), (5.0, False), (4.0, False)], "loglik")
    assert loglik.correct and loglik.predicted == 1 and "unparseable" not in loglik.metrics()
    broken = score_row(doc, [(3.0, False), (FAILED_NLL, False), (5.0, False), (4.0, False)], "loglik")
    assert broken.failed and broken.predicted is None and broken.metrics()["errors"] == 1
    open_world = score_row(
        {"label": 1, "class_names": ["Laysan Albatross", "Sooty Albatross"]}, ["a sooty albatross"], "open"
    )
    assert open_world.correct and open_world.n_options == 0


def test_loglik_choice_takes_lowest_negative_loglikelihood():
    assert loglik_choice([3.2, 0.5, 7.0, 0.5]) == 1
    assert loglik_choice([1.0]) == 0


def _display_name_question(answer_index: int) -> dict:
    """A prepared row from a choice file whose names differ from CUB's only in form."""
    others = iter(["Laysan Albatross", "Sooty Albatross", "Heermann Gull"])
    options = ["Black footed Albatross" if i == answer_index else next(others) for i in range(4)]
    labels = [0 if i == answer_index else 10 + i for i in range(4)]
    return {
        "group": 0,
        "rotation": 0,
        "options": options,
        "option_labels": labels,
        "answer_index": answer_index,
        "label": 0,
        "class_name": "Black_footed_Albatross",
        "class_names": [],
    }


def test_summary_compares_option_indices_not_names():
    """Bug: the summary compared the option's display name with the dataset's class name."""
    question = _display_name_question(2)
    names = {0: "Black_footed_Albatross", 11: "Laysan_Albatross"}
    loglik = [(5.0, False), (4.0, False), (0.5, True), (3.0, False)]
    for kind, responses in (("loglik", loglik), ("generate", ["C"])):
        summary = summarise([score_row(question, responses, kind)], names)
        assert summary["accuracy"] == 1.0, kind
        assert summary["per_class_accuracy"] == {"Black_footed_Albatross": 1.0}
    wrong = summarise([score_row(question, ["B"], "generate")], names)
    assert wrong["accuracy"] == 0.0
    assert wrong["confusions"] == [
        {"true": "Black_footed_Albatross", "predicted": "Laysan_Albatross", "count": 1}
    ]


def test_a_circular_question_is_right_only_if_every_rotation_is():
    def row(question, correct):
        doc = {"group": question, "label": 0, "options": OPTIONS, "answer_index": 0}
        return score_row(doc, ["A" if correct else "B"], "generate")

    rows = [row(0, True), row(0, True), row(1, True), row(1, False), row(2, False), row(2, False)]
    summary = summarise(rows, {})
    assert (summary["n"], summary["n_rows"], summary["n_correct"]) == (3, 6, 1)
    # lmms-eval's aggregation of the hooks' per-row metrics gives the same number
    assert question_accuracy(r.metrics()["accuracy"] for r in rows) == summary["accuracy"] == 1 / 3


def test_position_bias_counts_answered_and_right_letters():
    docs = [
        {"group": i, "label": 0, "options": OPTIONS, "answer_index": gold}
        for i, gold in enumerate([0, 1, 2, 3, 1])
    ]
    answers = ["A", "A", "A", "D", "nothing"]
    bias = summarise([score_row(d, [a], "generate") for d, a in zip(docs, answers)], {})["position_bias"]
    assert bias["A"] == {"answered": 3, "answered_share": 0.6, "gold": 1, "gold_share": 0.2}
    assert bias["B"] == {"answered": 0, "answered_share": 0.0, "gold": 2, "gold_share": 0.4}
    assert bias["D"]["answered"] == 1 and sum(b["answered"] for b in bias.values()) == 4  # one unparseable


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (1187, 5794)])
def test_accuracy_interval_is_wilsons(k, n):
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = accuracy_ci95(k, n)
    assert low == pytest.approx(max(0.0, centre - half), abs=1e-9)
    assert high == pytest.approx(min(1.0, centre + half), abs=1e-9)
    assert accuracy_ci95(0, 0) is None
