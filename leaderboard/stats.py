"""What the leaderboard's numbers mean: is A better than B, and does a model pile its answers on a letter.

- **Paired comparison.** Two models answered the same questions, so their accuracies are not
  independent; the interval of the difference comes from a paired bootstrap over questions
  (percentile, BOOTSTRAP_ITERS resamples, a fixed seed), per dataset and on the average over
  datasets (each dataset resampled on its own, the average taken per resample). Resampling questions
  moves the difference only through the discordant ones (A right and B wrong, or the reverse), so a
  resample is drawn as multinomial counts of the three kinds of question: the same distribution as
  resampling indices, at a cost independent of the number of questions. McNemar's exact test (the
  two-sided binomial test of the discordant counts) gives the p-value beside it. A model is *tied*
  with a column's leader when the 95% interval of the difference contains 0.
- **Without per-question outcomes** (the paper's rows, imported aggregate results) the two accuracies
  are treated as independent: Newcombe's hybrid score interval for a difference of proportions,
  built from the two Wilson intervals (`harness.core.stats`).
- **Position bias.** The letters a model answered against the letters that were right: Pearson's
  chi-square goodness-of-fit test of the answered counts against the gold distribution. Flagged when
  p < BIAS_ALPHA *and* some letter's share departs from its gold share by BIAS_MIN_DEPARTURE or more:
  with thousands of questions a negligible preference is already "significant", so the test alone
  would flag every model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.stats import CONFIDENCE

BOOTSTRAP_ITERS = 10_000
BOOTSTRAP_SEED = 0
BIAS_ALPHA = 1e-3
BIAS_MIN_DEPARTURE = 0.10  # 10 percentage points


@dataclass(frozen=True)
class Difference:
    """Accuracy of A minus accuracy of B (fractions) with its 95% interval."""

    difference: float
    low: float
    high: float
    method: str  # "paired bootstrap" | "Newcombe (unpaired)"
    n: int | None = None  # questions both answered (paired)
    a_only: int | None = None  # questions only A got right
    b_only: int | None = None
    p_value: float | None = None  # McNemar's exact test (paired)

    @property
    def tied(self) -> bool:
        return self.low <= 0.0 <= self.high


def _percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return float(low), float(high)


def discordant(a: Mapping[int, bool], b: Mapping[int, bool]) -> tuple[int, int, int]:
    """(questions both answered, right only for A, right only for B)."""
    shared = a.keys() & b.keys()
    a_only = sum(1 for q in shared if a[q] and not b[q])
    b_only = sum(1 for q in shared if b[q] and not a[q])
    return len(shared), a_only, b_only


def bootstrap_draws(n: int, a_only: int, b_only: int, rng: np.random.Generator, iters: int) -> np.ndarray:
    """Resampled differences of accuracy (A - B) over `n` paired questions."""
    if n == 0:
        return np.zeros(iters)
    counts = rng.multinomial(n, [a_only / n, b_only / n, (n - a_only - b_only) / n], size=iters)
    return (counts[:, 0] - counts[:, 1]) / n


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against a fair coin."""
    if a_only + b_only == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(a_only, a_only + b_only, 0.5).pvalue)


def paired_difference(
    a: Mapping[int, bool], b: Mapping[int, bool], iters: int = BOOTSTRAP_ITERS, seed: int = BOOTSTRAP_SEED
) -> Difference:
    """A - B on the questions both answered (question -> right)."""
    n, a_only, b_only = discordant(a, b)
    draws = bootstrap_draws(n, a_only, b_only, np.random.default_rng(seed), iters)
    low, high = _percentile_interval(draws)
    return Difference(
        (a_only - b_only) / n if n else 0.0,
        low,
        high,
        "paired bootstrap",
        n,
        a_only,
        b_only,
        mcnemar_exact_p(a_only, b_only),
    )


def paired_average_difference(
    pairs: Sequence[tuple[Mapping[int, bool], Mapping[int, bool]]],
    iters: int = BOOTSTRAP_ITERS,
    seed: int = BOOTSTRAP_SEED,
) -> Difference:
    """The difference of the average over datasets (each pair is one dataset's A and B outcomes)."""
    rng = np.random.default_rng(seed)
    counts = [discordant(a, b) for a, b in pairs]
    draws = np.mean([bootstrap_draws(n, ao, bo, rng, iters) for n, ao, bo in counts], axis=0)
    low, high = _percentile_interval(draws)
    point = float(np.mean([(ao - bo) / n if n else 0.0 for n, ao, bo in counts]))
    return Difference(point, low, high, "paired bootstrap", sum(c[0] for c in counts))


def newcombe_difference(
    p1: float, interval1: tuple[float, float], p2: float, interval2: tuple[float, float]
) -> Difference:
    """Newcombe's hybrid score interval of p1 - p2 from the two Wilson intervals (independent samples)."""
    (l1, u1), (l2, u2) = interval1, interval2
    d = p1 - p2
    low = d - ((p1 - l1) ** 2 + (u2 - p2) ** 2) ** 0.5
    high = d + ((u1 - p1) ** 2 + (p2 - l2) ** 2) ** 0.5
    return Difference(d, low, high, "Newcombe (unpaired)")


# --- position bias -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionBias:
    letters: tuple[str, ...]
    answered_share: tuple[float, ...]  # of the answered (parseable) rows
    gold_share: tuple[float, ...]
    chi2: float
    p_value: float
    top_letter: str  # the letter answered most above its gold share
    departure: float  # that letter's answered share minus its gold share

    @property
    def flagged(self) -> bool:
        return self.p_value < BIAS_ALPHA and abs(self.departure) >= BIAS_MIN_DEPARTURE

    def describe(self) -> str:
        i = self.letters.index(self.top_letter)
        return f"{self.top_letter} {100 * self.answered_share[i]:.0f}% of answers (right {100 * self.gold_share[i]:.0f}%)"


def position_bias_test(bias: Mapping[str, Mapping[str, float]]) -> PositionBias | None:
    """The chi-square goodness-of-fit test of a run's `position_bias` (RunSummary): answered counts per
    letter against the gold shares. None when nothing was answered."""
    from scipy.stats import chisquare

    letters = tuple(letter for letter in sorted(bias) if bias[letter]["gold"] > 0)
    answered = np.array([bias[letter]["answered"] for letter in letters], dtype=float)
    gold = np.array([bias[letter]["gold"] for letter in letters], dtype=float)
    if answered.sum() == 0 or gold.sum() == 0:
        return None
    expected = gold / gold.sum() * answered.sum()
    chi2, p = chisquare(answered, expected)
    answered_share, gold_share = answered / answered.sum(), gold / gold.sum()
    departures = answered_share - gold_share
    top = int(np.argmax(np.abs(departures)))
    return PositionBias(
        letters,
        tuple(float(x) for x in answered_share),
        tuple(float(x) for x in gold_share),
        float(chi2),
        float(p),
        letters[top],
        float(departures[top]),
    )
