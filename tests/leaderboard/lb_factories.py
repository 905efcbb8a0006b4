"""Builders shared by the leaderboard tests: summaries, checkpoints on disk, a fake evaluation."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

FIXTURES = Path(__file__).parent
RUNS = FIXTURES / "runs"
LMMS_RESULTS = FIXTURES / "lmms" / "20250305_120000_results.json"
_BASE_SUMMARY = json.loads((RUNS / "idefics2-bird200-gen" / "summary.json").read_text())


def make_summary(**overrides) -> dict:
    """A valid RunSummary (the checked-in idefics2 bird200 run) with a fresh run_id and the overrides."""
    summary = copy.deepcopy(_BASE_SUMMARY)
    summary["run_id"] = f"test-{uuid.uuid4().hex}"
    summary.update(overrides)
    return summary


def make_checkpoint(
    folder: Path,
    *,
    weights: str = "full",
    config: dict | None = None,
    seed: int = 0,
    base: str = "HuggingFaceM4/idefics2-8b",
) -> Path:
    """A small checkpoint folder: safetensors weights plus config.json (or the adapter pair, on `base`)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"layer.weight": np.random.default_rng(seed).standard_normal((8, 8)).astype(np.float32)}
    if weights == "adapter":
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "r": 8, "base_model_name_or_path": base})
        )
    else:
        save_file(tensors, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(config or {"model_type": "idefics2"}))
    return folder


def fake_evaluate(config) -> dict:
    """Stands in for harness.runner.run_evaluation: a summary for the config, accuracy from the task name."""
    return make_summary(
        model=config.model,
        model_args=dict(config.model_args),
        pretrained=config.model_args.get("pretrained", ""),
        task=config.task,
        lmms_task=f"fgvr_{config.task}_gen",
        scoring=config.scoring,
        limit=config.limit,
        accuracy=0.25 + 0.01 * len(config.task),
    )


@pytest.fixture
def db_url(tmp_path, monkeypatch) -> str:
    """A fresh SQLite store in tmp_path; HARNESS_HOME points there too, so nothing leaks into ~/.cache."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HARNESS_DB_URL", raising=False)
    return f"sqlite:///{tmp_path / 'leaderboard.db'}"


@pytest.fixture
def store(db_url):
    from leaderboard.store import ResultStore

    opened = ResultStore.open(db_url)
    yield opened
    opened.close()


def make_run_folder(
    folder: Path,
    answers: list[str],
    golds: list[int],
    *,
    model: str = "idefics2",
    task: str = "bird200",
    **overrides,
) -> Path:
    """A run folder as `harness run` leaves it: lmms-eval's samples JSONL (one 4-option question per
    answer, the model's text in `filtered_resps`) and a summary computed from it by the runner's own
    scoring and metrics, so the summary and the per-question outcomes agree by construction."""
    from harness.core.results import SCHEMA_VERSION
    from harness.metrics import summarise
    from harness.runner import answer_protocol, class_names_of, score_samples
    from tasks.prompts import question_for
    from tasks.registry import get_task

    spec = get_task(task)
    samples = []
    for number, (answer, gold) in enumerate(zip(answers, golds)):
        labels = [(number + offset) % 10 for offset in range(4)]
        labels[0], labels[gold] = labels[gold], labels[0]
        options = [f"{spec.singular} class {label}" for label in labels]
        doc = {
            "group": number,
            "image": f"/data/{task}/images/{number:05d}.jpg",
            "question": question_for(spec.noun),
            "options": options,
            "option_labels": labels,
            "answer_index": gold,
            "answer_letter": "ABCD"[gold],
            "label": labels[gold],
            "class_name": options[gold],
        }
        samples.append(
            {
                "doc_id": number,
                "doc": doc,
                "target": "ABCD"[gold],
                "resps": [[answer]],
                "filtered_resps": [answer],
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    samples_file = folder / f"samples_fgvr_{task}_gen.jsonl"
    samples_file.write_text("".join(json.dumps(sample) + "\n" for sample in samples))
    (folder / "results.json").write_text("{}")
    metrics = summarise(
        score_samples(samples, "generate", answer_protocol("harness", None)), class_names_of(samples)
    )
    from models.registry import MODELS

    hub_id = MODELS[model].hub_id if model in MODELS else model
    summary = make_summary(
        schema_version=SCHEMA_VERSION,
        pretrained=hub_id,
        model_revision=None,
        run_id=f"{model}-{task}-{folder.name}",
        model=model,
        task=task,
        lmms_task=f"fgvr_{task}_gen",
        results_file=str(folder / "results.json"),
        samples_file=str(samples_file),
        **metrics,
    )
    summary.update(overrides)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


# A Finedefics-on-Stanford-Cars-shaped run, as the authors' released result looks: about a quarter
# right, the answers piled on D while the right letters are spread evenly.
def piled_on_d(golds: list[int], seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return ["D" if rng.random() < 0.8 else "ABCD"[rng.randrange(4)] for _ in golds]


def make_comparison_runs(root: Path, n: int = 300, seed: int = 0) -> Path:
    """Run folders of idefics2 and llava15 on the same bird200 questions (idefics2 clearly better) and
    of finedefics on car196 with its answers piled on D."""
    import random

    rng = random.Random(seed)
    golds = [rng.randrange(4) for _ in range(n)]
    for model, skill in (("idefics2", 0.65), ("llava15", 0.4)):
        answers = ["ABCD"[g] if rng.random() < skill else "ABCD"[(g + 1) % 4] for g in golds]
        make_run_folder(root / model, answers, golds, model=model)
    make_run_folder(
        root / "finedefics-cars", piled_on_d(golds, seed), golds, model="finedefics", task="car196"
    )
    return root
