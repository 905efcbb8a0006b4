"""The registry: the paper's thirteen models and the current open MLLMs beside them, with full metadata,
every wrapper importable, lmms-eval sees them all."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.core.errors import UserError
from models.base import FGVRModel
from models.registry import MODELS, get_model_spec, spec_of_wrapper

PAPER_MODELS = {
    "llava15",
    "llava_next_mistral",
    "mobilevlm_v2",
    "instructblip_vicuna",
    "instructblip_flant5",
    "phi3_vision",
    "blip2_flant5",
    "internlm_xcomposer2",
    "paligemma",
    "idefics1",
    "idefics2",
    "qwen_vl_chat",
    "finedefics",
}
CURRENT_MODELS = {
    "qwen2_5_vl",
    "qwen3_vl",
    "fine_r1",
    "gemma3_4b",
    "gemma3_12b",
    "internvl3",
    "llava_onevision",
    "smolvlm2",
}
REMOTE_CODE = {"mobilevlm_v2", "phi3_vision", "internlm_xcomposer2", "qwen_vl_chat"}


def test_the_thirteen_models_of_the_paper_and_the_current_ones_are_registered():
    assert PAPER_MODELS | CURRENT_MODELS <= set(MODELS)  # a model added later is no failure here
    assert {name for name in PAPER_MODELS | CURRENT_MODELS if MODELS[name].remote_code} == REMOTE_CODE


@pytest.mark.parametrize("name", sorted(MODELS))  # a model added to the registry is checked here too
def test_every_entry_resolves_imports_and_is_complete(name):
    from packaging.specifiers import SpecifierSet

    spec = MODELS[name]
    wrapper = spec.load_wrapper()
    assert issubclass(wrapper, FGVRModel) and spec_of_wrapper(wrapper) is spec
    assert "/" in spec.hub_id and spec.params_b > 0
    for field in ("display_name", "family", "language_model", "vision_encoder", "licence"):
        assert getattr(spec, field), f"{name}: {field} is empty"
    assert list(SpecifierSet(spec.transformers)), (
        f"{name}: transformers range {spec.transformers!r} is not a range"
    )
    if not spec.remote_code:
        import transformers

        assert hasattr(transformers, wrapper.model_class)
    assert get_model_spec(spec.lmms_name) is spec


def test_unknown_names_get_a_suggestion():
    with pytest.raises(UserError, match="Did you mean 'llava15'"):
        get_model_spec("llava1.5")


def test_lmms_eval_entry_point_registers_every_model():
    from models.manifest import lmms_eval_manifests

    manifests = {m.model_id: m for m in lmms_eval_manifests()}
    assert set(manifests) == {spec.lmms_name for spec in MODELS.values()}


def test_list_models_json(capsys):
    assert main(["list", "models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["name"] for row in rows] == list(MODELS)
    for row in rows:
        assert {"name", "hub_id", "params_b", "remote_code", "transformers", "licence"} <= set(row)


@pytest.mark.parametrize("name", sorted(CURRENT_MODELS))
def test_current_models_are_native_with_their_checkpoints_stop_tokens(name):
    spec = MODELS[name]
    wrapper = spec.load_wrapper()
    assert not spec.remote_code and spec.transformers == MODELS["idefics2"].transformers
    assert wrapper.stop_tokens, f"{name}: generation must stop at the chat turn's end token"


def test_image_options_are_checked_before_loading():
    wrapper = MODELS["qwen2_5_vl"].load_wrapper()
    with pytest.raises(UserError, match="Known: .*min_pixels, max_pixels"):
        wrapper(pretrained="/nonexistent", max_pixel=1000)
    with pytest.raises(UserError, match="max_pixels=lots: expected a whole number"):
        wrapper(pretrained="/nonexistent", max_pixels="lots")


def test_list_models_shows_family_size_and_licence(capsys):
    assert main(["list", "models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name in CURRENT_MODELS:
        spec = MODELS[name]
        assert (
            f"{spec.params_b:.1f}B" in lines[name]
            and spec.family in lines[name]
            and f"({spec.licence})" in lines[name]
        )


def test_every_model_names_the_config_types_it_loads():
    """Submissions and `harness run` refuse a checkpoint of another architecture by these types."""
    from models.registry import MODELS, models_of_type

    for name, spec in MODELS.items():
        assert spec.model_types, f"{name}: no config model_type"
        for model_type in spec.model_types:
            assert name in models_of_type(model_type)
    assert models_of_type("idefics2") == ["idefics2", "finedefics"]  # a fine-tune loads its base's type
    assert models_of_type("qwen2_5_vl") == ["qwen2_5_vl", "fine_r1"]


@pytest.mark.parametrize("name", sorted(name for name, spec in MODELS.items() if not spec.remote_code))
def test_native_model_types_are_those_of_the_class_each_wrapper_loads(name):
    import transformers

    model_class = getattr(transformers, MODELS[name].load_wrapper().model_class)
    assert MODELS[name].model_types == (model_class.config_class.model_type,)
