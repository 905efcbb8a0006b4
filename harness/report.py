"""How a run's summary is shown: the table `harness run` and the demos print, and the one JSON object
of `--json`. Below the CLI and every command that evaluates (the demos, `harness train --eval-after`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def summary_line(summary: dict) -> dict:
    """The `--json` object: every flat field of the summary (names, numbers, intervals; not the
    per-class tables, confusions or provenance), so a new headline metric appears without a change
    here, and where the summary file is."""
    out = {key: value for key, value in summary.items() if _is_flat(value)}
    out["summary_file"] = str(Path(summary["results_file"]).parent / "summary.json")
    return out


def _is_flat(value) -> bool:
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(item, (int, float)) for item in value)  # an interval
    return value is None or isinstance(value, (str, int, float, bool))


def format_table(summaries: Sequence[dict]) -> str:
    header = f"{'model':<14} {'task':<12} {'scoring':<11} {'protocol':<13} {'n':>6} {'accuracy':>9} {'95% CI':>15} {'robust':>7} {'unparseable':>11}"
    lines = [header, "-" * len(header)]
    for s in summaries:
        low, high = s["accuracy_ci95"]
        robust = "-" if s.get("robust_accuracy") is None else f"{100 * s['robust_accuracy']:.2f}"
        unparseable = s["unparseable"] if s["scoring"] == "generate" else "-"
        task = s["task"] if s.get("variant", "k4") == "k4" else f"{s['task']}/{s['variant']}"
        lines.append(
            f"{s['model']:<14} {task:<12} {s['scoring']:<11} {s.get('protocol', 'harness'):<13} {s['n']:>6} "
            f"{100 * s['accuracy']:>8.2f}% "
            f"{f'[{100 * low:.1f}, {100 * high:.1f}]':>15} {robust:>7} {unparseable:>11}"
        )
    return "\n".join(lines)
