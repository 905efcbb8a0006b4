"""What a model wrapper answers for a request that raised: a marker that the task hooks and the
summary count as an error, never silently as a wrong answer.

Both markers survive lmms-eval's filters and its per-sample JSON (a string; NaN is written as NaN)."""

from __future__ import annotations

import math
from typing import Any

FAILED_GENERATION = "<fgvr-harness: request failed>"
FAILED_NLL = math.nan  # the negative log-likelihood of an option whose request failed


def is_failed(response: Any) -> bool:
    """True for a failed generation, or a (negative log-likelihood, is_greedy) pair whose value is NaN."""
    if isinstance(response, str):
        return response == FAILED_GENERATION
    if isinstance(response, (list, tuple)) and response:
        value = response[0]
        return isinstance(value, float) and math.isnan(value)
    return False
