"""The Gradio app (`harness leaderboard`): table, model detail, plots, submit, queue and admin actions.

`LeaderboardApp` holds the handlers (plain methods, testable without a server); `build()` wires them
into Blocks. Every handler reads the store when it is called, so new results show without a
restart, and nothing happens at import: the store is opened by `serve()`.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from harness.config import SCORINGS
from harness.core.errors import UserError
from harness.core.io import write_lines_atomic
from harness.core.results import SUMMARY_FILE
from leaderboard import detail, plots, spec, stats
from leaderboard.queue import LISTED_COLUMNS, STATUSES, SubmissionQueue, submit_checkpoint
from leaderboard.store import ResultStore
from leaderboard.submissions import (
    ANONYMOUS_WEB,
    PRECISIONS,
    SUBMITTER,
    WEIGHTS,
    SubmissionPolicy,
    SubmissionRefused,
    SubmissionRequest,
)
from leaderboard.table import (
    AVERAGE,
    ID_COLUMN,
    MODEL_COLUMN,
    PERCENT_COLUMNS,
    ROW_KEY,
    TableQuery,
    best_runs,
    filter_choices,
    leaderboard_table,
    sort_columns,
)

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "HARNESS_ADMIN_TOKEN"
SUBMIT_TOKENS_ENV = "HARNESS_SUBMIT_TOKENS"  # name:token,name:token; when set, the web form needs a token
TRUSTED_PROXIES_ENV = "HARNESS_TRUSTED_PROXIES"  # proxies whose X-Forwarded-For is believed; none by default
# Gradio's upload route takes files from anyone before any handler runs, so it is kept small: enough
# for a summary.json or an lmms-eval results JSON (the admin import, which checks the token first).
MAX_UPLOAD_BYTES = 512 * 1024
MODEL_NAME_CHARS = 32  # longer names are cut in the table; the full name shows on hover
COMPARE_COLUMNS = [
    "Dataset",
    "A (%)",
    "B (%)",
    "Δ A−B (points)",
    "95% CI (points)",
    "Method",
    "Questions",
    "McNemar p",
    "Tied",
]
BIAS_COLUMNS = ["Model", "Task", "Scoring", "Answered (%)", "Right answer (%)", "χ²", "p", "Flag"]
ADMIN_ACTIONS = ("requeue submission", "delete submission", "hide model", "unhide model", "delete model")
QUEUE_COLUMNS = {
    "id": "ID",
    "model_name": "Model",
    "base": "Base",
    "precision": "Precision",
    "tasks": "Tasks",
    "status": "Status",
    "submitter": "Submitter",
    "created": "Submitted",
    "started": "Started",
    "finished": "Finished",
    "worker": "Worker",
    "attempts": "Attempts",
    "error": "Failure reason",
}
PLOT_DEFAULT_MODELS = 4
THEME = gr.themes.Default(
    font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
    font_mono=["ui-monospace", "Menlo", "monospace"],
)  # system fonts: no font download
CSS = (
    ".grouped-bars { width: 100%; height: auto; } #leaderboard-table { font-variant-numeric: tabular-nums; }"
)
INTRO = (
    f"Fine-grained visual recognition (FGVR) accuracy of multimodal LLMs on {len(spec.TASK_KEYS)} datasets, "
    "4 options per "
    "question. **reported**: figures published in Finedefics (He et al., ICLR 2025), Table 2/4; "
    "**reproduced**: runs of this harness. The average is shown only for rows with every selected task."
)


def _prune(folder: Path, max_age_s: float = 3600) -> None:
    """Drop export files older than an hour, so a long-running server does not fill its temp dir."""
    cutoff = time.time() - max_age_s
    for path in folder.glob("fgvr-leaderboard-*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:  # another request pruned it first
            pass


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values as empty cells rather than 'NaN'."""
    return frame.astype(object).where(frame.notna(), None)


def _two_decimals(frame: pd.DataFrame, columns) -> Any:
    """The frame for a gr.Dataframe with every accuracy shown with two decimals (57.10, not 57.1); the
    values stay numbers, so sorting in the browser is numeric."""
    formats = {column: (_percent_text if column in columns else _plain_text) for column in frame.columns}
    return _cells(frame).style.format(formats)


def _percent_text(value: Any) -> str:
    return "" if value is None else f"{value:.2f}"


def _plain_text(value: Any) -> str:
    """Other cells as they are (Styler would print every float with six decimals)."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _model_cell(name: str) -> str:
    """A model name cut to MODEL_NAME_CHARS, the whole name on hover (escaped: names are user input)."""
    shown = name if len(name) <= MODEL_NAME_CHARS else name[: MODEL_NAME_CHARS - 1] + "…"
    return f'<span title="{html.escape(name, quote=True)}">{html.escape(shown)}</span>'


_SERVER_PATH = re.compile(r"(?<![\w.])(?:/[^\s/:'\"(),]+)+/([^\s/:'\"(),]+)")


def public_text(text: str | None) -> str:
    """A message for the public pages: absolute paths cut to their last part (…/name)."""
    return _SERVER_PATH.sub(r"…/\1", text or "")


def public_submitter(submitter: str | None) -> str:
    """Token holders by name; anonymous web submitters without their address."""
    return "anonymous (web)" if (submitter or "").startswith(ANONYMOUS_WEB) else submitter or ""


def submit_tokens() -> dict[str, str]:
    """HARNESS_SUBMIT_TOKENS as {token: submitter name}; a malformed entry is the operator's error, named."""
    tokens: dict[str, str] = {}
    for entry in os.environ.get(SUBMIT_TOKENS_ENV, "").split(","):
        if not entry.strip():
            continue
        name, sep, token = entry.strip().partition(":")
        if not sep or not SUBMITTER.match(name) or len(token) < 8:
            raise UserError(
                f"{SUBMIT_TOKENS_ENV}: '{name}:…' is not name:token (a name of letters, digits . _ - "
                "and a token of at least 8 characters)"
            )
        tokens[token] = name
    return tokens


