"""Phi-3-Vision-128k-Instruct (remote code), with its own processor: "<|user|>\n<|image_1|>\n{question}
<|end|>\n<|assistant|>\n" as in the model card; generation stops at <|end|>."""

from __future__ import annotations

import torch

from models.remote import RemoteCodeModel
from models.scoring import join_answer, tail_score


class Phi3VisionFGVR(RemoteCodeModel):
    stop_tokens = ("<|end|>",)

    def build_prompt(self, question, n_images):
        tags = "".join(f"<|image_{i}|>\n" for i in range(1, n_images + 1))
        return f"<|user|>\n{tags}{question}<|end|>\n<|assistant|>\n"

    def load_processor(self):
        from transformers import AutoProcessor

        return self._from_pretrained(AutoProcessor)

    def inputs(self, text, images):
        return self.to_device(self.processor(text, images or None, return_tensors="pt"))

    def generate_one(self, question, images, max_new_tokens):
        inputs = self.inputs(self.prompt_for(question, len(images)), images)
        output = self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=self.stop_token_ids(),
            **self.generation_options(),
        )
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def score_answer(self, prompt, answer, images):
        context = self.inputs(prompt, images)
        full = self.inputs(join_answer(prompt, answer), images)
        with torch.inference_mode():
            logits = self.model(**full).logits[0]
        return tail_score(
            logits, full["input_ids"][0], full["input_ids"].shape[1] - context["input_ids"].shape[1]
        )
