import pytest

from tasks.scoring import loglik_choice, paper_letter, robust_letter, score_generation

OPTIONS = ["Laysan_Albatross", "Sooty_Albatross", "Heermann_Gull", "Black_footed_Albatross"]


@pytest.mark.parametrize(
    ("answer", "paper", "robust"),
    [
        ("B", "B", "B"),
        ("B.", "B", "B"),
        (" c) Heermann Gull", "C", "C"),
        ("(C)", None, "C"),
        ("Answer: D", "A", "D"),  # the paper's rule reads the first letter: a known weakness, kept for comparability
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


def test_score_generation_counts_unparseable_and_errors():
    assert score_generation("B", OPTIONS, 1) == {"accuracy": 1.0, "robust_accuracy": 1.0, "unparseable": 0, "errors": 0, "predicted": "B"}
    assert score_generation("(B)", OPTIONS, 1)["accuracy"] == 0.0
    assert score_generation("(B)", OPTIONS, 1)["robust_accuracy"] == 1.0
    assert score_generation("(B)", OPTIONS, 1)["unparseable"] == 1
    missing = score_generation(None, OPTIONS, 1)
    assert missing["errors"] == 1 and missing["accuracy"] == 0.0


def test_loglik_choice_takes_lowest_negative_loglikelihood():
    assert loglik_choice([3.2, 0.5, 7.0, 0.5]) == 1
    assert loglik_choice([1.0]) == 0


def _display_name_question(answer_index: int) -> dict:
    """A prepared row from a choice file whose names differ from CUB's only in form."""
    others = iter(["Laysan Albatross", "Sooty Albatross", "Heermann Gull"])
    options = ["Black footed Albatross" if i == answer_index else next(others) for i in range(4)]
    labels = [0 if i == answer_index else 10 + i for i in range(4)]
    return {"group": 0, "rotation": 0, "options": options, "option_labels": labels, "answer_index": answer_index,
            "label": 0, "class_name": "Black_footed_Albatross", "class_names": []}


def test_summary_compares_option_indices_not_names():
    """Bug: the summary compared the option's display name with the dataset's class name."""
    from harness.metrics import summarise
    from harness.runner import outcomes_from_samples

    question = _display_name_question(2)
    loglik = {"doc_id": 0, "resps": [[[5.0, False]], [[4.0, False]], [[0.5, True]], [[3.0, False]]]}
    generated = {"doc_id": 0, "resps": [["C"]]}
    for scoring, sample in (("loglik", loglik), ("generate", generated)):
        summary = summarise(outcomes_from_samples([sample], [question], scoring))
        assert summary["accuracy"] == 1.0, scoring
        assert summary["per_class_accuracy"] == {"Black_footed_Albatross": 1.0}
