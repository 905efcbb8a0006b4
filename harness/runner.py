"""The run driver: data -> prepared task -> lmms-eval simple_evaluate -> results files -> summary.

`run_evaluation` is what `harness run`, `harness demo` and the queue worker call. It raises
`UserError` for bad input (checked before any model is loaded) and `EvaluationFailed` when the
evaluation itself does not produce a complete result; it never reports a partial run as a success.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import launch, provenance
from harness.config import RunConfig, format_model_args
from harness.core import identity
from harness.core.errors import EvaluationFailed, UserError
from harness.core.identity import ComputationIdentity
from harness.core.io import write_json_atomic, write_lines_atomic
from harness.core.paths import harness_home, looks_like_local_path, runs_root
from harness.core.results import SCHEMA_VERSION, SUMMARY_FILE, RunSummary, validate_summary
from harness.core.scorings import SCORING_KINDS
from harness.journal import ResponseJournal
from harness.metrics import summarise
from models import distributed
from models.registry import ModelSpec, check_model_args, get_model_spec
from tasks.options import variant_k
from tasks.prepare import OptionPlan, PreparedTask, prepare_task
from tasks.registry import TaskSpec, get_task
from tasks.scoring import AnswerProtocol, ResponseKind, RowScore, answering_under, score_row


@dataclass(frozen=True)
class RunPlan:
    """Everything resolved from a RunConfig before the model is loaded."""

    config: RunConfig
    model: ModelSpec
    task: TaskSpec
    prepared: PreparedTask
    pretrained: str
    run_dir: Path
    identity: ComputationIdentity  # weights, output-changing model-args, prepared data, protocol
    protocol: str = "harness"  # resolved by `resolve_protocol`: part of the run's identity

    @property
    def lmms_task(self) -> str:
        return self.prepared.lmms_task_name(self.config.scoring)

    @property
    def model_revision(self) -> str | None:
        """The weights' content fingerprint (base and adapter; a hub checkpoint: its commit)."""
        return self.identity.weights

    @property
    def answer_protocol(self) -> AnswerProtocol:
        return answer_protocol(self.protocol, self.model)


def answer_protocol(protocol: str, model: ModelSpec | None) -> AnswerProtocol:
    """How answers of `model` are read under `protocol` (FOCI's per-model recipe from the registry)."""
    return AnswerProtocol(protocol, model.foci if protocol == "foci" and model is not None else None)


def resolve_protocol(config: RunConfig, model: ModelSpec, task: TaskSpec) -> str:
    """--protocol, else `vlmclassifier` for knowledge-QA chain of thought and `harness` for the rest
    (docs/protocols.md says why). A protocol that does not cover the run is refused."""
    cot = task.kind == "qa" and config.variant.endswith("cot")
    letters = task.kind == "fgvr" and config.scoring == "generate" and config.variant != "open"
    if config.protocol is None:
        return "vlmclassifier" if cot else "harness"
    if config.protocol == "foci" and not letters:
        raise UserError(
            "--protocol foci is FOCI-Benchmark's reading of generated letters on the six FGVR tasks: "
            "use --scoring generate with a kN variant or a choice file, or --protocol harness"
        )
    if config.protocol == "foci" and model.foci is None:
        raise UserError(
            f"--protocol foci: {model.name} is not one of the paper's models, so FOCI-Benchmark never "
            "evaluated it; use --protocol harness"
        )
    if config.protocol == "vlmclassifier" and not cot:
        raise UserError(
            "--protocol vlmclassifier is ImageWikiQA's chain-of-thought protocol: use it with a knowledge-QA "
            "task and --variant cot or oracle_cot"
        )
    if config.protocol == "vlmclassifier" and getattr(model.load_wrapper(), "chat_interface", False):
        raise UserError(
            f"--protocol vlmclassifier opens the assistant's turn with its trigger, but {model.name} answers "
            "through its own model.chat; use --protocol harness"
        )
    return config.protocol


