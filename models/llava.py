"""LLaVA-1.5 and LLaVA-NeXT (Mistral), in the prompt formats of their llava-hf model cards."""

from __future__ import annotations

from models.base import FGVRModel


class Llava15FGVR(FGVRModel):
    model_class = "LlavaForConditionalGeneration"
    prompt_template = "USER: {images}\n{question}\nASSISTANT:"


class LlavaNextMistralFGVR(FGVRModel):
    model_class = "LlavaNextForConditionalGeneration"
    prompt_template = "[INST] {images}\n{question} [/INST]"
