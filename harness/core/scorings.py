"""The scoring kinds (`--scoring`), named once: each kind's lmms-eval task-name suffix, its task
template (tasks/lmms/), and what the model returns for it. The results schema's `Scoring`, the
task names the registry writes (`fgvr_bird200_gen`), the prepared task's templates, the runner's
reading of the responses and the importer's reading of task names all derive from this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ScoringKind:
    name: str  # `--scoring NAME`, and the `scoring` of a run summary
    suffix: str  # of the lmms-eval task name: fgvr_<task>[_<variant>]_<suffix>
    template: str  # the lmms-eval task template in tasks/lmms/
    response: Literal["generate", "loglik"]  # generated text, or one log-likelihood per option
    description: str


SCORING_KINDS: dict[str, ScoringKind] = {
    kind.name: kind
    for kind in (
        ScoringKind("generate", "gen", "_fgvr_generate.yaml", "generate", "the answer letter generated"),
        ScoringKind("loglik", "loglik", "_fgvr_loglik.yaml", "loglik", "each option letter's log-likelihood"),
        ScoringKind(
            "loglik_name", "logliknm", "_fgvr_loglik_name.yaml", "loglik", "each option name's log-likelihood"
        ),
    )
}
SCORINGS: tuple[str, ...] = tuple(SCORING_KINDS)
BY_SUFFIX: dict[str, ScoringKind] = {kind.suffix: kind for kind in SCORING_KINDS.values()}
