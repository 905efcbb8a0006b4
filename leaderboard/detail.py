"""A model's detail page as data: its results with CIs, reported vs reproduced, the label-set-size
curve and the most frequent confusions. Inputs are `ResultStore.model_info()` rows."""

from __future__ import annotations

from typing import Any

import pandas as pd

from leaderboard import spec
from leaderboard.table import best_runs

PERCENT_COLUMNS = ("Accuracy (%)", "Reported (%)", "Reproduced (%)", "Δ (points)")  # shown with two decimals
RESULT_COLUMNS = [
    "Task",
    "Source",
    "Scoring",
    "Protocol",
    "Options",
    "Accuracy (%)",
    "95% CI",
    "n",
    "Unparseable",
    "Protocol version",
    "Run",
    "Created",
    "Harness",
    "Git commit",
    "Device",
]


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


DERIVED = "derived"  # the label of an interval computed from a published accuracy and the test size


def _ci(row: dict[str, Any]) -> str:
    if row["ci_low"] is None or row["ci_high"] is None:
        return ""
    text = f"{100 * row['ci_low']:.1f}–{100 * row['ci_high']:.1f}"
    return f"{text} ({DERIVED})" if row["source"] == "reported" else text


def _task_order(row: dict[str, Any]) -> tuple:
    """Task in spec order, the paper's row first, then our runs by options per question and time."""
    return (
        spec.COLUMN_KEYS.index(row["task"]),
        row["source"] != "reported",
        spec.label_set_size(row["task"], row["variant"]) or 0,
        row["created"],
    )


def header_markdown(info: dict[str, Any], private: bool = False) -> str:
    """The model's facts; a local checkpoint's server path only on the admin view (`private`)."""
    checkpoint = info["checkpoint"]
    if checkpoint and not private and checkpoint.startswith(("/", "~", ".")):
        checkpoint = "a local folder"
    facts = [
        ("Base", info["base"]),
        ("Family", info["family"]),
        ("Parameters", f"{info['params_b']:g}B" if info["params_b"] else None),
        ("Checkpoint", checkpoint),
        ("Revision", info["revision"]),
        ("Precision", info["precision"]),
    ]
    listed = " · ".join(f"**{label}:** `{value}`" for label, value in facts if value)
    hidden = " *(hidden)*" if info["hidden"] else ""
    return f"### {info['display_name']}{hidden}\n`{info['name']}`" + (f"\n\n{listed}" if listed else "")


def contamination_note(provenance: dict) -> str:
    """' ⚠ trained on N test images' for an adapter trained on data with train/test overlap."""
    found = (provenance.get("training_run") or {}).get("contamination")
    return f" ⚠ trained on {found['test_images_in_training']} test image(s)" if found else ""


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    records = []
    for row in sorted(rows, key=_task_order):
        provenance = row["provenance"] or {}
        records.append(
            [
                spec.BY_KEY[row["task"]].column,
                row["source"] + contamination_note(provenance),
                row["scoring"],
                row.get("protocol") or "harness",
                spec.label_set_size(row["task"], row["variant"]),
                _percent(row["accuracy"]),
                _ci(row),
                row["n"],
                row["unparseable"],
                row["task_version"] or "",
                provenance.get("citation") or provenance.get("run_id") or row["key"],
                row["created"].strftime("%Y-%m-%d %H:%M") if row["created"] else "",
                provenance.get("harness_version") or "",
                (provenance.get("git_commit") or "")[:10],
                provenance.get("device") or "",
            ]
        )
    return pd.DataFrame(records, columns=RESULT_COLUMNS)


