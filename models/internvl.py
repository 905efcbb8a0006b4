"""InternVL3 through its transformers-native checkpoints (`OpenGVLab/InternVL3-8B-hf`), with the
checkpoint's chat template: "<|im_start|>user\n<IMG_CONTEXT>\n{question}<|im_end|>\n<|im_start|>assistant\n",
each tile expanded to "<img>" + 256 context tokens + "</img>". Generation stops at <|im_end|>.

Dynamic resolution: with `crop_to_patches=true` an image is cut into 448x448 tiles on the grid closest
to its aspect ratio (at most `max_patches`, 12 in the checkpoint) plus a 448 px thumbnail; with false
(the -hf checkpoint's default) it is one 448x448 tile. Both are --model-args.
"""

from __future__ import annotations

from models.processors import ImageOnlyProcessorModel


class InternVL3FGVR(ImageOnlyProcessorModel):
    model_class = "InternVLForConditionalGeneration"
    processor_class = "InternVLProcessor"
    stop_tokens = ("<|im_end|>",)
    extra_args = image_options = ("crop_to_patches", "min_patches", "max_patches")
