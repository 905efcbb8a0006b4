"""LLaVA-OneVision-Qwen2-7B (the llava-hf `-ov-hf` checkpoint), with the checkpoint's chat template:
"<|im_start|>user <image>\n{question}<|im_end|><|im_start|>assistant\n". Generation stops at <|im_end|>.

Resolution (anyres_max_9, fixed by the checkpoint): the image at 384x384 px plus the 384 px tiles of the
best-fitting grid among the checkpoint's pinpoints (up to 6x6), pooled to at most 9 tiles' worth of
tokens (729 per tile).
"""

from __future__ import annotations

from models.processors import ImageOnlyProcessorModel


class LlavaOnevisionFGVR(ImageOnlyProcessorModel):
    model_class = "LlavaOnevisionForConditionalGeneration"
    processor_class = "LlavaOnevisionProcessor"
    stop_tokens = ("<|im_end|>",)
