"""The model registry: every model the harness can run, listed once with its metadata.

Importing this module is cheap (no torch): the CLI and lmms-eval's entry-point loader read it.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass

from harness.errors import unknown_name


@dataclass(frozen=True)
class ModelSpec:
    name: str  # harness name: `harness run --model NAME`
    wrapper: str  # "module:Class" of the lmms-eval wrapper
    hub_id: str  # default checkpoint
    display_name: str
    params_b: float
    family: str
    language_model: str
    vision_encoder: str
    licence: str
    remote_code: bool = False
    transformers: str = ">=5.0,<6"  # versions the wrapper is known to work with

    @property
    def lmms_name(self) -> str:
        """The name lmms-eval knows the wrapper by (`lmms-eval --model <lmms_name>`)."""
        return f"{self.name}_fgvr"

    @property
    def lmms_class_path(self) -> str:
        module, _, cls = self.wrapper.partition(":")
        return f"{module}.{cls}"

    def load_wrapper(self) -> type:
        module, _, cls = self.wrapper.partition(":")
        return getattr(importlib.import_module(module), cls)

    def as_dict(self) -> dict:
        return {**asdict(self), "lmms_name": self.lmms_name}


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="idefics2",
            wrapper="models.idefics2:Idefics2FGVR",
            hub_id="HuggingFaceM4/idefics2-8b",
            display_name="Idefics2",
            params_b=8.0,
            family="Idefics",
            language_model="Mistral-7B-v0.1",
            vision_encoder="SigLIP-SO400M",
            licence="Apache-2.0",
        ),
    )
}


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        pass
    for spec in MODELS.values():  # accept lmms-eval names too
        if spec.lmms_name == name:
            return spec
    raise unknown_name("model", name, MODELS)
