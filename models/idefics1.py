"""IDEFICS (idefics-9b-instruct): gated cross-attention to the image, so the prompt's "<image>"
marks where the processor interleaves the picture, and continuing from the KV cache passes the
image states and the last token's image mask along."""

from __future__ import annotations

import torch

from models.base import FGVRModel
from models.scoring import Prefix, cache_of, with_cache


class Idefics1FGVR(FGVRModel):
    model_class = "IdeficsForVisionText2Text"
    prompt_template = "User:{images}{question}<end_of_utterance>\nAssistant:"
    stop_tokens = ("<end_of_utterance>",)

    def process(self, prompts, images):
        # text and pictures interleaved where the prompt has "<image>" (run in DataLoader workers too)
        interleaved = []
        for prompt, pictures in zip(prompts, images):
            pieces = prompt.split(self.image_token)
            sample = [pieces[0]]
            for picture, text in zip(pictures, pieces[1:]):
                sample += [picture, text]
            interleaved.append([item for item in sample if not isinstance(item, str) or item])
        return self.processor(
            text=interleaved, add_end_of_utterance_token=False, padding=True, return_tensors="pt"
        )

    def prefix_forward(self, inputs):
        out = self.model(
            **inputs, position_ids=self.positions(inputs["attention_mask"]), use_cache=True, logits_to_keep=1
        )
        self.image_states_keyword, states = image_states(self.model.config, out)
        rows = inputs["input_ids"].shape[0]
        if states.shape[0] != rows:  # one entry per image: group them by question, so `rows` select questions
            states = states.unflatten(0, (rows, -1))
        extras = {"image_states": states, "image_mask": inputs["image_attention_mask"][:, -1:]}
        return Prefix(out.logits[:, -1].float(), cache_of(out), inputs["attention_mask"], extras)

    def continuation_logits(self, prefix, rows, input_ids, attention_mask, position_ids):
        image_mask = prefix.extras["image_mask"][rows].expand(
            -1, input_ids.shape[1], -1
        )  # answers see the image
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            image_attention_mask=image_mask,
            **with_cache(prefix.cache),
            **{self.image_states_keyword: prefix.extras["image_states"][rows]},
        ).logits


def image_states(config, out) -> tuple[str, torch.Tensor]:
    """(forward keyword, tensor): the image states of a forward pass, to pass on as generate() does.
    Since transformers 5.24 they are `image_outputs.last_hidden_state`, the vision encoder's output
    before the perceiver (`image_encoder_embeddings`; the perceiver's few small layers run again);
    before, `image_hidden_states` held the perceiver's output where there is one."""
    image_outputs = getattr(out, "image_outputs", None)
    if image_outputs is not None:
        return "image_encoder_embeddings", image_outputs.last_hidden_state
    return (
        "perceiver_embeddings" if config.use_resampler else "image_encoder_embeddings"
    ), out.image_hidden_states
