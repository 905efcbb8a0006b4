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