def check_pretrained(model: ModelSpec, model_args: dict[str, str]) -> str:
    """The checkpoint to load; a hub id must already be cached when the hub is unreachable. An
    `adapter=` without `pretrained=` goes on the base the adapter records."""
    pretrained = (
        model_args.get("pretrained") or adapter_recorded_base(model_args.get("adapter")) or model.hub_id
    )
    if looks_like_local_path(pretrained):
        folder = Path(pretrained).expanduser()
        if not folder.exists():
            raise UserError(f"pretrained={pretrained}: no such folder")
        if not folder.is_dir():
            raise UserError(
                f"pretrained={pretrained} is a file; pass the checkpoint folder (with config.json)"
            )
        check_architecture(model, folder)
        return str(folder.resolve())
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        from models.base import hub_unavailable_message

        if not isinstance(
            try_to_load_from_cache(pretrained, "config.json", revision=model_args.get("revision")), str
        ):
            raise UserError(hub_unavailable_message(pretrained))
    return pretrained


def check_architecture(model: ModelSpec, folder: Path) -> None:
    """A local checkpoint must be of an architecture the wrapper loads, said in one line before loading."""
    from models.registry import models_of_type

    config_file = folder / "config.json"
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except FileNotFoundError:
        raise UserError(f"pretrained={folder}: no config.json; pass the checkpoint folder itself") from None
    except (OSError, ValueError, AttributeError) as error:
        raise UserError(f"{config_file}: not a readable JSON config ({error})") from None
    expected = model.model_types
    if expected and model_type not in expected:
        fits = models_of_type(str(model_type))
        hint = f" Did you mean --model {' or '.join(fits)}?" if fits else ""
        raise UserError(
            f"pretrained={folder} is a '{model_type}' checkpoint, but --model {model.name} loads "
            f"{' or '.join(expected)} checkpoints.{hint}"
        )


def adapter_recorded_base(adapter: str | None) -> str | None:
    """The base an adapter folder records (peft's base_model_name_or_path), or None without an adapter."""
    if not adapter:
        return None
    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise UserError(f"adapter={adapter}: not a peft adapter folder (no adapter_config.json)")
    from models.idefics2 import adapter_base

    return adapter_base(folder)


def read_split(task: TaskSpec, config: RunConfig):
    if config.data_root is None:
        raise UserError(f"--data-root is required: the folder holding the {task.dataset} test set")
    if not config.data_root.exists():
        raise UserError(f"--data-root {config.data_root} does not exist")
    return task.read(
        config.data_root,
        classnames=config.classnames,
        choices=config.choices,
        skip_missing=config.skip_missing,
    )


def option_plan(config: RunConfig) -> OptionPlan:
    if config.choices is not None:
        if not config.choices.is_file():
            raise UserError(f"--choices {config.choices} does not exist")
        return OptionPlan(
            "choice_file",
            choice_file=config.choices,
            circular=config.circular,
            skip_missing=config.skip_missing,
        )
    if config.variant in ("all", "open"):
        source = {"all": "all_classes", "open": "open"}[config.variant]
        return OptionPlan(source, circular=config.circular, skip_missing=config.skip_missing)
    k = variant_k(config.variant)
    if k is not None:
        if k < 2:
            raise UserError(f"--variant {config.variant}: a question needs at least 2 options (k2 or more)")
        return OptionPlan(
            config.options,
            k=k,
            clip_model=config.clip_model,
            circular=config.circular,
            skip_missing=config.skip_missing,
        )
    raise UserError(f"--variant {config.variant}: expected kN (e.g. k4, k20), all, or open")


def check_output_dir(folder: Path | None) -> None:
    """--output-dir must be (or be creatable as) a folder: found when planning, not after the evaluation."""
    if folder is None:
        return
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(
            f"--output-dir {folder}: {existing} is a file, not a folder; choose another --output-dir"
        )
    if existing is not None and not os.access(existing, os.W_OK):
        raise UserError(f"--output-dir {folder}: {existing} is not writable; choose another --output-dir")


def check_task_flags(config: RunConfig, task: TaskSpec) -> None:
    """Flags of the other kind of task are refused, not ignored: options flags for a knowledge-QA
    task (its options come from the question file), --questions for an image-classification task."""
    if task.kind == "qa":
        ignored = [
            flag
            for flag, given in (
                ("--choices", config.choices is not None),
                ("--circular", config.circular),
                (f"--options {config.options}", config.options != "random"),
                ("--clip-model", config.clip_model is not None),
            )
            if given
        ]
        if ignored:
            raise UserError(
                f"--task {task.key} is a knowledge-QA task: its options come from --questions, so "
                f"{', '.join(ignored)} would do nothing; leave {'it' if len(ignored) == 1 else 'them'} out"
            )
    elif config.questions is not None:
        raise UserError(
            f"--questions is for the knowledge-QA tasks (imagewikiqa, <task>_wikiqa); --task {task.key} "
            "asks about its own classes: leave --questions out"
        )


