"""Run-level metrics from the scored rows of a run (`tasks.scoring.RowScore`): accuracy with its
binomial interval, the lenient parser's accuracy, unparseable answers and failed requests, per-class
accuracy, the most frequent confusions and the position bias of the answers.

Accuracies count questions (`tasks.scoring.per_question`: a circular question is right only if every
rotation is); unparseable answers, errors and the position bias count rows (requests)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from harness.core.results import Confusion, LetterBias
from harness.core.stats import ACCURACY_CI_METHOD, accuracy_ci95
from tasks.scoring import LETTERS, RowScore, by_question, per_question


def _class(names: Mapping[int, str], label: int | None) -> str | None:
    return None if label is None else names.get(label, f"label {label}")


def per_class_accuracy(
    questions: Sequence[Sequence[RowScore]], right: Mapping[int, bool], names: Mapping[int, str]
) -> dict[str, float]:
    hits: dict[str, list[bool]] = defaultdict(list)
    for rows in questions:
        hits[_class(names, rows[0].label)].append(right[rows[0].question])
    return {name: sum(values) / len(values) for name, values in sorted(hits.items())}


def top_confusions(
    questions: Sequence[Sequence[RowScore]], names: Mapping[int, str], limit: int = 20
) -> list[Confusion]:
    """(true class, predicted class) of each wrong question's first wrong parseable answer."""
    pairs: Counter[tuple[str, str]] = Counter()
    for rows in questions:
        wrong = next((row for row in rows if not row.correct), None)
        if wrong is not None and wrong.predicted_label is not None and wrong.predicted_label != wrong.label:
            pairs[(_class(names, wrong.label), _class(names, wrong.predicted_label))] += 1
    return [{"true": t, "predicted": p, "count": n} for (t, p), n in pairs.most_common(limit)]


def position_bias(rows: Sequence[RowScore]) -> dict[str, LetterBias]:
    """Per option letter: how often it was answered and how often it was the right answer (over rows
    with options; an unbiased model answers each letter about as often as it is right)."""
    with_options = [row for row in rows if row.n_options]
    if not with_options:
        return {}
    answered = Counter(row.predicted for row in with_options if row.predicted is not None)
    gold = Counter(row.gold for row in with_options)
    n = len(with_options)
    width = max(row.n_options for row in with_options)
    return {
        (LETTERS[i] if i < len(LETTERS) else str(i + 1)): {
            "answered": answered[i],
            "answered_share": answered[i] / n,
            "gold": gold[i],
            "gold_share": gold[i] / n,
        }
        for i in range(width)
    }


def summarise(rows: Sequence[RowScore], names: Mapping[int, str]) -> dict:
    """The metric fields of a RunSummary; `names` maps dataset labels to class names."""
    right = per_question((row.question, row.correct) for row in rows)
    n, correct = len(right), sum(right.values())
    lenient = bool(rows) and all(row.lenient for row in rows)
    robust = per_question((row.question, row.robust_correct) for row in rows) if lenient else {}
    questions = by_question(rows)
    return {
        "n": n,
        "n_rows": len(rows),
        "n_correct": correct,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci95": accuracy_ci95(correct, n),
        "accuracy_ci_method": ACCURACY_CI_METHOD,
        "robust_accuracy": sum(robust.values()) / len(robust) if robust else None,
        "unparseable": sum(row.unparseable for row in rows),
        "errors": sum(row.failed for row in rows),
        "position_bias": position_bias(rows),
        "per_class_accuracy": per_class_accuracy(questions, right, names),
        "confusions": top_confusions(questions, names),
    }
