"""Gemma 3 (4B and 12B, instruction-tuned), with the checkpoint's chat template: "<start_of_turn>user\n
<start_of_image>{question}<end_of_turn>\n<start_of_turn>model\n"; the processor adds <bos> and expands
<start_of_image> into 256 image tokens. Generation stops at <end_of_turn>.

Resolution: every image is resized to 896x896 px (SigLIP, 256 tokens). `do_pan_and_scan=true` also
encodes up to 4 crops of a non-square image (off by default, as in the checkpoint).
"""

from __future__ import annotations

from models.processors import ImageOnlyProcessorModel


class Gemma3FGVR(ImageOnlyProcessorModel):
    model_class = "Gemma3ForConditionalGeneration"
    processor_class = "Gemma3Processor"
    stop_tokens = ("<end_of_turn>",)
    extra_args = image_options = ("do_pan_and_scan",)

    def build_prompt(self, question, n_images):
        # The template starts with <bos>, which the processor adds again when it tokenizes.
        return super().build_prompt(question, n_images).removeprefix(self.tokenizer.bos_token)


class Gemma3Large(Gemma3FGVR):
    """Gemma 3 12B: the 4B wrapper as it is; its own class so that its registry row is its own."""
