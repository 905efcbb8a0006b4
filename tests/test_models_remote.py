"""Remote-code wrappers through the real trust_remote_code path, against stand-ins in tests/remote_code/.

Each stand-in folder follows its model's published interface (Qwen-VL-Chat's from_list_format and
model.chat, Phi-3-Vision's processor with <|image_N|> tags, XComposer2's model.chat(tokenizer,
query, image) and interleav_wrap_chat, MobileVLM's -200 image token and get_vision_tower()) on a tiny
network written for transformers 5; its config.json declares that range ("fgvr_transformers"),
which is the documented way a checkpoint overrides the wrapper's range. Copies without that key
show the real check refusing.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import UserError
from models.registry import MODELS
from models.remote import check_transformers
from tests.model_fixtures import LETTERS, NAMES, QUESTION, load, nlls, option_requests, requests
from tests.remote_code.build import STANDINS, build_standin, in_declared_range

DOCUMENTED_PROMPTS = {
    "qwen_vl_chat": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nPicture 1: <img></img>\n",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
    "phi3_vision": ("<|user|>\n<|image_1|>\n", "<|end|>\n<|assistant|>\n"),
    "internlm_xcomposer2": (
        "[UNUSED_TOKEN_146]system\n",
        "[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n",
    ),
    "mobilevlm_v2": (
        "A chat between a curious user and an artificial intelligence assistant.",
        " ASSISTANT:",
    ),
}


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("remote-code")
    return {name: build_standin(name, root / name) for name in STANDINS}


@pytest.fixture(scope="module", params=STANDINS)
def wrapper(request, standins):
    return load(request.param, standins[request.param], trust_remote_code="true")


def test_every_remote_code_model_has_a_standin():
    assert {name for name, spec in MODELS.items() if spec.remote_code} == set(STANDINS)


def test_prompt_follows_the_documented_format(wrapper):
    start, end = DOCUMENTED_PROMPTS[wrapper.spec.name]
    prompt = wrapper.build_prompt("Which bird?", 1)
    assert prompt.startswith(start) and prompt.endswith(end) and "Which bird?" in prompt


def test_scores_are_finite_depend_on_the_image_and_batch_like_single_ones(wrapper):
    letters = nlls(wrapper, option_requests(LETTERS))
    assert all(math.isfinite(x) and x > 0 for x in letters)
    per_doc = [letters[i : i + 4] for i in range(0, len(letters), 4)]
    assert len({tuple(round(x, 5) for x in doc) for doc in per_doc}) == len(per_doc)
    names = nlls(wrapper, option_requests(NAMES, docs=[0]))
    assert min(names) > max(letters[:4])  # several tokens cost more than one
    wrapper.batch_size_per_gpu = 4  # remote-code models answer one request at a time whatever is asked
    assert nlls(wrapper, option_requests(LETTERS)) == pytest.approx(letters, abs=1e-5)


def test_generation_goes_through_the_published_interface(wrapper):
    gen = {"max_new_tokens": 4, "until": []}
    texts = wrapper.generate_until(
        requests("generate_until", [(0, QUESTION, dict(gen)), (1, "Short?", dict(gen))])
    )
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert texts == wrapper.generate_until(
        requests("generate_until", [(0, QUESTION, dict(gen)), (1, "Short?", dict(gen))])
    )


@pytest.mark.parametrize("name", STANDINS)
def test_loading_needs_an_explicit_opt_in(name, standins):
    with pytest.raises(UserError, match="trust_remote_code=true"):
        load(name, standins[name])


def outside_the_range_only(name: str):
    return pytest.mark.skipif(
        in_declared_range(name),
        reason=f"transformers is inside {name}'s declared range here "
        "(the remote-code environment): nothing to refuse",
    )


@pytest.mark.parametrize("name", [pytest.param(n, marks=outside_the_range_only(n)) for n in STANDINS])
def test_outside_the_declared_range_loading_refuses_and_says_how_to_fix_it(name, standins, tmp_path):
    undeclared = tmp_path / name
    shutil.copytree(standins[name], undeclared)
    config = json.loads((undeclared / "config.json").read_text())
    del config["fgvr_transformers"]
    (undeclared / "config.json").write_text(json.dumps(config))
    spec = MODELS[name]
    with pytest.raises(UserError) as refused:
        load(name, undeclared, trust_remote_code="true")
    message = str(refused.value)
    assert spec.transformers in message and "README-remote-code.md" in message and "venv" in message


@pytest.mark.parametrize("name", STANDINS)
def test_the_declared_ranges_admit_the_documented_environment(name):
    check_transformers(MODELS[name], "/nonexistent", installed="4.40.2")
    with pytest.raises(UserError):
        check_transformers(MODELS[name], "/nonexistent", installed="5.0.0")


def _run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _cli_args(name, path, cub_root, cub_choices, scoring, *extra):
    return [
        "run",
        "--model",
        name,
        "--task",
        "bird200",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--model-args",
        f"pretrained={path},device=cpu,dtype=float32,trust_remote_code=true",
        "--scoring",
        scoring,
        "--limit",
        "3",
        "--json",
        "--no-record",
        *extra,
    ]


@pytest.mark.parametrize("scoring", ["generate", "loglik"])
def test_harness_run_with_a_remote_code_model(capsys, tmp_path, standins, cub_root, cub_choices, scoring):
    code, out, err = _run(
        capsys,
        *_cli_args(
            "qwen_vl_chat",
            standins["qwen_vl_chat"],
            cub_root,
            cub_choices,
            scoring,
            "--output-dir",
            str(tmp_path),
        ),
    )
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["n"] == 3


@outside_the_range_only("phi3_vision")
def test_harness_run_refuses_with_exit_2_outside_the_range(capsys, tmp_path, standins, cub_root, cub_choices):
    undeclared = tmp_path / "phi3"
    shutil.copytree(standins["phi3_vision"], undeclared)
    config = json.loads((undeclared / "config.json").read_text())
    del config["fgvr_transformers"]
    (undeclared / "config.json").write_text(json.dumps(config))
    code, _, err = _run(capsys, *_cli_args("phi3_vision", undeclared, cub_root, cub_choices, "generate"))
    assert code == 2
    assert MODELS["phi3_vision"].transformers in err and "README-remote-code.md" in err
