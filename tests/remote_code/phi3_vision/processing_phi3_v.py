"""Stand-in for Phi-3-Vision's processing_phi3_v.py: `processor(prompt, images, return_tensors="pt")`
turns each `<|image_N|>` tag into N-negative ids, one per image token, as the real processor does."""

import json
import os
import re

import torch
from transformers import AutoTokenizer, BatchFeature

from .standin_core import pixels


class Phi3VImageProcessor:
    def __init__(self, image_size=32, num_img_tokens=16):
        self.image_size = image_size
        self.num_img_tokens = num_img_tokens

    def __call__(self, images, return_tensors="pt"):
        values = torch.stack([pixels(image, self.image_size) for image in images])
        sizes = torch.tensor([[image.height, image.width] for image in images])
        return {
            "pixel_values": values,
            "image_sizes": sizes,
            "num_img_tokens": [self.num_img_tokens] * len(images),
        }


class Phi3VProcessor:
    def __init__(self, image_processor, tokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoProcessor"):
        """Called by AutoProcessor on remote-code processors (ProcessorMixin's hook; nothing to record here)."""

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        with open(os.path.join(path, "preprocessor_config.json")) as handle:
            settings = json.load(handle)
        image_processor = Phi3VImageProcessor(settings["image_size"], settings["num_img_tokens"])
        return cls(image_processor, AutoTokenizer.from_pretrained(path, **kwargs))

    def __call__(self, text, images=None, return_tensors="pt"):
        pattern = r"<\|image_\d+\|>"
        chunks = [self.tokenizer(chunk)["input_ids"] for chunk in re.split(pattern, text)]
        tags = [int(tag.split("|")[1].split("_")[-1]) for tag in re.findall(pattern, text)]
        image_inputs = self.image_processor(images) if images else {}
        ids = chunks[0]
        for tag, chunk in zip(tags, chunks[1:]):
            ids = (
                ids + [-tag] * self.image_processor.num_img_tokens + chunk[1:]
            )  # later chunks lose their <s>
        data = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        if image_inputs:
            data.update(
                pixel_values=image_inputs["pixel_values"][None], image_sizes=image_inputs["image_sizes"]
            )
        return BatchFeature(data)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)