def trusted_proxies() -> str:
    """HARNESS_TRUSTED_PROXIES checked (addresses or networks, comma-separated) and normalised; '' trusts none."""
    text = os.environ.get(TRUSTED_PROXIES_ENV, "").strip()
    parts = [part.strip() for part in text.split(",") if part.strip()]
    for part in parts:
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise UserError(f"{TRUSTED_PROXIES_ENV}: '{part}' is not an IP address or network") from None
    return ",".join(parts)


def web_submitter(token: str, host: str) -> str:
    """Who submits from the web: the name of a valid token when the operator issues tokens (then one is
    required), else the client's address as the proxy-aware server sees it, as `web-<address>`."""
    tokens = submit_tokens()
    if tokens:
        for known, name in tokens.items():
            if hmac.compare_digest((token or "").encode(), known.encode()):
                return name
        raise SubmissionRefused(
            "token", "a valid submission token is required; ask the leaderboard's operator"
        )
    return ANONYMOUS_WEB + re.sub(r"[^A-Za-z0-9.]", ".", host or "unknown")[:60]


def _series_label(row: pd.Series) -> str:
    scoring = "" if row["Scoring"] == "paper" else f" ({row['Scoring']}, {row['Protocol']})"
    return f"{row['Model']} · {row['Source']}{scoring}"


def _row_value(row: Any) -> str:
    return json.dumps([row.model, row.source, row.scoring])


def _row_label(value: str) -> str:
    model, source, scoring = json.loads(value)
    return f"{model} · {source}" + ("" if scoring == "paper" else f" ({scoring})")


def _runs_of(best: pd.DataFrame, value: str) -> dict[str, dict]:
    model, source, scoring = json.loads(value)
    rows = best[(best["model"] == model) & (best["source"] == source) & (best["scoring"] == scoring)]
    return {row["task"]: row for row in rows.to_dict("records")}


def _difference(a: dict, b: dict, correctness: dict) -> stats.Difference | None:
    from leaderboard.table import compare

    return compare(pd.Series(a), pd.Series(b), correctness)


def _compare_record(label: str, a: dict, b: dict, difference: stats.Difference | None) -> list:
    if difference is None:
        return [label, 100 * a["accuracy"], 100 * b["accuracy"], None, "", "no interval", None, None, ""]
    return [
        label,
        round(100 * a["accuracy"], 2),
        round(100 * b["accuracy"], 2),
        round(100 * difference.difference, 2),
        f"{100 * difference.low:+.2f} to {100 * difference.high:+.2f}",
        difference.method,
        difference.n,
        None if difference.p_value is None else float(f"{difference.p_value:.3g}"),
        "tied" if difference.tied else ("A better" if difference.low > 0 else "B better"),
    ]


def _intervals(results: pd.DataFrame) -> dict[tuple, tuple[float, float]]:
    """(model, source, scoring, task) -> the 95% interval in percent of the run the table shows."""
    if results.empty:
        return {}
    best = best_runs(results)
    return {
        (r.model, r.source, r.scoring, r.task): (100 * r.ci_low, 100 * r.ci_high)
        for r in best.itertuples()
        if r.ci_low is not None and r.ci_low == r.ci_low
    }


def _looks_like_summary(raw: bytes) -> bool:
    """A harness summary (it has a run_id), as opposed to an lmms-eval results file."""
    try:
        data = json.loads(raw)
    except ValueError:
        return False
    return isinstance(data, dict) and "run_id" in data


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40]


def _datatypes(frame: pd.DataFrame) -> list[str]:
    return ["number" if pd.api.types.is_numeric_dtype(frame[column]) else "str" for column in frame.columns]


