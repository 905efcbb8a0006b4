"""Idefics2 (HuggingFaceM4/idefics2-8b) and Finedefics, which is an Idefics2 fine-tune.

The chat template comes from the checkpoint (the real format, "User:<image>...<end_of_utterance>\n
Assistant:", when a checkpoint has none); image splitting is off, as in the paper's protocol.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import UserError
from models.base import FGVRModel

IDEFICS2_FORMAT = "User:{images}{question}<end_of_utterance>\nAssistant:"


class Idefics2FGVR(FGVRModel):
    model_class = "Idefics2ForConditionalGeneration"
    stop_tokens = ("<end_of_utterance>",)

    def load_processor(self):
        from transformers import AutoProcessor

        # The paper's protocol evaluates Idefics2 without splitting images into sub-crops.
        return self._from_pretrained(AutoProcessor, do_image_splitting=False)

    def build_prompt(self, question: str, n_images: int) -> str:
        if getattr(self.processor, "chat_template", None):
            return super().build_prompt(question, n_images)
        return IDEFICS2_FORMAT.format(images="<image>" * n_images, question=question)


class FinedeficsFGVR(Idefics2FGVR):
    """Finedefics: a merged checkpoint (`pretrained=`), or `adapter=` a LoRA adapter folder loaded with
    peft on an Idefics2 base (`pretrained=`, else the adapter's recorded base, else idefics2-8b). The
    adapter is merged into the weights (`merge_adapter=false` keeps it separate; a 4-bit base always does).

    The prompt is Idefics2's. Under `--protocol foci` neither model gets the checkpoint's chat
    template alone: FOCI-Benchmark adds an in-text "User: " before the question for checkpoint paths
    containing "idefics" (so Idefics2-8B is asked "User:<image>User: Which of ..."), and none for a
    path named "Finedefics" (models/registry.py, FOCI_RECIPES). The authors' released Finedefics result
    files came from a checkpoint folder named "idefics2-8b-...", so they carry the prefix.
    """

    extra_args = ("adapter", "merge_adapter")

    def accept_extra_args(self, extra):
        self.adapter = extra.pop("adapter", None)
        self.merge_adapter = str(extra.pop("merge_adapter", "true")).lower() in ("1", "true", "yes")
        super().accept_extra_args(extra)

    def __init__(self, pretrained: str | None = None, **kwargs):
        adapter = kwargs.get("adapter")
        if adapter and pretrained in (
            None,
            "",
            "StevenHH2000/Finedefics",
        ):  # an adapter goes on a base, not on Finedefics
            pretrained = adapter_base(Path(adapter))
        super().__init__(pretrained=pretrained, **kwargs)

    def load_model(self, quantisation, path=None):
        model = super().load_model(quantisation, path)
        if not self.adapter:
            return model
        if not (Path(self.adapter) / "adapter_config.json").is_file():
            raise UserError(f"adapter={self.adapter}: not a peft adapter folder (no adapter_config.json)")
        if self.use_safetensors and not (Path(self.adapter) / "adapter_model.safetensors").is_file():
            raise UserError(
                f"adapter={self.adapter}: no adapter_model.safetensors (pickled adapters are not loaded)"
            )
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, self.adapter)
        # merging is exact and faster in full precision; a quantised base keeps the adapter separate
        return model.merge_and_unload() if self.merge_adapter and quantisation is None else model


def adapter_base(adapter: Path) -> str:
    """The base checkpoint an adapter records (peft's base_model_name_or_path), else Idefics2-8B."""
    try:
        recorded = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        recorded = None
    return recorded or "HuggingFaceM4/idefics2-8b"
