"""LLaVA-1.5 and LLaVA-NeXT (Mistral), in the prompt formats of their llava-hf model cards."""

from __future__ import annotations

from models.base import FGVRModel


class Llava15FGVR(FGVRModel):
    registry_name = "llava15"
    model_class = "LlavaForConditionalGeneration"
    prompt_template = "USER: {images}\n{question}\nASSISTANT:"


class LlavaNextMistralFGVR(FGVRModel):
    registry_name = "llava_next_mistral"
    model_class = "LlavaNextForConditionalGeneration"
    prompt_template = "[INST] {images}\n{question} [/INST]"
