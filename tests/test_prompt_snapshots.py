"""Frozen prompts: the exact text each model receives for one sample question per task.

Regenerate on purpose only: `FGVR_UPDATE_SNAPSHOTS=1 pytest tests/test_prompt_snapshots.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tasks.lmms.hooks import doc_to_text
from tasks.prompts import question_for
from tasks.registry import TASKS

SNAPSHOTS = Path(__file__).parent / "snapshots" / "prompts.json"
SAMPLE_OPTIONS = ["Laysan_Albatross", "Sooty_Albatross", "Heermann_Gull", "Black_footed_Albatross"]


def _sample_doc(task: str) -> dict:
    return {"question": question_for(TASKS[task].noun), "options": SAMPLE_OPTIONS, "answer_index": 2}


def _rendered(tiny_idefics2) -> dict[str, str]:
    from models.idefics2 import Idefics2FGVR

    wrapper = Idefics2FGVR.create_from_arg_string(f"pretrained={tiny_idefics2},device=cpu")
    rendered = {}
    for task in sorted(TASKS):
        question = doc_to_text(_sample_doc(task))
        rendered[f"question/{task}"] = question
        rendered[f"idefics2/{task}"] = wrapper.build_prompt(question, 1)
    return rendered


def test_prompts_match_the_frozen_snapshot(tiny_idefics2):
    rendered = _rendered(tiny_idefics2)
    if os.environ.get("FGVR_UPDATE_SNAPSHOTS"):
        SNAPSHOTS.write_text(json.dumps(rendered, indent=2, sort_keys=True) + "\n")
    if not SNAPSHOTS.exists():
        pytest.fail(f"{SNAPSHOTS} is missing; create it with FGVR_UPDATE_SNAPSHOTS=1")
    frozen = json.loads(SNAPSHOTS.read_text())
    for key, text in rendered.items():
        assert key in frozen, f"{key}: no frozen prompt; regenerate the snapshot on purpose"
        assert text == frozen[key], f"{key}: prompt changed"


def test_bird200_question_is_the_papers_wording():
    assert doc_to_text(_sample_doc("bird200")) == (
        "Which of these birds is shown in the image?\nChoices:\nA. Laysan_Albatross\nB. Sooty_Albatross\n"
        "C. Heermann_Gull\nD. Black_footed_Albatross\nAnswer with the letter from the given choices directly."
    )
