"""Qwen2.5-VL-Instruct, Qwen3-VL-Instruct and Fine-R1 (a Qwen2.5-VL-7B fine-tune), with their own chat
templates ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n
<|im_start|>assistant\n"; Qwen2.5-VL's adds a default system turn). Generation stops at <|im_end|>.

Dynamic resolution: each image is resized to a multiple of 28 px (Qwen2.5-VL; 32 px for Qwen3-VL) whose
area lies between `min_pixels` and `max_pixels` (--model-args; default the checkpoint's
preprocessor_config: 3136 to 12845056 px for Qwen2.5-VL, 65536 to 16777216 px for Qwen3-VL), one
language token per 28x28 (32x32) px.
Positions are multimodal rotary positions (temporal, height, width), which the model derives from the
token ids and image grid; after the prompt, text positions continue from the prompt's largest one.
"""

from __future__ import annotations

import re

import torch

from harness.core.errors import UserError
from models.processors import ImageOnlyProcessorModel
from models.scoring import Prefix, cache_of, with_cache

PIXEL_BUDGET = ("min_pixels", "max_pixels")
# Fine-R1's answer format: "<think>...</think> <answer>choice</answer>"
ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)


def thinking_budget(value) -> int:
    """`thinking_tokens=`: a whole number of tokens, 0 or more."""
    text = str(value).strip()
    if not text.isdigit():
        raise UserError(f"--model-args thinking_tokens={value}: must be a whole number, 0 or more")
    return int(text)


class QwenVLFGVR(ImageOnlyProcessorModel):
    """Qwen2.5-VL-7B-Instruct; the base of the Qwen3-VL and Fine-R1 wrappers."""

    model_class = "Qwen2_5_VLForConditionalGeneration"
    processor_class = "Qwen2_5_VLProcessor"
    stop_tokens = ("<|im_end|>", "<|endoftext|>")
    extra_args = image_options = PIXEL_BUDGET

    def configure_images(self, image_processor) -> None:
        # the pixel budget is the image processor's size: shortest_edge = min_pixels, longest_edge = max_pixels
        size = dict(image_processor.size)
        keys = {"min_pixels": "shortest_edge", "max_pixels": "longest_edge"}
        size.update({keys[name]: value for name, value in self.image_settings.items()})
        image_processor.size = size

    def positions(self, attention_mask):
        return None  # the model derives its multimodal rotary positions from the ids, image grid and mask

    def rope_index(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(3 x batch x length positions, per-row offset of the next text position from the row's length)."""
        keys = ("input_ids", "mm_token_type_ids", "image_grid_thw", "attention_mask")
        return self.model.model.get_rope_index(**{key: inputs[key] for key in keys if key in inputs})

    def prefix_forward(self, inputs):
        positions, deltas = self.rope_index(inputs)
        out = self.model(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1)
        return Prefix(
            out.logits[:, -1].float(), cache_of(out), inputs["attention_mask"], {"rope_deltas": deltas}
        )

    def continuation_logits(self, prefix, rows, input_ids, attention_mask, position_ids):
        # position_ids count on from each prompt's length; the rotary delta moves them past the image grid
        text = position_ids + prefix.extras["rope_deltas"][rows].to(position_ids.device)
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=text.expand(3, -1, -1),
            use_cache=True,
            **with_cache(prefix.cache),
        ).logits


class Qwen3VLFGVR(QwenVLFGVR):
    model_class = "Qwen3VLForConditionalGeneration"
    processor_class = "Qwen3VLProcessor"


class FineR1FGVR(QwenVLFGVR):
    """Fine-R1 (ICLR 2026): reasons in <think>...</think> before answering, so the task's short answer
    budget gets `thinking_tokens=` (default 2048, as in the authors' evaluation) on top; the thinking
    is stripped and the answer taken out of its <answer>...</answer> tags before it is parsed."""

    extra_args = (*PIXEL_BUDGET, "thinking_tokens")

    @classmethod
    def check_extra_args(cls, args):
        super().check_extra_args(args)
        if "thinking_tokens" in args:
            thinking_budget(args["thinking_tokens"])

    def accept_extra_args(self, extra):
        self.thinking_tokens = thinking_budget(extra.pop("thinking_tokens", 2048))
        super().accept_extra_args(extra)

    def new_token_budget(self, gen_kwargs):
        return super().new_token_budget(gen_kwargs) + self.thinking_tokens

    def strip_thinking(self, text):
        answer = super().strip_thinking(text)
        tagged = ANSWER.search(answer)
        return tagged.group(1).strip() if tagged else answer
