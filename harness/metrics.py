"""Run-level metrics computed from per-question outcomes: accuracy with a bootstrap CI,
per-class accuracy and the most frequent confusions."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.results import Confusion


@dataclass(frozen=True)
class Outcome:
    """One answered question: the true class, the predicted class (None: unparseable), whether the
    prediction is right (decided on option indices, never on names) and lenient correctness."""

    true_class: str
    predicted_class: str | None
    correct: bool
    robust_correct: bool | None = None  # generation only


def bootstrap_ci(correct: Sequence[bool], *, iterations: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean of 0/1 outcomes."""
    values = np.asarray(correct, dtype=np.float64)
    if values.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(iterations, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def per_class_accuracy(outcomes: Sequence[Outcome]) -> dict[str, float]:
    hits: dict[str, list[bool]] = defaultdict(list)
    for outcome in outcomes:
        hits[outcome.true_class].append(outcome.correct)
    return {name: sum(values) / len(values) for name, values in sorted(hits.items())}


def top_confusions(outcomes: Sequence[Outcome], limit: int = 20) -> list[Confusion]:
    pairs = Counter(
        (o.true_class, o.predicted_class) for o in outcomes if o.predicted_class is not None and not o.correct
    )
    return [{"true": t, "predicted": p, "count": n} for (t, p), n in pairs.most_common(limit)]


def summarise(outcomes: Sequence[Outcome], seed: int = 0) -> dict:
    correct = [o.correct for o in outcomes]
    robust = [o.robust_correct for o in outcomes if o.robust_correct is not None]
    return {
        "n": len(outcomes),
        "accuracy": float(np.mean(correct)) if correct else 0.0,
        "accuracy_ci95": bootstrap_ci(correct, seed=seed),
        "robust_accuracy": float(np.mean(robust)) if robust else None,
        "unparseable": sum(o.predicted_class is None for o in outcomes),
        "per_class_accuracy": per_class_accuracy(outcomes),
        "confusions": top_confusions(outcomes),
    }