class LeaderboardApp:
    def __init__(
        self, store: ResultStore, policy: SubmissionPolicy | None = None, download_dir: Path | None = None
    ):
        """`download_dir`: where CSV/JSON exports go; by default a private folder of this instance (mode 0700
        under the system temp directory), so no other user or instance can read, plant or replace files there."""
        self.store = store
        self.queue = SubmissionQueue(store)
        self.policy = policy
        self.download_dir = (
            Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="fgvr-leaderboard-"))
        )

    # --- the table -----------------------------------------------------------------------------

    @staticmethod
    def query(
        tasks: list[str],
        sizes: list[str],
        families: list[str],
        sources: list[str],
        scorings: list[str],
        search: str,
        sort_by: str,
        descending: bool,
    ) -> TableQuery:
        """The table controls' values as a TableQuery; an empty task selection means every task."""
        return TableQuery(
            tasks=tuple(tasks or spec.TASK_KEYS),
            sizes=tuple(sizes or ()),
            families=tuple(families or ()),
            sources=tuple(sources or ()),
            scorings=tuple(scorings or ()),
            search=search or "",
            sort_by=sort_by or AVERAGE,
            descending=bool(descending),
        )

    def table(self, *controls: Any) -> pd.DataFrame:
        results = self.store.result_frame()
        return leaderboard_table(results, self.query(*controls), *self.marks(results))

    def marks(self, results: pd.DataFrame) -> tuple[dict, dict]:
        """What the TIED and BIAS columns need: per-question outcomes of the rows shown, position-bias tests."""
        keys = best_runs(results)["key"].tolist() if not results.empty else []
        biases = {}
        for row in self.store.position_biases():
            test = stats.position_bias_test(row["position_bias"])
            if test is not None:
                biases[row["key"]] = test
        return self.store.correctness(keys), biases

    def table_records(
        self,
        tasks: list[str],
        sizes: list[str],
        families: list[str],
        sources: list[str],
        scorings: list[str],
        search: str,
        sort_by: str,
        descending: bool,
    ) -> list[dict]:
        """The table as JSON records (the API endpoint `/leaderboard_table`)."""
        frame = self.table(tasks, sizes, families, sources, scorings, search, sort_by, descending)
        return json.loads(frame.to_json(orient="records", force_ascii=False))

    def _table_outputs(self, *controls: Any, results: pd.DataFrame | None = None) -> tuple[Any, str, str]:
        results = self.store.result_frame() if results is None else results
        frame = leaderboard_table(results, self.query(*controls), *self.marks(results))
        shown = frame.assign(**{MODEL_COLUMN: frame[MODEL_COLUMN].map(_model_cell)})
        datatypes = [
            "html" if column == MODEL_COLUMN else kind
            for column, kind in zip(frame.columns, _datatypes(frame))
        ]
        return gr.Dataframe(value=_two_decimals(shown, PERCENT_COLUMNS), datatype=datatypes), *self.export(
            frame
        )

    def export(self, frame: pd.DataFrame) -> tuple[str, str]:
        """The table as CSV and JSON files (named by their content, so an unchanged table reuses them)."""
        folder = self.download_dir
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _prune(folder)
        paths = []
        for suffix, text in (
            ("csv", frame.to_csv(index=False)),
            ("json", frame.to_json(orient="records", indent=1, force_ascii=False)),
        ):
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            path = folder / f"fgvr-leaderboard-{digest}.{suffix}"
            if path.is_symlink() or not path.is_file():
                write_lines_atomic(
                    path, [text.rstrip("\n")]
                )  # a new file renamed over the name: never follows a link
            paths.append(str(path))
        return paths[0], paths[1]

    # --- the detail page -----------------------------------------------------------------------

    def detail(self, name: str | None, token: str = "") -> tuple[str, Any, Any, gr.LinePlot, pd.DataFrame]:
        """A model's page. Hidden models and server paths only with the admin token."""
        if not name:
            empty = pd.DataFrame()
            return (
                "Pick a model, or click a row of the leaderboard.",
                empty,
                empty,
                gr.LinePlot(visible=False),
                empty,
            )
        admin = self.is_admin(token)
        try:
            info, rows = self.store.model_info(name, include_hidden=admin)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        curve = detail.label_set_curve(rows)
        return (
            detail.header_markdown(info, private=admin),
            _two_decimals(detail.results_frame(rows), detail.PERCENT_COLUMNS),
            _two_decimals(detail.comparison_frame(rows), detail.PERCENT_COLUMNS),
            gr.LinePlot(value=curve, visible=not curve.empty),
            detail.confusion_frame(rows),
        )

    def probes(self, name: str | None, token: str = "") -> tuple[pd.DataFrame, Any]:
        """The Probes section: the figures of every `harness probe repr` report and its t-SNE plots in
        one plotly figure, drawn from the recorded coordinates (older reports: their PNGs); a hidden
        model's only with the admin token, as its page."""
        if not name:
            return pd.DataFrame(columns=detail.PROBE_COLUMNS), plots.tsne_plots([])
        try:
            reports = self.store.probe_reports(name, include_hidden=self.is_admin(token))
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        drawn = [
            (caption, tsne if isinstance(tsne, dict) else Path(tsne).read_bytes())
            for caption, tsne in detail.probe_plots(reports)
        ]
        return detail.probes_frame(reports), plots.tsne_plots(drawn)

    @staticmethod
    def is_admin(token: str | None) -> bool:
        expected = os.environ.get(ADMIN_TOKEN_ENV)
        return bool(expected and token and hmac.compare_digest(token.encode(), expected.encode()))

    # --- plots ---------------------------------------------------------------------------------

    def plots(self, models: list[str], results: pd.DataFrame | None = None) -> tuple[Any, Any]:
        """Grouped bars per dataset of the chosen models (default: the top rows), and the paper's rows
        beside ours for the models that have both; error bars are the 95% intervals."""
        results = self.store.result_frame() if results is None else results
        frame = leaderboard_table(results)
        models = models or frame[ID_COLUMN].drop_duplicates().head(PLOT_DEFAULT_MODELS).tolist()
        columns = [task.column for task in spec.BENCHMARK]
        bounds = _intervals(results)
        chosen = frame[frame[ID_COLUMN].isin(models)]
        both = frame.groupby(ID_COLUMN)["Source"].transform("nunique") == 2
        paired = frame[both & frame[ID_COLUMN].isin(models)]
        if paired.empty:
            paired = frame[both]
        figures = []
        for rows, title in (
            (chosen, "Accuracy per dataset, selected models"),
            (paired.sort_values([ID_COLUMN, "Source"]), "Reported (paper) vs reproduced (this harness)"),
        ):
            series = [(_series_label(row), [row[c] for c in columns]) for _, row in rows.iterrows()]
            intervals = [
                [
                    bounds.get((row[ID_COLUMN], row["Source"], row["Scoring"], task.key))
                    for task in spec.BENCHMARK
                ]
                for _, row in rows.iterrows()
            ]
            figures.append(plots.grouped_bars(columns, series, title, intervals))
        return figures[0], figures[1]

    def class_plots(self, name: str | None, task: str | None, token: str = "") -> tuple[Any, Any]:
        """Per-class accuracy (sorted, worst named) and the confusion pairs of a model's latest
        main-protocol reproduced run of `task`."""
        title = spec.BY_KEY[task].column if task in spec.BY_KEY else "no task"
        row = self._latest_run(name, task, token) if name and task else None
        if row is None:
            return plots.per_class_accuracy({}, title), plots.confusion_pairs([], title)
        per_class = (row["provenance"] or {}).get("per_class_accuracy") or {}
        return (
            plots.per_class_accuracy(per_class, f"Per-class accuracy, {title} ({row['scoring']})"),
            plots.confusion_pairs(row["confusions"] or [], f"Most frequent confusions, {title}"),
        )

    def _latest_run(self, name: str, task: str, token: str) -> dict | None:
        try:
            _, rows = self.store.model_info(name, include_hidden=self.is_admin(token))
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        runs = [
            row
            for row in rows
            if row["task"] == task
            and row["source"] == "reproduced"
            and row["variant"] == spec.BY_KEY[task].main_variant
        ]
        return max(runs, key=lambda row: (row["sample_limit"] is None, row["created"])) if runs else None

    # --- paired comparison and position bias -----------------------------------------------------

    def row_choices(self, results: pd.DataFrame | None = None) -> list[tuple[str, str]]:
        """(label, value) of every table row (model, source, scoring), for the comparison's dropdowns."""
        results = self.store.result_frame() if results is None else results
        if results.empty:
            return []
        rows = best_runs(results).drop_duplicates(ROW_KEY)
        return [
            (
                f"{r.display_name} · {r.source}" + ("" if r.scoring == "paper" else f" ({r.scoring})"),
                _row_value(r),
            )
            for r in rows.sort_values(["display_name", "source"]).itertuples()
        ]

    def compare(self, first: str | None, second: str | None) -> tuple[str, pd.DataFrame]:
        """A - B per dataset and on the average: paired on the questions both answered when both rows have
        per-question outcomes, else unpaired from the two intervals (leaderboard.stats)."""
        if not first or not second:
            return "Pick two rows of the leaderboard.", pd.DataFrame(columns=COMPARE_COLUMNS)
        best = best_runs(self.store.result_frame())
        a, b = _runs_of(best, first), _runs_of(best, second)
        tasks = [key for key in spec.TASK_KEYS if key in a and key in b]
        correctness = self.store.correctness([a[t]["key"] for t in tasks] + [b[t]["key"] for t in tasks])
        records, paired = [], []
        for task in tasks:
            difference = _difference(a[task], b[task], correctness)
            outcomes = correctness.get(a[task]["key"]), correctness.get(b[task]["key"])
            if difference is not None and difference.method == "paired bootstrap":
                paired.append(outcomes)
            records.append(_compare_record(spec.BY_KEY[task].column, a[task], b[task], difference))
        if paired and len(paired) == len(tasks) and len(tasks) > 1:
            average = stats.paired_average_difference(paired)
            mean_a = sum(a[t]["accuracy"] for t in tasks) / len(tasks)
            mean_b = sum(b[t]["accuracy"] for t in tasks) / len(tasks)
            records.append(_compare_record("Average", {"accuracy": mean_a}, {"accuracy": mean_b}, average))
        note = (
            f"**A** = {_row_label(first)}, **B** = {_row_label(second)}. Paired: a bootstrap over the questions "
            f"both answered ({stats.BOOTSTRAP_ITERS:,} resamples) with McNemar's exact p; unpaired (a side "
            "without per-question outcomes, e.g. the paper's rows): Newcombe's interval from the two Wilson "
            "intervals. *Tied*: the 95% interval of the difference contains 0."
        )
        if not tasks:
            note = "These two rows have no dataset in common."
        return note, _cells(pd.DataFrame(records, columns=COMPARE_COLUMNS))

    def bias_table(self) -> pd.DataFrame:
        """Position bias of every reproduced run: letter shares answered vs right, the chi-square test, the flag."""
        records = []
        for row in self.store.position_biases():
            test = stats.position_bias_test(row["position_bias"])
            if test is None:
                continue
            records.append(
                [
                    row["display_name"],
                    spec.BY_KEY[row["task"]].column if row["task"] in spec.BY_KEY else row["task"],
                    row["scoring"],
                    " ".join(
                        f"{letter} {100 * v:.0f}" for letter, v in zip(test.letters, test.answered_share)
                    ),
                    " ".join(f"{letter} {100 * v:.0f}" for letter, v in zip(test.letters, test.gold_share)),
                    round(test.chi2, 1),
                    f"{test.p_value:.1e}",
                    f"⚠ biased: {test.describe()}" if test.flagged else "",
                ]
            )
        records.sort(key=lambda record: (record[7] == "", record[0], record[1]))
        return pd.DataFrame(records, columns=BIAS_COLUMNS)

    # --- downloads ---------------------------------------------------------------------------------

    def export_files(self, name: str | None = None, token: str = "") -> list[str]:
        """Every Eval Ever and HF .eval_results zips of one model (or the whole table), and the per-question
        records (instance JSON lines) of its reproduced rows."""
        from leaderboard.export import eee_records, items_from_store, zip_export

        if name and not self.is_admin(token):
            self.store.model_info(name, include_hidden=False)  # a hidden model is unknown here
        items = items_from_store(self.store, name or None)
        folder = self.download_dir
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _prune(folder)
        stem = f"fgvr-leaderboard-{_slug(name or 'all')}-{hashlib.sha256(repr([i.fields['key'] for i in items]).encode()).hexdigest()[:10]}"
        files = [str(zip_export(items, "every-eval-ever", folder / f"{stem}-every-eval-ever.zip"))]
        if any(item.fields["source"] == "reproduced" for item in items):
            files.append(str(zip_export(items, "hf-eval-results", folder / f"{stem}-hf-eval-results.zip")))
        instances = [json.dumps(record) for _, records in eee_records(items) for record in records]
        if instances:
            path = folder / f"{stem}-questions.jsonl"
            write_lines_atomic(path, instances)
            files.append(str(path))
        return files

    def admin_import(self, token: str, upload: Any) -> str:
        """An admin drops a summary.json or an lmms-eval results JSON: imported like `harness import`.
        The uploaded copy is removed whatever the outcome."""
        path = Path(upload if isinstance(upload, str) else upload.name) if upload else None
        try:
            return self._admin_import(token, path)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)

    def _admin_import(self, token: str, path: Path | None) -> str:
        from leaderboard.importer import import_path

        if not os.environ.get(ADMIN_TOKEN_ENV):
            return f"Admin actions are disabled: start the app with {ADMIN_TOKEN_ENV} set."
        if not self.is_admin(token):
            return "**Refused:** wrong admin token."
        if path is None:
            return "**Refused:** drop a summary.json or an lmms-eval results JSON first."
        with tempfile.TemporaryDirectory() as folder:
            raw = path.read_bytes()
            target = Path(folder) / (SUMMARY_FILE if _looks_like_summary(raw) else "results.json")
            target.write_bytes(raw)
            report = import_path(self.store, target)
        if report.refused:
            return "**Refused:** " + "; ".join(public_text(reason) for _, reason in report.refused)
        if report.files == 0:
            return "**Refused:** not a results file (summary.json or an lmms-eval results JSON)."
        return f"Imported: {report.added} results added, {report.unchanged} already in the store."

    # --- submissions, queue, admin -------------------------------------------------------------

    def submit(
        self,
        model: str,
        base: str,
        revision: str,
        weights: str,
        precision: str,
        tasks: list[str],
        scoring: str,
        submitter: str,
    ) -> str:
        """Validate and queue; every outcome is one message, and none names a server path."""
        request = SubmissionRequest(
            model=(model or "").strip(),
            base=base or "",
            revision=(revision or "").strip() or None,
            weights=weights,
            precision=precision,
            tasks=tuple(tasks or ()),
            scoring=scoring,
            submitter=submitter,
        )
        try:
            job_id, submission = submit_checkpoint(
                self.queue, request, self.policy or SubmissionPolicy.from_env()
            )
        except UserError as exc:
            return f"**Refused:** {public_text(str(exc))}"
        except Exception:  # noqa: BLE001 - the details go to the operator's log, not to the public page
            log.exception("submission failed")
            return "**Refused:** the submission could not be checked (an internal error; the operator's log has it)."
        return (
            f"**Queued** as submission #{job_id}: `{submission.model_name}` ({submission.base}, "
            f"{submission.precision}), tasks: {', '.join(submission.tasks)}. Follow it in the Queue tab."
        )

    def queue_table(self, statuses: list[str], token: str = "") -> pd.DataFrame:
        """The queue; submitter addresses, worker host:pid and server paths only with the admin token."""
        rows = self.queue.list(tuple(statuses or ()))
        frame = pd.DataFrame.from_records(rows, columns=LISTED_COLUMNS)[list(QUEUE_COLUMNS)]
        if not self.is_admin(token):
            frame["worker"] = frame["worker"].map(lambda worker: "a worker" if worker else None)
            frame["submitter"] = frame["submitter"].map(public_submitter)
            frame["error"] = frame["error"].map(lambda error: public_text(error) if error else None)
        frame["tasks"] = frame["tasks"].map(
            lambda tasks: (
                f"all {len(spec.TASK_KEYS)}"
                if len(tasks or ()) == len(spec.TASK_KEYS)
                else ", ".join(tasks or [])
            )
        )
        for column in ("created", "started", "finished"):
            frame[column] = frame[column].map(lambda when: when.strftime("%Y-%m-%d %H:%M") if when else "")
        return _cells(frame.sort_values("id", ascending=False).rename(columns=QUEUE_COLUMNS))

    def admin(self, token: str, action: str, target: str) -> str:
        expected = os.environ.get(ADMIN_TOKEN_ENV)
        if not expected:
            return f"Admin actions are disabled: start the app with {ADMIN_TOKEN_ENV} set."
        if not hmac.compare_digest((token or "").encode(), expected.encode()):
            return "**Refused:** wrong admin token."
        target = (target or "").strip()
        try:
            return self._admin_action(action, target)
        except (UserError, ValueError) as exc:
            return f"**Refused:** {exc}"

    def _admin_action(self, action: str, target: str) -> str:
        if action.endswith("submission"):
            digits = target.lstrip("#")
            if not digits.isdigit():
                raise UserError(f"'{target}' is not a submission id (a number such as 12 or #12)")
            job_id = int(digits)
            if not 0 < job_id < 2**63:  # beyond the database's integers: it cannot exist
                raise UserError(f"no submission #{job_id}")
            (self.queue.requeue if action.startswith("requeue") else self.queue.delete)(job_id)
            return f"Done: {action} #{job_id}."
        if action in ("hide model", "unhide model"):
            self.store.set_hidden(target, action == "hide model")
            return f"Done: {action} `{target}`."
        if action == "delete model":
            return f"Done: deleted `{target}` and its {self.store.delete_model(target)} results."
        raise ValueError(f"unknown action '{action}'")

    # --- wiring --------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        # delete_cache: Gradio's copies of the export files, hourly
        with gr.Blocks(
            title="FGVR leaderboard", analytics_enabled=False, delete_cache=(3600, 3600)
        ) as blocks:
            gr.Markdown("# Fine-grained visual recognition leaderboard")
            with gr.Tabs() as tabs:
                with gr.Tab("Leaderboard", id="leaderboard"):
                    table_inputs, table, downloads = self._leaderboard_tab()
                with gr.Tab("Model detail", id="detail"):
                    detail_model, detail_outputs = self._detail_tab()
                with gr.Tab("Compare", id="compare"):
                    compare_rows = self._compare_tab()
                with gr.Tab("Position bias", id="bias"):
                    bias_table = self._bias_tab()
                with gr.Tab("Plots", id="plots"):
                    plot_models, plot_outputs = self._plots_tab()
                with gr.Tab("Submit", id="submit"):
                    self._submit_tab()
                with gr.Tab("Queue", id="queue"):
                    queue_status, queue_table = self._queue_tab()

            def on_select(evt: gr.SelectData):
                row = evt.row_value or []
                name = row[-1] if row else None
                return gr.Tabs(selected="detail"), gr.Dropdown(value=name)

            table.select(on_select, outputs=[tabs, detail_model], api_visibility="private")

            def on_load(*controls):
                results = self.store.result_frame()  # read once for everything the page shows first
                choices, models = filter_choices(results), self.store.model_choices()
                return (
                    gr.Dropdown(choices=choices["families"]),
                    gr.CheckboxGroup(choices=choices["scorings"]),
                    *self._table_outputs(*controls, results=results),
                    gr.Dropdown(choices=models),
                    gr.Dropdown(choices=models),
                    *self.plots([], results),
                    *[gr.Dropdown(choices=self.row_choices(results)) for _ in compare_rows],
                    self.bias_table(),
                    self.queue_table([]),
                )

            blocks.load(
                on_load,
                inputs=table_inputs,
                outputs=[
                    table_inputs[2],
                    table_inputs[4],
                    table,
                    *downloads,
                    detail_model,
                    plot_models,
                    *plot_outputs,
                    *compare_rows,
                    bias_table,
                    queue_table,
                ],
                api_visibility="private",
            )
        return blocks

    def _leaderboard_tab(self):
        gr.Markdown(INTRO)
        with gr.Row():
            tasks = gr.CheckboxGroup(
                [(t.column, t.key) for t in spec.COLUMNS],
                value=list(spec.TASK_KEYS),
                label="Tasks (columns and average; knowledge-QA columns are shown, never averaged)",
                elem_id="filter-tasks",
                scale=3,
            )
            sizes = gr.CheckboxGroup(list(spec.SIZE_BUCKETS), label="Size", elem_id="filter-size", scale=1)
        with gr.Row():
            families = gr.Dropdown([], multiselect=True, label="Family", elem_id="filter-family")
            sources = gr.CheckboxGroup(list(spec.SOURCES), label="Source", elem_id="filter-source")
            scorings = gr.CheckboxGroup([], label="Scoring", elem_id="filter-scoring")
        with gr.Row():
            search = gr.Textbox(label="Search", placeholder="model or family", elem_id="search", scale=3)
            sort_by = gr.Dropdown(sort_columns(), value=AVERAGE, label="Sort by", elem_id="sort-by", scale=1)
            descending = gr.Checkbox(value=True, label="Descending", scale=1)
        table = gr.Dataframe(
            label="Leaderboard (click a row for the model's detail)",
            interactive=False,
            elem_id="leaderboard-table",
            max_height=640,
            wrap=False,
            pinned_columns=1,
        )
        with gr.Row():
            csv_file = gr.DownloadButton("Download CSV", elem_id="download-csv", size="sm")
            json_file = gr.DownloadButton("Download JSON", elem_id="download-json", size="sm")
            export_button = gr.Button("Export the table (Every Eval Ever, HF .eval_results)", size="sm")
        export_files = gr.File(
            label="Exports of the whole table", file_count="multiple", elem_id="export-all"
        )
        export_button.click(lambda: self.export_files(None), outputs=export_files, api_name="export_table")
        inputs = [tasks, sizes, families, sources, scorings, search, sort_by, descending]
        gr.on(
            [c.change for c in inputs],
            self._table_outputs,
            inputs=inputs,
            outputs=[table, csv_file, json_file],
            api_visibility="private",
            trigger_mode="always_last",
        )  # typing in the search box: the last wins
        gr.api(self.table_records, api_name="leaderboard_table")
        return inputs, table, [csv_file, json_file]

    def _detail_tab(self):
        model = gr.Dropdown([], label="Model", elem_id="detail-model", allow_custom_value=True)
        header = gr.Markdown(elem_id="detail-header")
        results = gr.Dataframe(
            label="Results (every run, with its 95% CI, protocol version and provenance)",
            interactive=False,
            elem_id="detail-results",
        )
        comparison = gr.Dataframe(
            label="Reported vs reproduced", interactive=False, elem_id="detail-comparison"
        )
        curve = gr.LinePlot(
            x="Options per question",
            y="Accuracy (%)",
            color="Series",
            label="Accuracy vs label-set size (tasks run at several sizes)",
            elem_id="detail-curve",
            visible=False,
        )
        confusions = gr.Dataframe(
            label="Most frequent confusions", interactive=False, elem_id="detail-confusions"
        )
        outputs = [header, results, comparison, curve, confusions]
        class_task = gr.Dropdown(
            [(t.column, t.key) for t in spec.COLUMNS],
            value=spec.TASK_KEYS[0],
            label="Task",
            elem_id="class-task",
        )
        with gr.Row():
            per_class = gr.Plot(label="Per-class accuracy", elem_id="plot-per-class")
            confusion_plot = gr.Plot(label="Confusion pairs", elem_id="plot-confusions")
        with gr.Row():
            model_export = gr.Button(
                "Export this model (Every Eval Ever, HF .eval_results, per-question records)", size="sm"
            )
        model_files = gr.File(label="This model's exports", file_count="multiple", elem_id="export-model")
        with gr.Accordion("Admin view", open=False):
            token = gr.Textbox(
                label=f"Admin token ({ADMIN_TOKEN_ENV}): hidden models and server paths",
                type="password",
                elem_id="detail-token",
            )
        gr.on(
            [model.change, token.submit],
            self.detail,
            inputs=[model, token],
            outputs=outputs,
            api_name="model_detail",
        )
        gr.on(
            [model.change, class_task.change, token.submit],
            self.class_plots,
            inputs=[model, class_task, token],
            outputs=[per_class, confusion_plot],
            api_name="class_plots",
        )
        model_export.click(
            self.export_files, inputs=[model, token], outputs=model_files, api_name="export_model"
        )
        gr.Markdown("#### Probes (`harness probe repr`: linear probes, alignment, distances, t-SNE)")
        probe_table = gr.Dataframe(label="Representation probes", interactive=False, elem_id="detail-probes")
        probe_plots = gr.Plot(
            label="t-SNE of objects (dots) and category names (diamonds)", elem_id="detail-probe-plots"
        )
        gr.on(
            [model.change, token.submit],
            self.probes,
            inputs=[model, token],
            outputs=[probe_table, probe_plots],
            api_name="model_probes",
        )
        return model, outputs

    def _plots_tab(self):
        models = gr.Dropdown(
            [],
            multiselect=True,
            label=f"Models (default: the top {PLOT_DEFAULT_MODELS})",
            elem_id="plot-models",
            allow_custom_value=True,
        )
        by_dataset = gr.Plot(elem_id="plot-by-dataset", label="Accuracy per dataset")
        versus = gr.Plot(elem_id="plot-versus", label="Reported vs reproduced")
        models.change(self.plots, inputs=models, outputs=[by_dataset, versus], api_name="plots")
        return models, [by_dataset, versus]

    def _compare_tab(self):
        gr.Markdown(
            "Is A better than B? The accuracy difference per dataset and on the average, with its 95% interval."
        )
        with gr.Row():
            first = gr.Dropdown([], label="A", elem_id="compare-a")
            second = gr.Dropdown([], label="B", elem_id="compare-b")
        note = gr.Markdown(elem_id="compare-note")
        table = gr.Dataframe(label="A − B", interactive=False, elem_id="compare-table", wrap=True)

        def compare_shown(a: str | None, b: str | None):
            note, frame = self.compare(a, b)
            return note, _two_decimals(frame, COMPARE_COLUMNS[1:4])

        gr.on(
            [first.change, second.change],
            compare_shown,
            inputs=[first, second],
            outputs=[note, table],
            api_name="compare",
        )
        return [first, second]

    def _bias_tab(self):
        gr.Markdown(
            "How often each letter was answered against how often it was right. Flagged: Pearson's chi-square "
            f"goodness-of-fit test against the right answers' distribution gives p < {stats.BIAS_ALPHA:g} and a "
            f"letter's share departs from its right share by {100 * stats.BIAS_MIN_DEPARTURE:.0f} points or more."
        )
        table = gr.Dataframe(label="Position bias", interactive=False, elem_id="bias-table", wrap=True)
        gr.api(self.bias_table, api_name="position_bias")
        return table

    def _submit_tab(self):
        from models.registry import MODELS

        gr.Markdown(
            "Submit a checkpoint for evaluation: a folder under the server's submission root, or a hub id. "
            "Weights must be safetensors; checks run before anything is queued."
        )
        model = gr.Textbox(label="Checkpoint (local folder or hub id owner/name)", elem_id="submit-model")
        with gr.Row():
            base = gr.Dropdown(
                sorted(MODELS),
                value="idefics2" if "idefics2" in MODELS else None,
                label="Base architecture",
                elem_id="submit-base",
            )
            revision = gr.Textbox(label="Revision (hub only)", elem_id="submit-revision")
            weights = gr.Radio(list(WEIGHTS), value="full", label="Weights")
            precision = gr.Dropdown(list(PRECISIONS), value="auto", label="Precision")
        with gr.Row():
            tasks = gr.CheckboxGroup(
                [(t.column, t.key) for t in spec.BENCHMARK], value=list(spec.TASK_KEYS), label="Tasks"
            )
            scoring = gr.Radio(list(SCORINGS), value="generate", label="Scoring")
        token = gr.Textbox(
            label=f"Submission token (required when the operator issues them: {SUBMIT_TOKENS_ENV})",
            type="password",
            elem_id="submit-token",
        )
        button = gr.Button("Submit", variant="primary", elem_id="submit-button")
        outcome = gr.Markdown(elem_id="submit-outcome")

        def submit_from_web(
            model, base, revision, weights, precision, tasks, scoring, token, request: gr.Request
        ):
            host = (
                request.client.host if request and request.client else "unknown"
            )  # proxy-aware, see serve()
            try:
                submitter = web_submitter(token, host)
            except UserError as exc:
                return f"**Refused:** {exc}"
            return self.submit(model, base, revision, weights, precision, tasks, scoring, submitter)

        button.click(
            submit_from_web,
            inputs=[model, base, revision, weights, precision, tasks, scoring, token],
            outputs=outcome,
            api_name="submit",
        )

    def _queue_tab(self):
        with gr.Row():
            statuses = gr.CheckboxGroup(list(STATUSES), label="Status", elem_id="queue-status")
            refresh = gr.Button("Refresh", size="sm")
        table = gr.Dataframe(label="Submissions", interactive=False, elem_id="queue-table", wrap=True)
        with gr.Accordion("Admin", open=False):
            token = gr.Textbox(
                label=f"Admin token ({ADMIN_TOKEN_ENV}); Refresh then shows every detail", type="password"
            )
            with gr.Row():
                action = gr.Dropdown(list(ADMIN_ACTIONS), value=ADMIN_ACTIONS[0], label="Action")
                target = gr.Textbox(label="Submission id or model id")
            run = gr.Button("Apply", variant="stop")
            outcome = gr.Markdown()
            run.click(self.admin, inputs=[token, action, target], outputs=outcome, api_name="admin")
            upload = gr.File(
                label="Import a results file (summary.json or an lmms-eval results JSON), as `harness import`",
                file_types=[".json"],
                elem_id="admin-upload",
            )
            imported = gr.Markdown(elem_id="admin-import-outcome")
            upload.upload(
                self.admin_import, inputs=[token, upload], outputs=imported, api_name="admin_import"
            )
        gr.on(
            [statuses.change, refresh.click],
            self.queue_table,
            inputs=[statuses, token],
            outputs=table,
            api_name="queue",
        )
        return statuses, table


def serve(
    host: str = "127.0.0.1", port: int = 7860, db_url: str | None = None, block: bool = True
) -> gr.Blocks:
    """Open the store and start the app; with block=False return the running Blocks (tests).

    The server believes X-Forwarded-For only from the proxies in HARNESS_TRUSTED_PROXIES (uvicorn's own
    proxy-header handling, which otherwise trusts any loopback peer), so the rate limit keys on the real client.
    """
    proxies = trusted_proxies()
    submit_tokens()  # a malformed token list stops the server now, not a submitter later
    os.environ["FORWARDED_ALLOW_IPS"] = proxies  # read by uvicorn when Gradio starts it, just below
    app = LeaderboardApp(ResultStore.open(db_url))
    blocks = app.build()
    blocks.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        ssr_mode=False,
        theme=THEME,
        css=CSS,
        show_error=False,
        quiet=True,
        mcp_server=False,
        allowed_paths=[str(app.download_dir)],
        max_file_size=MAX_UPLOAD_BYTES,
    )
    return blocks
