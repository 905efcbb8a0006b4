"""Idefics2 (HuggingFaceM4/idefics2-8b): the chat template from the checkpoint, no image splitting."""

from __future__ import annotations

from models.base import FGVRModel


class Idefics2FGVR(FGVRModel):
    registry_name = "idefics2"
    model_class = "Idefics2ForConditionalGeneration"
    stop_tokens = ("<end_of_utterance>",)

    def load_processor(self):
        from transformers import AutoProcessor

        # The paper's protocol evaluates Idefics2 without splitting images into sub-crops.
        return self._from_pretrained(AutoProcessor, do_image_splitting=False)