def plan_run(config: RunConfig) -> RunPlan:
    model = get_model_spec(config.model)
    task = get_task(config.task)
    check_task_flags(config, task)
    check_model_args(model, config.model_args)  # a typo stops here, before data preparation or CLIP mining
    check_output_dir(config.output_dir)
    pretrained = check_pretrained(model, config.model_args)
    if task.kind == "qa":  # knowledge-QA tasks: questions from a file (tasks.knowledge_qa)
        from tasks.knowledge_qa import prepare_qa_task, qa_variant

        prepared = prepare_qa_task(
            task,
            config.data_root,
            config.questions,
            variant=qa_variant(config.variant, config.scoring),
            seed=config.seed,
            skip_missing=config.skip_missing,
            classnames=config.classnames,
        )
    else:
        plan = option_plan(config)
        split = read_split(task, config)
        prepared = prepare_task(task, split, plan, seed=config.seed)
    protocol = resolve_protocol(config, model, task)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_name = (
        f"{model.name}__{task.key}-{prepared.variant}__{config.scoring}-{protocol}__"
        f"{stamp}-{uuid.uuid4().hex[:6]}"
    )
    run_dir = (config.output_dir or runs_root()) / run_name
    identity_ = run_identity(config, model, pretrained, prepared, protocol)
    return RunPlan(config, model, task, prepared, pretrained, run_dir, identity_, protocol)


def run_identity(
    config: RunConfig, model: ModelSpec, pretrained: str, prepared: PreparedTask, protocol: str
) -> ComputationIdentity:
    """What identifies this run's answers: the weights, the model-args, the prepared data (its content
    fingerprint, which covers the options and the seed), the scoring and the protocol."""
    return identity.identify(
        model.name,
        pretrained,
        config.model_args,
        data=f"{prepared.meta.fingerprint}|{config.scoring}",
        protocol=protocol,
    )


def journal_for(plan: RunPlan) -> ResponseJournal:
    """The response journal of this run's inputs: the same command finds it again after an interruption.
    Keyed by the run's identity (harness.core.identity): weights rewritten in place, another adapter or
    another output-changing model-arg start a new journal."""
    digest = identity.computation_key(plan.identity)[:24]
    # each data-parallel rank answers its own shard (the same one when the same command is re-run)
    shard = f"-rank{distributed.rank()}of{distributed.world_size()}" if distributed.world_size() > 1 else ""
    return ResponseJournal(
        harness_home() / "journals" / f"{plan.model.name}-{plan.task.key}-{digest}{shard}.jsonl"
    )


def launch_ranks(config: RunConfig, argv: list[str]) -> int:
    """`harness run --num-processes N`: checks the input and prepares the task once, here (bad input
    stops before any process starts, and the ranks find the prepared task in the cache), then runs
    the same command in N data-parallel ranks. Rank 0 gathers, writes and prints; the exit code is
    0 only when every rank succeeded."""
    plan_run(config)
    print(f"launching {config.num_processes} data-parallel processes", file=sys.stderr)
    return launch.launch(launch.without_num_processes(argv), config.num_processes)


def load_model(plan: RunPlan):
    """The lmms-eval wrapper instance, loaded the way lmms-eval itself would create it."""
    model_args = format_model_args(
        {**plan.config.model_args, "pretrained": plan.pretrained, "protocol": plan.protocol}
    )
    try:
        return plan.model.load_wrapper().create_from_arg_string(
            model_args, {"batch_size": plan.config.batch_size, "num_workers": plan.config.num_workers}
        )
    except UserError:
        raise
    except Exception as error:
        if Path(plan.pretrained).is_dir():  # a local checkpoint that does not load is bad input, not a crash
            reason = str(error) if len(str(error)) <= 400 else str(error)[:400] + " …"
            raise UserError(
                f"pretrained={plan.pretrained}: the checkpoint could not be loaded "
                f"({type(error).__name__}: {reason})"
            ) from error
        raise


