"""Frozen prompts: the exact text each model receives for one sample question per task.

Regenerate on purpose only: `FGVR_UPDATE_SNAPSHOTS=1 pytest tests/test_prompt_snapshots.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from models.registry import MODELS
from tasks.lmms.hooks import doc_to_text
from tasks.prompts import question_for
from tasks.registry import FGVR_TASKS
from tasks.scoring import AnswerProtocol, answering_under

SNAPSHOTS = Path(__file__).parent / "snapshots" / "prompts.json"
SAMPLE_OPTIONS = ["Laysan_Albatross", "Sooty_Albatross", "Heermann_Gull", "Black_footed_Albatross"]


def _sample_doc(task: str) -> dict:
    return {"question": question_for(FGVR_TASKS[task].noun), "options": SAMPLE_OPTIONS, "answer_index": 2}


def _wrapper(name: str, tmp_path_factory):
    """Every registered model on its tiny checkpoint (remote-code models: their stand-ins in tests/remote_code)."""
    from tests.model_fixtures import load, tiny_checkpoint
    from tests.remote_code.build import build_standin

    if MODELS[name].remote_code:
        return load(
            name, build_standin(name, tmp_path_factory.mktemp("standin") / name), trust_remote_code="true"
        )
    return load(name, tiny_checkpoint(name))


def _rendered(tmp_path_factory) -> dict[str, str]:
    """harness: `<model>/<task>`; foci (the paper's models): `foci/<model>/<task>`, FOCI-Benchmark's
    question wording in its per-model template, as the wrapper renders it under `--protocol foci`."""
    rendered = {}
    for task in sorted(FGVR_TASKS):
        rendered[f"question/{task}"] = doc_to_text(_sample_doc(task))
    for name in sorted(MODELS):
        wrapper = _wrapper(name, tmp_path_factory)
        for task in sorted(FGVR_TASKS):
            rendered[f"{name}/{task}"] = wrapper.build_prompt(rendered[f"question/{task}"], 1)
        if MODELS[name].foci is None:
            continue
        wrapper.set_protocol("foci")
        with answering_under(AnswerProtocol("foci", MODELS[name].foci)):
            for task in sorted(FGVR_TASKS):
                rendered[f"foci/{name}/{task}"] = wrapper.prompt_for(doc_to_text(_sample_doc(task)), 1)
    return rendered


def test_prompts_match_the_frozen_snapshot(tmp_path_factory):
    rendered = _rendered(tmp_path_factory)
    if os.environ.get("FGVR_UPDATE_SNAPSHOTS"):
        SNAPSHOTS.write_text(json.dumps(rendered, indent=2, sort_keys=True) + "\n")
    if not SNAPSHOTS.exists():
        pytest.fail(f"{SNAPSHOTS} is missing; create it with FGVR_UPDATE_SNAPSHOTS=1")
    frozen = json.loads(SNAPSHOTS.read_text())
    for key, text in rendered.items():
        assert key in frozen, f"{key}: no frozen prompt; regenerate the snapshot on purpose"
        assert text == frozen[key], f"{key}: prompt changed"


def test_foci_snapshot_covers_the_thirteen_paper_models():
    frozen = json.loads(SNAPSHOTS.read_text())
    models = {key.split("/")[1] for key in frozen if key.startswith("foci/")}
    assert models == {name for name, spec in MODELS.items() if spec.foci is not None} and len(models) == 13
    # the reference's quirks, as frozen: Idefics2's in-text "User: " inside its chat turn, none for
    # Finedefics, Idefics1's image before "User: ", FOCI's "aircrafts"
    assert "User:<image>User: Which of these birds" in frozen["foci/idefics2/bird200"]
    assert "User: Which" not in frozen["foci/finedefics/bird200"]
    assert frozen["foci/idefics1/bird200"].startswith("<image>User: Which of these birds")
    assert frozen["foci/llava15/aircraft102"].startswith("USER: <image>\nWhich of these aircrafts is shown")
    assert "Which of these aircraft is" in frozen["llava15/aircraft102"]  # the harness protocol's wording


def test_bird200_question_is_the_papers_wording():
    assert doc_to_text(_sample_doc("bird200")) == (
        "Which of these birds is shown in the image?\nChoices:\nA. Laysan_Albatross\nB. Sooty_Albatross\n"
        "C. Heermann_Gull\nD. Black_footed_Albatross\nAnswer with the letter from the given choices directly."
    )
