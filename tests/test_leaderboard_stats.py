"""The leaderboard's statistics against direct computations: the paired bootstrap against resampling
question indices with numpy, McNemar's exact p against scipy's binomial test, Newcombe's interval
against its formula, the derived intervals of the paper's rows, and the position-bias flag (a
Finedefics-on-Stanford-Cars-shaped run: 23.9% right, the answers piled on D)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, chisquare

from leaderboard import stats
from leaderboard.table import BIAS, TIED, leaderboard_table


def outcomes(rng: np.random.Generator, n: int, p: float) -> dict[int, bool]:
    return {q: bool(v) for q, v in enumerate(rng.random(n) < p)}


def test_paired_bootstrap_matches_resampling_question_indices():
    rng = np.random.default_rng(5)
    a, b = outcomes(rng, 600, 0.62), outcomes(rng, 600, 0.55)
    ours = stats.paired_difference(a, b, iters=20_000, seed=3)
    # the direct computation: resample question indices, difference of the two accuracies per resample
    x = np.array([a[q] for q in range(600)], float)
    y = np.array([b[q] for q in range(600)], float)
    draws = np.random.default_rng(11).integers(0, 600, size=(20_000, 600))
    direct = x[draws].mean(axis=1) - y[draws].mean(axis=1)
    low, high = np.quantile(direct, [0.025, 0.975])
    assert ours.difference == pytest.approx(x.mean() - y.mean())
    assert (ours.low, ours.high) == pytest.approx((low, high), abs=0.004)  # Monte Carlo error only
    assert ours.n == 600 and ours.a_only - ours.b_only == round(600 * ours.difference)


def test_mcnemar_exact_p_is_the_binomial_test_of_the_discordant_questions():
    a = {q: q % 3 != 0 for q in range(90)}
    b = {q: q % 5 != 0 for q in range(90)}
    n, a_only, b_only = stats.discordant(a, b)
    assert n == 90 and (a_only, b_only) == (
        sum(1 for q in range(90) if q % 5 == 0 and q % 3),
        sum(1 for q in range(90) if q % 3 == 0 and q % 5),
    )
    expected = binomtest(a_only, a_only + b_only, 0.5, alternative="two-sided").pvalue
    assert stats.paired_difference(a, b).p_value == pytest.approx(expected)
    assert stats.mcnemar_exact_p(0, 0) == 1.0


def test_only_shared_questions_are_compared():
    a = {0: True, 1: True, 2: False, 7: True}
    b = {0: False, 1: True, 2: False, 9: False}
    difference = stats.paired_difference(a, b)
    assert difference.n == 3 and difference.difference == pytest.approx(1 / 3)


def test_identical_models_are_tied_and_a_clear_gap_is_not():
    rng = np.random.default_rng(0)
    a = outcomes(rng, 2000, 0.6)
    assert stats.paired_difference(a, a).tied
    worse = {q: right and q % 4 != 0 for q, right in a.items()}  # a quarter of A's right answers lost
    gap = stats.paired_difference(a, worse)
    assert not gap.tied and gap.low > 0


def test_average_difference_resamples_each_dataset():
    rng = np.random.default_rng(2)
    pairs = [
        (outcomes(rng, 400, 0.7), outcomes(rng, 400, 0.6)),
        (outcomes(rng, 300, 0.5), outcomes(rng, 300, 0.5)),
    ]
    average = stats.paired_average_difference(pairs, iters=20_000)
    singles = [stats.paired_difference(a, b) for a, b in pairs]
    assert average.difference == pytest.approx(np.mean([d.difference for d in singles]))
    # independent datasets: the variance of the mean is the mean of the variances over 2^2
    half_widths = [(d.high - d.low) / 2 for d in singles]
    expected = np.sqrt(sum(w**2 for w in half_widths)) / 2
    assert (average.high - average.low) / 2 == pytest.approx(expected, rel=0.1)


def test_newcombe_interval_follows_its_formula():
    from harness.core.stats import accuracy_ci95

    (l1, u1), (l2, u2) = accuracy_ci95(470, 1000), accuracy_ci95(420, 1000)
    difference = stats.newcombe_difference(0.47, (l1, u1), 0.42, (l2, u2))
    assert difference.low == pytest.approx(0.05 - np.hypot(0.47 - l1, u2 - 0.42))
    assert difference.high == pytest.approx(0.05 + np.hypot(u1 - 0.47, 0.42 - l2))
    assert difference.method.startswith("Newcombe") and not difference.tied  # 5 points on 1000 each: no
    assert stats.newcombe_difference(0.47, (l1, u1), 0.46, accuracy_ci95(460, 1000)).tied


def letter_bias(answered: list[int], gold: list[int]) -> dict:
    total = sum(gold)
    return {
        letter: {"answered": a, "answered_share": a / total, "gold": g, "gold_share": g / total}
        for letter, a, g in zip("ABCD", answered, gold)
    }


# The shape of the authors' released Finedefics result on Stanford Cars (23.9% right, 8,041 questions):
# most answers are D while the right answers are spread evenly over the four letters.
CARS_PILED_ON_D = letter_bias([402, 338, 563, 6738], [2010, 2011, 2010, 2010])
BALANCED = letter_bias([1460, 1441, 1452, 1441], [1449, 1448, 1449, 1448])


def test_position_bias_flags_answers_piled_on_one_letter():
    test = stats.position_bias_test(CARS_PILED_ON_D)
    observed = np.array([402, 338, 563, 6738])
    chi2, p = chisquare(observed, np.array([2010, 2011, 2010, 2010]) / 8041 * observed.sum())
    assert test.chi2 == pytest.approx(chi2) and test.p_value == pytest.approx(p)
    assert test.flagged and test.top_letter == "D" and test.departure > 0.5
    assert test.describe().startswith("D 84% of answers (right 25%)")
    balanced = stats.position_bias_test(BALANCED)
    assert not balanced.flagged and balanced.p_value > 0.05


def test_a_significant_but_small_preference_is_not_flagged():
    """With thousands of questions a 3-point preference is significant; the flag also asks for 10 points."""
    slight = stats.position_bias_test(letter_bias([2250, 1950, 1950, 1850], [2000, 2000, 2000, 2000]))
    assert slight.p_value < stats.BIAS_ALPHA and not slight.flagged


def results_frame(rows: list[dict]) -> pd.DataFrame:
    base = {"display_name": None, "family": "f", "params_b": 7.0, "hidden": False, "variant": "k4",
            "sample_limit": None, "created": pd.Timestamp("2025-01-01", tz="UTC"), "scoring": "generate",
            "source": "reproduced", "protocol": "harness", "task": "bird200"}  # fmt: skip
    return pd.DataFrame([{**base, "display_name": row["model"], **row} for row in rows])


def test_table_marks_ties_with_each_columns_leader_and_flagged_bias():
    rng = np.random.default_rng(4)
    leader = outcomes(rng, 1000, 0.62)
    close = {q: r if q % 50 else not r for q, r in leader.items()}  # 20 answers flipped: within noise
    far = {q: r and q % 3 != 0 for q, r in leader.items()}
    correctness = {"lead": leader, "close": close, "far": far}
    from harness.core.stats import accuracy_ci95

    rows = []
    for key, answers in correctness.items():
        low, high = accuracy_ci95(sum(answers.values()), 1000)
        rows.append({"key": key, "model": key, "accuracy": np.mean(list(answers.values())), "n": 1000,
                     "ci_low": low, "ci_high": high})  # fmt: skip
    # a paper row without outcomes: the unpaired interval decides
    paper = min(row["accuracy"] for row in rows[:2]) - 0.01
    low, high = accuracy_ci95(round(paper * 5794), 5794)
    rows.append({"key": "paper", "model": "paper", "source": "reported", "scoring": "paper", "protocol": "foci", "accuracy": paper,
                 "n": 5794, "ci_low": low, "ci_high": high})  # fmt: skip
    table = leaderboard_table(
        results_frame(rows),
        correctness=correctness,
        biases={"far": stats.position_bias_test(CARS_PILED_ON_D)},
    ).set_index("Model ID")
    best, runner_up = sorted(["lead", "close"], key=lambda key: -np.mean(list(correctness[key].values())))
    assert table.loc[best, TIED] == ""  # the leader itself
    assert table.loc[runner_up, TIED] == "Bird-200" and table.loc["far", TIED] == ""
    assert table.loc["paper", TIED] == "Bird-200"  # unpaired: 1 point below, 5,794 against 1,000
    # the same close model without per-question outcomes: the (wider) unpaired interval, still tied
    unpaired = leaderboard_table(results_frame(rows), correctness={}).set_index("Model ID")
    assert unpaired.loc[runner_up, TIED] == "Bird-200"
    assert table.loc["far", BIAS].startswith("Bird-200: D 84%") and table.loc[runner_up, BIAS] == ""


def test_paper_rows_get_intervals_derived_from_the_test_sizes(store):
    from harness.core.stats import accuracy_ci95
    from tasks.registry import TASKS

    _, rows = store.model_info("finedefics")
    by_task = {row["task"]: row for row in rows if row["source"] == "reported"}
    published = {
        "bird200": 5794,
        "car196": 8041,
        "dog120": 8580,
        "flower102": 6149,
        "pet37": 3669,
        "aircraft102": 3333,
    }
    for task, n in published.items():
        assert TASKS[task].n_test == n  # the sizes the paper's test sets have
        row = by_task[task]
        assert row["n"] == n
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(accuracy_ci95(round(row["accuracy"] * n), n))