def evaluate(
    plan: RunPlan, datetime_str: str, journal: ResponseJournal
) -> tuple[dict, list[dict], list[str]] | None:
    """Run lmms-eval on the prepared task; returns (results, samples of our task, the model's request
    failures), or None on a data-parallel rank other than 0 (lmms-eval gathers everything on rank 0)."""
    from lmms_eval.tasks import TaskManager

    config = plan.config
    manager = TaskManager(include_path=str(plan.prepared.lmms_dir), include_defaults=False)
    rows_per_question = plan.prepared.n_rows // plan.prepared.n_questions
    limit = config.limit * rows_per_question if config.limit else None  # whole questions, all rotations
    try:
        lm = load_model(plan)
        journal.attach(lm)
        with answering_under(plan.answer_protocol):
            results = evaluate_with_lmms(plan, lm, manager, limit, datetime_str)
    except UserError:
        raise
    except Exception as error:
        saved = (
            f"; {len(journal.responses)} responses are saved, re-run the same command to resume"
            if journal.responses
            else ""
        )
        raise EvaluationFailed(
            f"{distributed.describe_rank()}lmms-eval failed on {plan.lmms_task}: {type(error).__name__}: {error}{saved}"
        ) from error
    if not distributed.is_main_process():
        return None
    if not results or plan.lmms_task not in results.get("results", {}):
        raise EvaluationFailed(f"lmms-eval returned no result for {plan.lmms_task}")
    results["config"]["model"] = plan.model.lmms_name
    results["config"]["protocol"] = plan.protocol
    if getattr(lm, "qformer_truncated", 0):  # InstructBLIP: instructions cut to the Q-Former's positions
        results["config"]["qformer_truncated"] = lm.qformer_truncated
    samples = results.pop("samples", {}).get(plan.lmms_task, [])
    expected = min(plan.prepared.n_rows, limit or plan.prepared.n_rows)
    if len(samples) != expected:
        raise EvaluationFailed(f"{plan.lmms_task}: {len(samples)} answered questions, expected {expected}")
    return results, samples, list(getattr(lm, "request_failures", []))


def evaluate_with_lmms(plan: RunPlan, lm, manager, limit: int | None, datetime_str: str) -> dict:
    """lmms-eval's simple_evaluate on the prepared task, with the run's seeds."""
    from lmms_eval.evaluator import simple_evaluate

    config = plan.config
    return simple_evaluate(
        model=lm,
        model_args=format_model_args({**config.model_args, "pretrained": plan.pretrained}),
        tasks=[plan.lmms_task],
        batch_size=config.batch_size,
        limit=limit,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=config.seed,
        numpy_random_seed=config.seed,
        torch_random_seed=config.seed,
        fewshot_random_seed=config.seed,
        datetime_str=datetime_str,
        process_docs_parallel=1,
    )


def response_kind(plan: RunPlan) -> ResponseKind:
    return kind_for(plan.prepared.variant, plan.config.scoring)


def kind_for(variant: str, scoring: str) -> ResponseKind:
    """How a run's responses are scored: a class named (open world), a letter generated, options scored.
    The exports re-score a run folder's samples with it, as the run did."""
    if variant == "open":
        return "open"
    return SCORING_KINDS[scoring].response


def score_samples(samples: list[dict], kind: ResponseKind, protocol: AnswerProtocol) -> list[RowScore]:
    """Every answered row, scored by the code lmms-eval's hooks ran on the same responses, in file
    (document) order: `vlmclassifier`'s random letters are drawn in that order from a fresh source."""
    protocol = protocol.fresh()
    return [
        score_row(sample["doc"], sample["filtered_resps"], kind, protocol)
        for sample in sorted(samples, key=lambda s: s["doc_id"])
    ]


def class_names_of(samples: list[dict]) -> dict[int, str]:
    """Dataset label -> class name, from the answered rows: the dataset's names win over the choice file's."""
    names: dict[int, str] = {}
    for sample in samples:
        doc = sample["doc"]
        names.update(enumerate(doc.get("class_names") or []))
        for label, option in zip(doc.get("option_labels") or [], doc.get("options") or []):
            names.setdefault(int(label), option)
    names.update((int(s["doc"]["label"]), s["doc"]["class_name"]) for s in samples)
    return names


