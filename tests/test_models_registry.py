"""The registry: thirteen models with full metadata, every wrapper importable, lmms-eval sees them all."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.core.errors import UserError
from models.base import FGVRModel
from models.registry import MODELS, get_model_spec

PAPER_MODELS = {
    "llava15", "llava_next_mistral", "mobilevlm_v2", "instructblip_vicuna", "instructblip_flant5", "phi3_vision",
    "blip2_flant5", "internlm_xcomposer2", "paligemma", "idefics1", "idefics2", "qwen_vl_chat", "finedefics",
}
REMOTE_CODE = {"mobilevlm_v2", "phi3_vision", "internlm_xcomposer2", "qwen_vl_chat"}


def test_the_thirteen_models_of_the_paper_are_registered():
    assert PAPER_MODELS <= set(MODELS)
    assert {name for name in PAPER_MODELS if MODELS[name].remote_code} == REMOTE_CODE


@pytest.mark.parametrize("name", sorted(MODELS))  # a model added to the registry is checked here too
def test_every_entry_resolves_imports_and_is_complete(name):
    from packaging.specifiers import SpecifierSet

    spec = MODELS[name]
    wrapper = spec.load_wrapper()
    assert issubclass(wrapper, FGVRModel) and wrapper.registry_name == name
    assert "/" in spec.hub_id and spec.params_b > 0
    for field in ("display_name", "family", "language_model", "vision_encoder", "licence"):
        assert getattr(spec, field), f"{name}: {field} is empty"
    assert list(SpecifierSet(spec.transformers)), f"{name}: transformers range {spec.transformers!r} is not a range"
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
    assert {row["name"] for row in rows} == PAPER_MODELS
    for row in rows:
        assert {"name", "hub_id", "params_b", "remote_code", "transformers", "licence"} <= set(row)


def test_every_model_names_the_config_types_it_loads():
    """Submissions and `harness run` refuse a checkpoint of another architecture by these types."""
    from models.registry import MODEL_TYPES, MODELS, models_of_type

    assert set(MODEL_TYPES) == set(MODELS)
    assert models_of_type("idefics2") == ["idefics2", "finedefics"]