def comparison_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Reported vs reproduced per task (main variant), with the difference in points where the
    reproduced run used the reported figures' protocol (the paper's: foci)."""
    columns = ["Task", "Reported (%)", "Reproduced (%)", "Scoring", "Protocol", "Δ (points)"]
    frame = pd.DataFrame(rows)
    if frame.empty or "reproduced" not in set(frame["source"]):
        return pd.DataFrame(columns=columns)
    best = best_runs(frame.assign(model="-"))
    reported_rows = best[best["source"] == "reported"]
    reported = reported_rows.set_index("task")["accuracy"]
    paper_protocols = set(reported_rows["protocol"])
    records = []
    for _, run in best[best["source"] == "reproduced"].iterrows():
        paper = reported.get(run["task"])
        comparable = paper is not None and run["protocol"] in paper_protocols
        delta = round(100 * (run["accuracy"] - paper), 2) if comparable else None
        records.append(
            [run["task"], _percent(paper), _percent(run["accuracy"]), run["scoring"], run["protocol"], delta]
        )
    records.sort(key=lambda record: (spec.COLUMN_KEYS.index(record[0]), record[3]))
    for record in records:
        record[0] = spec.BY_KEY[record[0]].column
    return pd.DataFrame(records, columns=columns)


def label_set_curve(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Accuracy against options per question, for the tasks run at two or more label-set sizes."""
    columns = ["Options per question", "Accuracy (%)", "Series"]
    records = []
    for row in rows:
        size = spec.label_set_size(row["task"], row["variant"])
        if row["source"] == "reproduced" and size is not None:
            series = f"{spec.BY_KEY[row['task']].column} ({row['scoring']})"
            records.append(
                {
                    "size": size,
                    "accuracy": 100 * row["accuracy"],
                    "series": series,
                    "full": row["sample_limit"] is None,
                    "created": row["created"],
                }
            )
    if not records:
        return pd.DataFrame(columns=columns)
    frame = (
        pd.DataFrame(records)
        .sort_values(["full", "created"])
        .drop_duplicates(["series", "size"], keep="last")
    )
    frame = frame[frame.groupby("series")["size"].transform("nunique") >= 2].sort_values(["series", "size"])
    return frame.rename(columns={"size": columns[0], "accuracy": columns[1], "series": columns[2]})[columns]


def confusion_frame(rows: list[dict[str, Any]], top: int = 15) -> pd.DataFrame:
    """The most frequent (true -> predicted) pairs of the latest main-protocol run of each task."""
    columns = ["Task", "True class", "Predicted", "Count"]
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["created"]):
        if row["confusions"] and row["variant"] == spec.BY_KEY[row["task"]].main_variant:
            latest[(row["task"], row["scoring"])] = row
    pairs = [
        [spec.BY_KEY[task].column, pair["true"], pair["predicted"], pair["count"]]
        for (task, _), row in latest.items()
        for pair in row["confusions"]
    ]
    pairs.sort(key=lambda pair: -pair[3])
    return pd.DataFrame(pairs[:top], columns=columns)


PROBE_COLUMNS = [
    "Task",
    "Features",
    "Linear probe (%)",
    "95% CI",
    "Selected on",
    "Knowledge probe (%)",
    "Alignment (cos)",
    "Object inter",
    "Object intra",
    "Category inter",
    "Train/test",
    "Run",
]


def _probe_percent(result: dict[str, Any] | None) -> tuple[float | None, str]:
    if not result:
        return None, ""
    low, high = result["accuracy_ci95"]
    return _percent(result["accuracy"]), f"{100 * low:.1f}–{100 * high:.1f}"


def _selected_on(result: dict[str, Any] | None) -> str:
    """ "validation-selected" (our recipe) or "test-selected" (VLMClassifier's: the best test accuracy
    over epochs, optimistic), so the two kinds of figure are never read as one."""
    if not result:
        return ""
    return f"{result.get('selected_on', 'validation')}-selected"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def probes_frame(reports: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (probe report, feature view): the figures of `harness probe repr`.
    Inputs are `ResultStore.probe_reports()` entries."""
    records = []
    for entry in reports:
        report = entry["report"]
        for view in report["views"]:
            linear, ci = _probe_percent(report["linear"].get(view))
            selected = _selected_on(report["linear"].get(view))
            knowledge, _ = _probe_percent(report["knowledge"].get(view))
            alignment = report["alignment"].get(view)
            distances = report["distances"].get(view) or {}
            objects, categories = distances.get("objects") or {}, distances.get("categories") or {}
            records.append(
                [
                    report["task"],
                    view,
                    linear,
                    ci,
                    selected,
                    knowledge,
                    _rounded(alignment and alignment["mean_cosine"]),
                    _rounded(objects.get("inter_class_distance")),
                    _rounded(objects.get("intra_class_variance")),
                    _rounded(categories.get("inter_class_distance")),
                    f"{report['n_train']}/{report['n_test']}",
                    report["run_id"],
                ]
            )
    return pd.DataFrame(records, columns=PROBE_COLUMNS)


def probe_plots(reports: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any] | str]]:
    """(caption, t-SNE) of every plotted view: its recorded coordinates (`tsne_points`), or for a
    report without them (older ones) its PNG's path while the file is where the report was written."""
    from pathlib import Path

    plots = []
    for entry in reports:
        report, folder = entry["report"], entry["folder"]
        points = report.get("tsne_points") or {}
        for view, file_name in report.get("tsne", {}).items():
            caption = f"{report['task']} · {view} features · {report['run_id']}"
            path = Path(folder or "") / file_name
            if view in points:
                plots.append((caption, points[view]))
            elif folder and path.is_file():
                plots.append((caption, str(path)))
    return plots