def check_failures(rows: list[RowScore], lm_failures: list[str], task: str) -> None:
    """A run where every request failed is a failed evaluation, not a run with zero accuracy."""
    if rows and all(row.failed for row in rows):
        first = lm_failures[0] if lm_failures else "no answer was produced"
        raise EvaluationFailed(f"every request of {task} failed in the model; the first: {first}")


def write_lmms_files(
    run_dir: Path, results: dict, samples: list[dict], task_name: str, date_id: str
) -> tuple[Path, Path]:
    """lmms-eval's own files, in its naming: <date>_results.json and <date>_samples_<task>.jsonl."""
    from lmms_eval.utils import handle_non_serializable

    results_file = run_dir / f"{date_id}_results.json"
    samples_file = run_dir / f"{date_id}_samples_{task_name}.jsonl"
    write_json_atomic(results_file, json.loads(json.dumps(results, default=handle_non_serializable)))
    write_lines_atomic(
        samples_file,
        (json.dumps(without_inline_images(sample), default=handle_non_serializable) for sample in samples),
    )
    return results_file, samples_file


def without_inline_images(sample: dict) -> dict:
    """A logged sample with its image named by key (the file under the dataset root) instead of the
    base64 copy lmms-eval puts in `input_media` (40-70 KB a question at the datasets' image sizes)."""
    if "input_media" not in sample:
        return sample
    key = (sample.get("doc") or {}).get("image_key")
    kept = {k: v for k, v in sample.items() if k != "input_media"}
    if key:
        kept["input_media"] = [key]
    return kept


def run_evaluation(config: RunConfig, *, command: list[str] | None = None) -> RunSummary | None:
    """Evaluates and writes the run folder; None on a data-parallel rank other than 0."""
    plan = plan_run(config)
    now = datetime.now(UTC)
    date_id = now.strftime("%Y-%m-%dT%H-%M-%S")
    journal = journal_for(plan)
    if journal.resumed:
        print(
            f"resuming: {journal.resumed} responses from an interrupted run ({journal.path})", file=sys.stderr
        )
    evaluated = evaluate(plan, datetime_str=now.strftime("%Y%m%d_%H%M%S"), journal=journal)
    if evaluated is None:
        journal.discard()
        return None
    results, samples, failures = evaluated
    rows = score_samples(samples, response_kind(plan), plan.answer_protocol)
    check_failures(rows, failures, plan.lmms_task)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    results_file, samples_file = write_lmms_files(plan.run_dir, results, samples, plan.lmms_task, date_id)
    metrics = summarise(rows, class_names_of(samples))
    meta = plan.prepared.meta
    summary: RunSummary = {
        "schema_version": SCHEMA_VERSION,
        "run_id": plan.run_dir.name,
        "created": now.isoformat(timespec="seconds"),
        "model": plan.model.name,
        "model_args": {**config.model_args, "pretrained": plan.pretrained},
        "pretrained": plan.pretrained,
        "model_revision": plan.model_revision,
        "identity": identity.computation_key(plan.identity),
        "task": plan.task.key,
        "lmms_task": plan.lmms_task,
        "task_version": meta.task_version,
        "variant": plan.prepared.variant,
        "scoring": config.scoring,
        "protocol": plan.protocol,
        "seed": config.seed,
        "option_source": meta.option_source,
        "option_source_detail": {
            "choice_file": meta.choice_file,
            "choice_file_sha256": meta.choice_file_sha256,
            "k": meta.k,
            "prepared": str(plan.prepared.path),
            "fingerprint": meta.fingerprint,
            "data_root": meta.source_root,
            "source_format": meta.source_format,
            "skipped_images": len(meta.skipped),
            "skipped_choice_entries": len(meta.skipped_choice_entries),
            "clip_model": meta.clip_model,
            "circular": meta.circular,
        },
        "limit": config.limit,
        **metrics,
        "results_file": str(results_file),
        "samples_file": str(samples_file),
        "provenance": provenance.collect(
            command or sys.argv,
            device=config.model_args.get("device", "auto"),
            num_processes=distributed.world_size(),
            batch_size=config.batch_size,
        ),
    }
    validate_summary(summary, str(plan.run_dir / SUMMARY_FILE))  # the contract holds before the file exists
    write_json_atomic(plan.run_dir / SUMMARY_FILE, summary)
    journal.discard()
    return summary
