"""The stages of training-data construction: parsing, class-name masking, retry-then-record of failures,
the resumable cache (a run killed midway recomputes only what was missing), the prompt files, and the
LLM steps through a real `transformers serve` endpoint."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from finedefics_train.data import attributes as stages
from finedefics_train.data.attributes import Ask, ClassNameMasker, ParseError, StageReport
from finedefics_train.data.cache import ReplyCache, reply_key
from finedefics_train.data.prompts import PROMPT_DIR, load_prompts
from harness.cli import main
from harness.core.errors import UserError
from tasks.fixtures import datasets as synthetic
from tasks.registry import FGVR_TASKS


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory) -> Path:
    from models.fixtures.tiny_chat_lm import build_tiny_chat_lm

    return build_tiny_chat_lm(tmp_path_factory.mktemp("chat") / "tiny-chat")


def cli_json(*argv: str) -> dict:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", "data", *argv, "--json"]) == 0
    return json.loads(printed.getvalue().strip().splitlines()[-1])


def test_attribute_names_are_parsed_from_lists():
    reply = "1. Beak shape\n2) Wing colour: usually dark\n- tail length\n* Eye ring.\nThe size, crown pattern"
    assert stages.parse_attribute_names(reply) == ["beak shape", "wing colour", "tail length", "eye ring",
                                                   "the size", "crown pattern"]  # fmt: skip
    with pytest.raises(ParseError):
        stages.parse_attribute_names("\n - \n1.")


def test_class_names_are_masked_in_any_spelling():
    masker = ClassNameMasker(["Black_footed_Albatross", "Albatross", "Tesla Model S Sedan 2012"], "bird")
    text, count = masker(
        "A black-footed albatross, not an ALBATROSS; a Tesla Model S Sedan 2012. Albatrosses stay."
    )
    assert text == "A bird, not an bird; a bird. Albatrosses stay." and count == 3


class ScriptedLLM:
    """Replies from a script, recording the prompts it was asked (a test double for the retry logic)."""

    spec = "scripted"

    def __init__(self, replies: list[str]):
        self.replies, self.prompts = list(replies), []

    def complete(self, prompts, *, max_new_tokens=256):
        self.prompts += prompts
        return [self.replies.pop(0) for _ in prompts]


def test_unparseable_reply_is_retried_once_then_recorded(tmp_path):
    cache = ReplyCache(tmp_path / "d.jsonl")
    report = StageReport("discovery")
    llm = ScriptedLLM(["!!!", "???", "- beak shape", "..."])
    found = stages.discover_attributes({"bird": "list bird attributes", "car": "list car attributes"}, llm, cache,
                                       report, batch_size=2)  # fmt: skip
    assert found == {"bird": ["beak shape"], "car": []}
    assert llm.prompts[2:] == [
        p + stages.RETRY_REMINDER for p in ("list bird attributes", "list car attributes")
    ]
    assert [r.subject for r in report.failures] == ["car"] and "asked again" in report.failures[0].error
    failed = ReplyCache(tmp_path / "d.jsonl").get(reply_key("car", "list car attributes", "scripted"))
    assert not failed.ok and failed.text == "???"  # the raw reply is kept, never replaced by empty text
    # a re-run asks nothing (failures included) unless told to retry them
    again = ScriptedLLM([])
    stages.discover_attributes(
        {"bird": "list bird attributes"}, again, ReplyCache(tmp_path / "d.jsonl"), StageReport("d")
    )
    assert again.prompts == []
    retry = ScriptedLLM(["- grille"])
    found = stages.discover_attributes({"car": "list car attributes"}, retry,
                                       ReplyCache(tmp_path / "d.jsonl", retry_failed=True), StageReport("d"))  # fmt: skip
    assert found == {"car": ["grille"]}


def test_cache_ignores_a_torn_last_line(tmp_path):
    cache = ReplyCache(tmp_path / "c.jsonl")
    report = StageReport("s")
    stages.ask_all(
        [Ask("a", "p")], cache, "b", lambda batch: ["fine"], lambda t, _: t, batch_size=1, report=report
    )
    with (tmp_path / "c.jsonl").open("a") as handle:
        handle.write('{"key": "trunc')
    assert list(ReplyCache(tmp_path / "c.jsonl").replies) == [reply_key("a", "p", "b")]


def test_interrupted_stage_asks_only_what_was_missing(tmp_path):
    """An interruption between batches (here Ctrl-C in the third batch) keeps the finished batches."""
    asks = [Ask(f"image-{i}", "describe") for i in range(10)]
    calls = []

    def interrupted(batch):
        calls.append([a.subject for a in batch])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return [f"answer {a.subject}" for a in batch]

    with pytest.raises(KeyboardInterrupt):
        stages.ask_all(asks, ReplyCache(tmp_path / "x.jsonl"), "m", interrupted, lambda t, _: t, batch_size=2,
                       report=StageReport("x"))  # fmt: skip
    asked_again = []

    def resumed(batch):
        asked_again.extend(a.subject for a in batch)
        return [f"answer {a.subject}" for a in batch]

    report = StageReport("x")
    replies = stages.ask_all(asks, ReplyCache(tmp_path / "x.jsonl"), "m", resumed, lambda t, _: t, batch_size=2,
                             report=report)  # fmt: skip
    assert asked_again == [f"image-{i}" for i in range(4, 10)] and (report.cached, report.asked) == (4, 6)
    assert [r.text for r in replies.values()] == [f"answer image-{i}" for i in range(10)]


def test_default_prompts_for_every_task():
    for task in FGVR_TASKS:
        prompts = load_prompts(task)
        singular = FGVR_TASKS[task].singular
        assert prompts.superclass == singular and prompts.unit
        discovery = prompts.render("discovery")
        assert (
            f"distinguishing {prompts.superclass} {prompts.unit} in a photo of a {prompts.superclass}"
            in discovery
        )
        assert (
            prompts.render("vqa", attribute="wing color")
            == f"Describe the wing color of the {singular} in this image."
        )


def test_prompt_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("superclass: bird\nunit: species\nvqa: 'Describe the {atribute}'\n")
    with pytest.raises(UserError, match=r"p\.yaml: 'vqa': unknown placeholder\(s\) atribute"):
        load_prompts("bird200", bad)
    bad.write_text("superclas: bird\n")
    with pytest.raises(UserError, match="unknown key"):
        load_prompts("bird200", bad)
    assert (PROMPT_DIR / "common.yaml").is_file()


def test_stop_after_requires_llm_vqa_and_backends_are_checked_first(tmp_path, capsys):
    root = synthetic.make_pets(tmp_path / "pets", n_classes=4)
    code = main(["train", "data", "pet37", "--source", str(root), "--attributes", "llm-vqa", "--llm", "hf:x",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 2 and "needs --vqa" in capsys.readouterr().err
    code = main(
        [
            "train",
            "data",
            "pet37",
            "--source",
            str(root),
            "--attributes",
            "human",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "only bird200" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.subprocess
def test_killed_extraction_resumes_without_recomputing(tmp_path, tiny_chat, tiny_idefics2):
    root = synthetic.make_pets(tmp_path / "pets", n_classes=4, per_class_test=1, per_class_train=3, seed=5)
    out = tmp_path / "out"
    args = ["train", "data", "pet37", "--source", str(root), "--attributes", "llm-vqa", "--llm", f"hf:{tiny_chat}",
            "--vqa", f"model:idefics2,pretrained={tiny_idefics2}", "--negatives", "random", "--batch-size", "1",
            "--max-attributes", "1", "--llm-max-new-tokens", "8", "--vqa-max-new-tokens", "24", "--out", str(out),
            "--stop-after", "extraction"]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=os.environ,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    lines_file = out / "cache" / "extraction.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if lines_file.is_file() and len(lines_file.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(ReplyCache(lines_file).replies)
    n_images = 12
    assert 3 <= done_before < 2 * n_images, "the run was not interrupted midway"
    summary = cli_json(*args[2:])
    extraction = summary["stages"]["extraction"]
    assert extraction["cached"] == done_before and extraction["asked"] == 2 * n_images - done_before
    keys = [json.loads(line)["key"] for line in lines_file.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 2 * n_images  # nothing asked twice
    # and the rest of the pipeline continues from there
    summary = cli_json(*[a for a in args[2:] if a not in ("--stop-after", "extraction")])
    assert summary["n_stage1"] + summary["left_out"] == n_images


@pytest.fixture(scope="module")
def served(tiny_chat):
    from models.fixtures.serve import transformers_serve

    with transformers_serve(tiny_chat) as url:
        yield url


@pytest.mark.slow
@pytest.mark.server
def test_served_llm_gives_the_same_descriptions_as_the_local_one(tmp_path, tiny_chat, tiny_idefics2, served):
    """The LLM steps through `transformers serve` (openai:) equal those of the same model loaded locally (hf:)."""
    root = synthetic.make_cub(tmp_path / "cub", n_classes=4, per_class_test=1, per_class_train=1, seed=6)
    common = ["bird200", "--source", str(root), "--attributes", "llm-vqa", "--vqa",
              f"model:idefics2,pretrained={tiny_idefics2}", "--negatives", "random", "--max-attributes", "1",
              "--llm-max-new-tokens", "10", "--vqa-max-new-tokens", "6", "--out", str(tmp_path / "out")]  # fmt: skip
    local = cli_json(*common, "--llm", f"hf:{tiny_chat}")
    local_rows = datasets.load_from_disk(str(tmp_path / "out" / "stage1")).remove_columns("image").to_list()
    remote = cli_json(*common, "--llm", f"openai:{served}#{tiny_chat}")
    remote_rows = datasets.load_from_disk(str(tmp_path / "out" / "stage1")).remove_columns("image").to_list()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["backends"]["llm"] == f"openai:{served}#{tiny_chat}"
    assert manifest["stages"]["extraction"]["asked"] == 0  # the VQA answers came from the cache
    assert manifest["stages"]["summary"]["asked"] == local["n_stage1"] + local["left_out"]
    assert remote["n_stage1"] == local["n_stage1"] > 0
    assert [r["attribute"] for r in remote_rows] == [r["attribute"] for r in local_rows]


def test_backend_specs_are_checked_before_any_work(tmp_path, capsys):
    root = synthetic.make_pets(tmp_path / "pets", n_classes=4)
    base = [
        "train",
        "data",
        "pet37",
        "--source",
        str(root),
        "--out",
        str(tmp_path / "o"),
        "--attributes",
        "llm-vqa",
    ]
    assert main([*base, "--llm", "gpt4", "--vqa", "model:idefics2"]) == 2
    assert "LLM backend spec 'gpt4'" in capsys.readouterr().err
    assert main([*base, "--llm", "hf:x", "--vqa", "model:idefix2,pretrained=/m"]) == 2
    assert "idefics2" in capsys.readouterr().err  # did you mean
    assert not (tmp_path / "o" / "cache").exists()


def test_a_vqa_model_that_cannot_load_is_a_user_error(tmp_path):
    from finedefics_train.data.vqa import WrapperVQA

    with pytest.raises(UserError, match=r"--vqa model:idefics2,pretrained=.*missing-model.* not available"):
        WrapperVQA(f"model:idefics2,pretrained={tmp_path / 'missing-model'}")


def test_hf_mirror_source_with_class_tags(tmp_path, tiny_chat):
    raw = synthetic.make_dogs(tmp_path / "raw", n_classes=4, per_class_test=1, per_class_train=1, seed=7)
    mirror = synthetic.make_hf_mirror("dog120", raw, tmp_path / "mirror")
    summary = cli_json("dog120", "--source", f"dog120={mirror}", "--attributes", "class-tags", "--llm",
                       f"hf:{tiny_chat}", "--llm-max-new-tokens", "6", "--negatives", "random",
                       "--out", str(tmp_path / "out"))  # fmt: skip
    stage1 = datasets.load_from_disk(str(tmp_path / "out" / "stage1")).remove_columns("image")
    assert summary["n_stage1"] == 4 and all(row["image_id"].startswith("dog120/train/") for row in stage1)


@pytest.mark.slow
@pytest.mark.server
def test_served_vision_model_answers_like_our_wrapper(tmp_path, tiny_idefics2):
    """`--vqa openai:` (the tiny Idefics2 behind `transformers serve`, images inline) answers exactly as
    `--vqa model:idefics2` (our wrapper's generation path) on the same images and questions."""
    from finedefics_train.data.vqa import load_vqa_backend
    from models.fixtures.serve import transformers_serve

    root = synthetic.make_cub(
        tmp_path / "cub", n_classes=3, per_class_test=1, per_class_train=1, with_attributes=False
    )
    images = sorted((root / "images").rglob("*.jpg"))[:3]
    questions = [(image, q) for image, q in zip(images, ["Describe the bird in this image.",
                                                        "Describe the wing color of the bird in this image.",
                                                        "Describe the bill shape of the bird in this image."])]  # fmt: skip
    local = load_vqa_backend(f"model:idefics2,pretrained={tiny_idefics2}", batch_size=3).answer(
        questions, max_new_tokens=5
    )
    with transformers_serve(tiny_idefics2) as url:
        served = load_vqa_backend(f"openai:{url}#{tiny_idefics2}", concurrency=3).answer(
            questions, max_new_tokens=5
        )
    assert served == local and any(local)
