"""The leaderboard table: result rows -> one row per (model, source, scoring, protocol), filtered,
averaged, ranked. Numbers under different protocols are never averaged together: each protocol has
its own row, and a reproduced row is compared with the paper's only under the paper's protocol.

Pure pandas on the frame `ResultStore.result_frame()` returns, so it can be tested and benchmarked
without a database or a server. Accuracies come in as fractions and go out as percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd

from leaderboard import spec, stats

ROW_KEY = ["model", "source", "scoring", "protocol"]
MODEL_COLUMN = "Model"
ID_COLUMN = "Model ID"
AVERAGE = "Average"
AVERAGE_RANK = "Avg rank"
DELTA = "Δ vs paper"
TIED = "Tied with leader"  # the columns where this row is statistically tied with the column's best
BIAS = "Position bias"  # the datasets where this row's answers pile on a letter (leaderboard.stats)
PERCENT_COLUMNS = (AVERAGE, DELTA, *[task.column for task in spec.BENCHMARK])  # shown with two decimals
INFO_COLUMNS = {
    "display_name": MODEL_COLUMN,
    "params_b": "Params (B)",
    "family": "Family",
    "source": "Source",
    "scoring": "Scoring",
    "protocol": "Protocol",
}


@dataclass(frozen=True)
class TableQuery:
    """What the user asked for; an empty filter tuple means "no filter"."""

    tasks: tuple[str, ...] = spec.TASK_KEYS
    sizes: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    scorings: tuple[str, ...] = ()
    search: str = ""
    sort_by: str = AVERAGE
    descending: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(spec.validate_tasks(self.tasks, spec.COLUMN_KEYS)))


def best_runs(results: pd.DataFrame) -> pd.DataFrame:
    """One accuracy per (model, source, scoring, protocol, task) on the main variant: full runs beat runs with a
    --limit, and among equals the latest wins."""
    main_variant = results["task"].map(
        lambda task: spec.BY_KEY[task].main_variant if task in spec.BY_KEY else None
    )
    main = results[results["variant"] == main_variant]
    ordered = main.assign(_full=main["sample_limit"].isna()).sort_values(["_full", "created"], kind="stable")
    return ordered.drop_duplicates([*ROW_KEY, "task"], keep="last").drop(columns="_full")


def wide_table(results: pd.DataFrame) -> pd.DataFrame:
    """Model metadata plus one percent column per benchmark task (NaN where there is no run)."""
    best = best_runs(results)
    scores = best.set_index([*ROW_KEY, "task"])["accuracy"].mul(100).unstack("task")
    scores = scores.reindex(columns=list(spec.COLUMN_KEYS)).reset_index()
    metadata = best.drop_duplicates("model").set_index("model")[["display_name", "family", "params_b"]]
    wide = scores.join(metadata, on="model")
    wide["size"] = [spec.size_bucket(value) for value in wide["params_b"]]
    return wide


def _keep(frame: pd.DataFrame, column: str, allowed: Sequence[str]) -> pd.DataFrame:
    return frame[frame[column].isin(allowed)] if allowed else frame


def apply_filters(wide: pd.DataFrame, query: TableQuery) -> pd.DataFrame:
    frame = _keep(wide, "size", query.sizes)
    frame = _keep(frame, "family", query.families)
    frame = _keep(frame, "source", query.sources)
    return _keep(frame, "scoring", query.scorings)


def add_aggregates(frame: pd.DataFrame, wide: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """Average (only for rows with every selected in-average task), average rank among `frame`'s rows,
    and a reproduced row's mean difference from the paper's row of the same model."""
    frame = frame.copy()
    averaged = spec.average_tasks(tasks)
    frame[AVERAGE] = (
        [exact_average(values) for values in frame[averaged].itertuples(index=False)]
        if averaged
        else float("nan")
    )
    ranks = frame[averaged].rank(
        ascending=False, method="min"
    )  # knowledge-QA columns stay out of the rank too
    frame[AVERAGE_RANK] = ranks.mean(axis=1, skipna=False) if averaged else float("nan")
    reported = wide[wide["source"] == "reported"].drop_duplicates("model").set_index("model")[list(tasks)]
    paper = reported.reindex(frame["model"]).set_axis(frame.index)
    delta = (frame[list(tasks)] - paper).mean(axis=1)
    # like with like: the paper's figures were produced under FOCI-Benchmark's protocol
    reported_protocol = wide.loc[wide["source"] == "reported", "protocol"].drop_duplicates()
    same = frame["protocol"].isin(reported_protocol.tolist() or ["foci"])
    frame[DELTA] = delta.where((frame["source"] != "reported") & same)
    return frame


def exact_average(percents: Sequence[float]) -> float:
    """The mean of percent figures in decimal arithmetic, half-up to two decimals, as a paper computes the
    average of its printed figures (290.79 / 6 = 48.465 -> 48.47; binary floating point gives 48.46). NaN
    when any figure is missing."""
    if not percents or any(value is None or math.isnan(value) for value in percents):
        return float("nan")
    total = sum(Decimal(repr(round(float(value), 8))) for value in percents)  # 8 places: drop binary noise
    return float((total / len(percents)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def search(frame: pd.DataFrame, text: str) -> pd.DataFrame:
    text = text.strip().lower()
    if not text:
        return frame
    haystack = (
        frame["display_name"].fillna("") + " " + frame["model"] + " " + frame["family"].fillna("")
    ).str.lower()
    return frame[haystack.str.contains(text, regex=False)]


def sort_columns() -> list[str]:
    return [AVERAGE, AVERAGE_RANK, DELTA, *[task.column for task in spec.COLUMNS], MODEL_COLUMN, "Params (B)"]


def compare(leader: pd.Series, other: pd.Series, correctness: Mapping[str, Mapping[int, bool]]):
    """leader - other (leaderboard.stats.Difference): paired when both have per-question outcomes on
    shared questions, else unpaired from their intervals; None when neither is possible."""
    a, b = correctness.get(leader.get("key")), correctness.get(other.get("key"))
    if a and b and a.keys() & b.keys():
        return stats.paired_difference(a, b)
    bounds = [leader.get("ci_low"), leader.get("ci_high"), other.get("ci_low"), other.get("ci_high")]
    if any(value is None or value != value for value in bounds):
        return None
    return stats.newcombe_difference(
        leader["accuracy"], (bounds[0], bounds[1]), other["accuracy"], (bounds[2], bounds[3])
    )


def add_marks(
    frame: pd.DataFrame,
    results: pd.DataFrame,
    tasks: Sequence[str],
    correctness: Mapping[str, Mapping[int, bool]] | None,
    biases: Mapping[str, stats.PositionBias] | None,
) -> pd.DataFrame:
    """The TIED column (per task column, rows whose difference from the column's leader among the shown
    rows has an interval containing 0) and the BIAS column (flagged position biases)."""
    frame = frame.copy()
    tied: dict[tuple, list[str]] = {}
    flagged: dict[tuple, list[str]] = {}
    shown = set(frame[ROW_KEY].itertuples(index=False, name=None))
    best = best_runs(results)
    best = best[[row in shown for row in best[ROW_KEY].itertuples(index=False, name=None)]]
    for task in tasks:
        rows = best[best["task"] == task]
        if rows.empty:
            continue
        column = spec.BY_KEY[task].column
        leader = rows.loc[rows["accuracy"].idxmax()]
        for _, row in rows.iterrows():
            row_key = tuple(row[ROW_KEY])
            if correctness is not None and row_key != tuple(leader[ROW_KEY]):
                difference = compare(leader, row, correctness)
                if difference is not None and difference.tied:
                    tied.setdefault(row_key, []).append(column)
            bias = (biases or {}).get(row.get("key"))
            if bias is not None and bias.flagged:
                flagged.setdefault(row_key, []).append(f"{column}: {bias.describe()}")
    keys = list(frame[ROW_KEY].itertuples(index=False, name=None))
    frame[TIED] = [", ".join(tied.get(key, [])) for key in keys]
    frame[BIAS] = ["; ".join(flagged.get(key, [])) for key in keys]
    return frame


def leaderboard_table(
    results: pd.DataFrame,
    query: TableQuery = TableQuery(),
    correctness: Mapping[str, Mapping[int, bool]] | None = None,
    biases: Mapping[str, stats.PositionBias] | None = None,
) -> pd.DataFrame:
    """The table the app shows: display columns, percent rounded to 2 decimals. `correctness` (result
    key -> question -> right) and `biases` (result key -> position-bias test) fill TIED and BIAS."""
    if results.empty:
        return pd.DataFrame(columns=display_columns(query.tasks))
    wide = wide_table(results)
    frame = add_aggregates(apply_filters(wide, query), wide, query.tasks)
    frame = search(frame, query.search)
    frame = add_marks(frame, results, query.tasks, correctness, biases)
    frame = frame.rename(
        columns={**INFO_COLUMNS, **{t.key: t.column for t in spec.COLUMNS}, "model": ID_COLUMN}
    )
    frame = frame[display_columns(query.tasks)]
    sort_by = query.sort_by if query.sort_by in frame.columns else AVERAGE
    frame = frame.sort_values(
        [sort_by, MODEL_COLUMN], ascending=[not query.descending, True], na_position="last", kind="stable"
    )
    return frame.round(2).reset_index(drop=True)


def display_columns(tasks: Sequence[str]) -> list[str]:
    return [
        MODEL_COLUMN,
        "Params (B)",
        "Family",
        "Source",
        "Scoring",
        "Protocol",
        AVERAGE,
        AVERAGE_RANK,
        DELTA,
        TIED,
        BIAS,
        *[spec.BY_KEY[key].column for key in tasks],
        ID_COLUMN,
    ]


def filter_choices(results: pd.DataFrame) -> dict[str, list[str]]:
    """The values each filter can take, from what is in the store."""
    return {
        "families": sorted(results["family"].dropna().unique().tolist()),
        "sources": [source for source in spec.SOURCES if source in set(results["source"])],
        "scorings": sorted(results["scoring"].unique().tolist()),
    }
