"""BLIP-2 and InstructBLIP: a Q-Former turns the image into query tokens in front of the prompt.

The Flan-T5 variants are encoder-decoder models (answers scored as decoder labels, generate()
returns only the new tokens); InstructBLIP (Vicuna) is decoder-only, continuing from its language
model's cache. Prompts as in the model cards: InstructBLIP takes the bare instruction, BLIP-2 the
"Question: ... Answer:" form.
"""

from __future__ import annotations

import logging

import torch

from harness.core.errors import UserError
from models.base import FGVRModel
from models.scoring import Seq2SeqScorer, with_cache

log = logging.getLogger(__name__)


class QueryTokenModel(FGVRModel):
    prompt_template = "{question}"
    generate_returns_prompt = False
    # One block of query tokens per prompt, filled with the batch's images in order: a second image
    # would land in the next row's block, so a question's answer would depend on its batch (refused).
    images_per_prompt = 1

    def encode(self, prompts, images):
        counts = {len(row) for row in images} - {self.images_per_prompt}
        if counts:
            raise UserError(
                f"{self.spec.display_name} reads one image per question; a question has {max(counts)} "
                "(use a task with one image per question, or a model that takes several)"
            )
        # The processor puts the query tokens in front of the padded text; move the padding in front of
        # them, so that every row reads [padding, query tokens, prompt] and batching changes nothing.
        batch = super().encode(prompts, images)
        order = torch.sort(batch["attention_mask"], dim=1, stable=True).indices
        batch["input_ids"] = batch["input_ids"].gather(1, order)
        batch["attention_mask"] = batch["attention_mask"].gather(1, order)
        if "qformer_input_ids" in batch:
            batch.update(self.qformer_inputs(prompts))
        return batch

    def __init__(self, *args, **kwargs) -> None:
        self._qformer_cuts: list[
            int
        ] = []  # one entry per cut batch; shared with the prefetch twin (a shallow copy)
        super().__init__(*args, **kwargs)

    @property
    def qformer_truncated(self) -> int:
        """Instructions cut to the Q-Former's position limit so far, by this wrapper or its prefetch thread."""
        return sum(self._qformer_cuts)

    def qformer_inputs(self, instructions: list[str]) -> dict[str, torch.Tensor]:
        """The Q-Former's text input, padded on the right: it has absolute positions (the processor
        pads it on the main tokenizer's side, the left). An instruction longer than its position limit
        (the label-set-size variants reach it) is cut to the limit, as the original implementation
        does; how many were cut is counted in `qformer_truncated` and logged."""
        tokenizer = self.processor.qformer_tokenizer
        limit = self.model.config.qformer_config.max_position_embeddings
        cut = sum(len(ids) > limit for ids in tokenizer(instructions)["input_ids"])
        if cut:
            self._qformer_cuts.append(cut)  # list.append: safe from the prefetch thread
            log.warning(
                "%d instruction(s) longer than the Q-Former's %d positions were truncated (%d so far); the "
                "language model still reads the whole prompt",
                cut,
                limit,
                self.qformer_truncated,
            )
        encoded = tokenizer(
            instructions,
            padding=True,
            padding_side="right",
            truncation=True,
            max_length=limit,
            return_tensors="pt",
        )
        return {
            "qformer_input_ids": encoded["input_ids"].to(self.device),
            "qformer_attention_mask": encoded["attention_mask"].to(self.device),
        }


class InstructBlipVicunaFGVR(QueryTokenModel):
    model_class = "InstructBlipForConditionalGeneration"
    generate_returns_prompt = True  # a decoder-only language model's generate() echoes the prompt ids

    def encode_answered(self, prompts, answers, images):
        # the Q-Former reads the instruction only: an answer in its input would leak into the image tokens
        batch = super().encode_answered(prompts, answers, images)
        batch.update(self.qformer_inputs(prompts))
        return batch

    def continuation_logits(self, prefix, rows, input_ids, attention_mask, position_ids):
        # the wrapper's forward always re-encodes the image; the cached prompt only needs the language model
        return self.model.language_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **with_cache(prefix.cache),
        ).logits


class InstructBlipFlanT5FGVR(QueryTokenModel):
    model_class = "InstructBlipForConditionalGeneration"
    scorer_class = Seq2SeqScorer


class Blip2FlanT5FGVR(QueryTokenModel):
    model_class = "Blip2ForConditionalGeneration"
    prompt_template = "Question: {question} Answer:"
    scorer_class = Seq2SeqScorer
