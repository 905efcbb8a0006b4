"""The Gradio app (`harness leaderboard`): table, model detail, plots, submit, queue and admin actions.

`LeaderboardApp` holds the handlers (plain methods, testable without a server); `build()` wires them
into Blocks. Every handler reads the store when it is called, so new results show without a
restart, and nothing happens at import: the store is opened by `serve()`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from harness.config import SCORINGS
from harness.core.errors import UserError
from leaderboard import detail, spec
from leaderboard.plots import grouped_bar_svg
from leaderboard.queue import LISTED_COLUMNS, STATUSES, SubmissionQueue, submit_checkpoint
from leaderboard.store import ResultStore
from leaderboard.submissions import PRECISIONS, WEIGHTS, SubmissionPolicy, SubmissionRequest
from leaderboard.table import AVERAGE, ID_COLUMN, TableQuery, filter_choices, leaderboard_table, sort_columns

ADMIN_TOKEN_ENV = "HARNESS_ADMIN_TOKEN"
ADMIN_ACTIONS = ("requeue submission", "delete submission", "hide model", "unhide model", "delete model")
QUEUE_COLUMNS = {"id": "ID", "model_name": "Model", "base": "Base", "precision": "Precision", "tasks": "Tasks",
                 "status": "Status", "submitter": "Submitter", "created": "Submitted", "started": "Started",
                 "finished": "Finished", "worker": "Worker", "attempts": "Attempts", "error": "Failure reason"}
PLOT_DEFAULT_MODELS = 4
DOWNLOAD_DIR = Path(tempfile.gettempdir()) / "fgvr-leaderboard"
THEME = gr.themes.Default(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                          font_mono=["ui-monospace", "Menlo", "monospace"])  # system fonts: no font download
CSS = ".grouped-bars { width: 100%; height: auto; } #leaderboard-table { font-variant-numeric: tabular-nums; }"
INTRO = (f"Fine-grained visual recognition (FGVR) accuracy of multimodal LLMs on {len(spec.TASK_KEYS)} datasets, "
         "4 options per "
         "question. **reported**: figures published in Finedefics (He et al., ICLR 2025), Table 2/4; "
         "**reproduced**: runs of this harness. The average is shown only for rows with every selected task.")


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


def _series_label(row: pd.Series) -> str:
    scoring = "" if row["Scoring"] == "paper" else f" ({row['Scoring']})"
    return f"{row['Model']} · {row['Source']}{scoring}"


def _datatypes(frame: pd.DataFrame) -> list[str]:
    return ["number" if pd.api.types.is_numeric_dtype(frame[column]) else "str" for column in frame.columns]


class LeaderboardApp:
    def __init__(self, store: ResultStore, policy: SubmissionPolicy | None = None, download_dir: Path | None = None):
        self.store = store
        self.queue = SubmissionQueue(store)
        self.policy = policy
        self.download_dir = download_dir

    # --- the table -----------------------------------------------------------------------------

    @staticmethod
    def query(tasks: list[str], sizes: list[str], families: list[str], sources: list[str], scorings: list[str],
              search: str, sort_by: str, descending: bool) -> TableQuery:
        """The table controls' values as a TableQuery; an empty task selection means every task."""
        return TableQuery(tasks=tuple(tasks or spec.TASK_KEYS), sizes=tuple(sizes or ()), families=tuple(families or ()),
                          sources=tuple(sources or ()), scorings=tuple(scorings or ()), search=search or "",
                          sort_by=sort_by or AVERAGE, descending=bool(descending))

    def table(self, *controls: Any) -> pd.DataFrame:
        return leaderboard_table(self.store.result_frame(), self.query(*controls))

    def table_records(self, tasks: list[str], sizes: list[str], families: list[str], sources: list[str],
                      scorings: list[str], search: str, sort_by: str, descending: bool) -> list[dict]:
        """The table as JSON records (the API endpoint `/leaderboard_table`)."""
        frame = self.table(tasks, sizes, families, sources, scorings, search, sort_by, descending)
        return json.loads(frame.to_json(orient="records", force_ascii=False))

    def _table_outputs(self, *controls: Any, results: pd.DataFrame | None = None) -> tuple[Any, str, str]:
        results = self.store.result_frame() if results is None else results
        frame = leaderboard_table(results, self.query(*controls))
        return gr.Dataframe(value=_cells(frame), datatype=_datatypes(frame)), *self.export(frame)

    def export(self, frame: pd.DataFrame) -> tuple[str, str]:
        """The table as CSV and JSON files (named by their content, so an unchanged table reuses them)."""
        folder = self.download_dir or DOWNLOAD_DIR
        folder.mkdir(parents=True, exist_ok=True)
        _prune(folder)
        paths = []
        for suffix, text in (("csv", frame.to_csv(index=False)),
                             ("json", frame.to_json(orient="records", indent=1, force_ascii=False))):
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            path = folder / f"fgvr-leaderboard-{digest}.{suffix}"
            if not path.exists():
                path.write_text(text)
            paths.append(str(path))
        return paths[0], paths[1]

    # --- the detail page -----------------------------------------------------------------------

    def detail(self, name: str | None) -> tuple[str, pd.DataFrame, pd.DataFrame, gr.LinePlot, pd.DataFrame]:
        if not name:
            empty = pd.DataFrame()
            return "Pick a model, or click a row of the leaderboard.", empty, empty, gr.LinePlot(visible=False), empty
        try:
            info, rows = self.store.model_info(name)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        curve = detail.label_set_curve(rows)
        return (detail.header_markdown(info), detail.results_frame(rows), detail.comparison_frame(rows),
                gr.LinePlot(value=curve, visible=not curve.empty), detail.confusion_frame(rows))

    def probes(self, name: str | None) -> tuple[pd.DataFrame, list]:
        """The Probes section: the figures of every `harness probe repr` report and its t-SNE plots."""
        if not name:
            return pd.DataFrame(columns=detail.PROBE_COLUMNS), []
        try:
            reports = self.store.probe_reports(name)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        gallery = []
        for path, caption in detail.probe_plots(reports):
            with Image.open(path) as image:
                gallery.append((image.convert("RGB"), caption))
        return detail.probes_frame(reports), gallery

    # --- plots ---------------------------------------------------------------------------------

    def plots(self, models: list[str], results: pd.DataFrame | None = None) -> tuple[str, str]:
        frame = leaderboard_table(self.store.result_frame() if results is None else results)
        models = models or frame[ID_COLUMN].drop_duplicates().head(PLOT_DEFAULT_MODELS).tolist()
        columns = [task.column for task in spec.BENCHMARK]
        chosen = frame[frame[ID_COLUMN].isin(models)]
        by_model = [(_series_label(row), [row[c] for c in columns]) for _, row in chosen.iterrows()]
        both = frame.groupby(ID_COLUMN)["Source"].transform("nunique") == 2
        paired = frame[both & frame[ID_COLUMN].isin(models)]
        if paired.empty:
            paired = frame[both]
        versus = [(_series_label(row), [row[c] for c in columns]) for _, row in
                  paired.sort_values([ID_COLUMN, "Source"]).iterrows()]
        return (grouped_bar_svg(columns, by_model, "Accuracy per dataset, selected models"),
                grouped_bar_svg(columns, versus, "Reported (paper) vs reproduced (this harness)"))

    # --- submissions, queue, admin -------------------------------------------------------------

    def submit(self, model: str, base: str, revision: str, weights: str, precision: str, tasks: list[str],
               scoring: str, submitter: str) -> str:
        request = SubmissionRequest(model=(model or "").strip(), base=base or "", revision=(revision or "").strip() or None,
                                    weights=weights, precision=precision, tasks=tuple(tasks or ()), scoring=scoring,
                                    submitter=submitter)
        try:
            job_id, submission = submit_checkpoint(self.queue, request, self.policy or SubmissionPolicy.from_env())
        except UserError as exc:
            return f"**Refused:** {exc}"
        return (f"**Queued** as submission #{job_id}: `{submission.model_name}` ({submission.base}, "
                f"{submission.precision}), tasks: {', '.join(submission.tasks)}. Follow it in the Queue tab.")

    def queue_table(self, statuses: list[str]) -> pd.DataFrame:
        rows = self.queue.list(tuple(statuses or ()))
        frame = pd.DataFrame.from_records(rows, columns=LISTED_COLUMNS)[list(QUEUE_COLUMNS)]
        frame["tasks"] = frame["tasks"].map(
            lambda tasks: f"all {len(spec.TASK_KEYS)}" if len(tasks or ()) == len(spec.TASK_KEYS) else ", ".join(tasks or []))
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
            job_id = int(target.lstrip("#"))
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
        with gr.Blocks(title="FGVR leaderboard", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
            gr.Markdown("# Fine-grained visual recognition leaderboard")
            with gr.Tabs() as tabs:
                with gr.Tab("Leaderboard", id="leaderboard"):
                    table_inputs, table, downloads = self._leaderboard_tab()
                with gr.Tab("Model detail", id="detail"):
                    detail_model, detail_outputs = self._detail_tab()
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
                return (gr.Dropdown(choices=choices["families"]), gr.CheckboxGroup(choices=choices["scorings"]),
                        *self._table_outputs(*controls, results=results), gr.Dropdown(choices=models),
                        gr.Dropdown(choices=models), *self.plots([], results), self.queue_table([]))

            blocks.load(on_load, inputs=table_inputs,
                        outputs=[table_inputs[2], table_inputs[4], table, *downloads, detail_model, plot_models,
                                 *plot_outputs, queue_table], api_visibility="private")
        return blocks

    def _leaderboard_tab(self):
        gr.Markdown(INTRO)
        with gr.Row():
            tasks = gr.CheckboxGroup([(t.column, t.key) for t in spec.COLUMNS], value=list(spec.TASK_KEYS),
                                     label="Tasks (columns and average; knowledge-QA columns are shown, never averaged)", elem_id="filter-tasks", scale=3)
            sizes = gr.CheckboxGroup(list(spec.SIZE_BUCKETS), label="Size", elem_id="filter-size", scale=1)
        with gr.Row():
            families = gr.Dropdown([], multiselect=True, label="Family", elem_id="filter-family")
            sources = gr.CheckboxGroup(list(spec.SOURCES), label="Source", elem_id="filter-source")
            scorings = gr.CheckboxGroup([], label="Scoring", elem_id="filter-scoring")
        with gr.Row():
            search = gr.Textbox(label="Search", placeholder="model or family", elem_id="search", scale=3)
            sort_by = gr.Dropdown(sort_columns(), value=AVERAGE, label="Sort by", elem_id="sort-by", scale=1)
            descending = gr.Checkbox(value=True, label="Descending", scale=1)
        table = gr.Dataframe(label="Leaderboard (click a row for the model's detail)", interactive=False,
                             elem_id="leaderboard-table", max_height=640, wrap=False, pinned_columns=1)
        with gr.Row():
            csv_file = gr.DownloadButton("Download CSV", elem_id="download-csv", size="sm")
            json_file = gr.DownloadButton("Download JSON", elem_id="download-json", size="sm")
        inputs = [tasks, sizes, families, sources, scorings, search, sort_by, descending]
        gr.on([c.change for c in inputs], self._table_outputs, inputs=inputs, outputs=[table, csv_file, json_file],
              api_visibility="private", trigger_mode="always_last")  # typing in the search box: the last wins
        gr.api(self.table_records, api_name="leaderboard_table")
        return inputs, table, [csv_file, json_file]

    def _detail_tab(self):
        model = gr.Dropdown([], label="Model", elem_id="detail-model", allow_custom_value=True)
        header = gr.Markdown(elem_id="detail-header")
        results = gr.Dataframe(label="Results (every run, with its 95% CI, protocol version and provenance)",
                               interactive=False, elem_id="detail-results")
        comparison = gr.Dataframe(label="Reported vs reproduced", interactive=False, elem_id="detail-comparison")
        curve = gr.LinePlot(x="Options per question", y="Accuracy (%)", color="Series",
                            label="Accuracy vs label-set size (tasks run at several sizes)", elem_id="detail-curve",
                            visible=False)
        confusions = gr.Dataframe(label="Most frequent confusions", interactive=False, elem_id="detail-confusions")
        outputs = [header, results, comparison, curve, confusions]
        model.change(self.detail, inputs=model, outputs=outputs, api_name="model_detail")
        gr.Markdown("#### Probes (`harness probe repr`: linear probes, alignment, distances, t-SNE)")
        probe_table = gr.Dataframe(label="Representation probes", interactive=False, elem_id="detail-probes")
        probe_plots = gr.Gallery(label="t-SNE of objects (dots) and category names (diamonds)", columns=2,
                                 elem_id="detail-probe-plots")
        model.change(self.probes, inputs=model, outputs=[probe_table, probe_plots], api_name="model_probes")
        return model, outputs

    def _plots_tab(self):
        models = gr.Dropdown([], multiselect=True, label=f"Models (default: the top {PLOT_DEFAULT_MODELS})",
                             elem_id="plot-models", allow_custom_value=True)
        by_dataset = gr.HTML(elem_id="plot-by-dataset")
        versus = gr.HTML(elem_id="plot-versus")
        models.change(self.plots, inputs=models, outputs=[by_dataset, versus], api_name="plots")
        return models, [by_dataset, versus]

    def _submit_tab(self):
        from models.registry import MODELS

        gr.Markdown("Submit a checkpoint for evaluation: a folder under the server's submission root, or a hub id. "
                    "Weights must be safetensors; checks run before anything is queued.")
        model = gr.Textbox(label="Checkpoint (local folder or hub id owner/name)", elem_id="submit-model")
        with gr.Row():
            base = gr.Dropdown(sorted(MODELS), value="idefics2" if "idefics2" in MODELS else None,
                               label="Base architecture", elem_id="submit-base")
            revision = gr.Textbox(label="Revision (hub only)", elem_id="submit-revision")
            weights = gr.Radio(list(WEIGHTS), value="full", label="Weights")
            precision = gr.Dropdown(list(PRECISIONS), value="auto", label="Precision")
        with gr.Row():
            tasks = gr.CheckboxGroup([(t.column, t.key) for t in spec.BENCHMARK], value=list(spec.TASK_KEYS),
                                     label="Tasks")
            scoring = gr.Radio(list(SCORINGS), value="generate", label="Scoring")
        button = gr.Button("Submit", variant="primary", elem_id="submit-button")
        outcome = gr.Markdown(elem_id="submit-outcome")

        def submit_from_web(model, base, revision, weights, precision, tasks, scoring, request: gr.Request):
            host = request.client.host if request and request.client else "unknown"
            return self.submit(model, base, revision, weights, precision, tasks, scoring, f"web:{host}")

        button.click(submit_from_web, inputs=[model, base, revision, weights, precision, tasks, scoring],
                     outputs=outcome, api_name="submit")

    def _queue_tab(self):
        with gr.Row():
            statuses = gr.CheckboxGroup(list(STATUSES), label="Status", elem_id="queue-status")
            refresh = gr.Button("Refresh", size="sm")
        table = gr.Dataframe(label="Submissions", interactive=False, elem_id="queue-table", wrap=True)
        gr.on([statuses.change, refresh.click], self.queue_table, inputs=statuses, outputs=table, api_name="queue")
        with gr.Accordion("Admin", open=False):
            token = gr.Textbox(label=f"Admin token ({ADMIN_TOKEN_ENV})", type="password")
            with gr.Row():
                action = gr.Dropdown(list(ADMIN_ACTIONS), value=ADMIN_ACTIONS[0], label="Action")
                target = gr.Textbox(label="Submission id or model id")
            run = gr.Button("Apply", variant="stop")
            outcome = gr.Markdown()
            run.click(self.admin, inputs=[token, action, target], outputs=outcome, api_name="admin")
        return statuses, table


def serve(host: str = "127.0.0.1", port: int = 7860, db_url: str | None = None, block: bool = True) -> gr.Blocks:
    """Open the store and start the app; with block=False return the running Blocks (tests)."""
    blocks = LeaderboardApp(ResultStore.open(db_url)).build()
    blocks.launch(server_name=host, server_port=port, prevent_thread_lock=not block, ssr_mode=False,
                  theme=THEME, css=CSS, show_error=True, quiet=True, mcp_server=False,
                  allowed_paths=[str(DOWNLOAD_DIR)])
    return blocks
