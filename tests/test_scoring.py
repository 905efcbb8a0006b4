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
