"""SmolVLM2-2.2B-Instruct, with the checkpoint's chat template: "<|im_start|>User:<image>{question}
<end_of_utterance>\nAssistant:". Generation stops at <end_of_utterance>.

Resolution: the image is resized to at most `longest_edge` px on its longest side (1536 in the
checkpoint), cut into 384 px tiles (each 81 tokens) and followed by the whole image at 384 px; with
`do_image_splitting=false` only the latter. Both are --model-args, since they change accuracy.
"""

from __future__ import annotations

from models.processors import ImageOnlyProcessorModel


class SmolVLM2FGVR(ImageOnlyProcessorModel):
    model_class = "SmolVLMForConditionalGeneration"
    processor_class = "SmolVLMProcessor"
    stop_tokens = ("<end_of_utterance>",)
    extra_args = image_options = ("longest_edge", "do_image_splitting")

    def configure_images(self, image_processor) -> None:
        if "longest_edge" in self.image_settings:
            image_processor.size = {"longest_edge": self.image_settings["longest_edge"]}
        if "do_image_splitting" in self.image_settings:
            image_processor.do_image_splitting = self.image_settings["do_image_splitting"]
