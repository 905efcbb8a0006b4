"""The one confidence interval of every accuracy: runs, imports and the leaderboard.

An accuracy is k right out of n independent questions, so its interval is a binomial one: Wilson's
score interval (scipy's `binomtest(...).proportion_ci(method="wilson")`), which stays inside [0, 1]
and behaves at 0% and 100%, unlike the normal approximation."""

from __future__ import annotations

ACCURACY_CI_METHOD = "wilson"
CONFIDENCE = 0.95


def accuracy_ci95(correct: int, n: int) -> tuple[float, float] | None:
    """Wilson 95% interval of `correct` successes out of `n`; None when there is nothing to estimate."""
    if n <= 0:
        return None
    if not 0 <= correct <= n:
        raise ValueError(f"{correct} correct out of {n} questions")
    from scipy.stats import binomtest

    interval = binomtest(int(correct), int(n)).proportion_ci(
        confidence_level=CONFIDENCE, method=ACCURACY_CI_METHOD
    )
    return float(interval.low), float(interval.high)


def correct_count(accuracy: float, n: int) -> int:
    """The number of right questions behind an accuracy reported as a fraction of n."""
    return min(n, max(0, round(accuracy * n)))
