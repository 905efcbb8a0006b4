"""How a wrapper turns (prompt, images, answer) into log p(answer | prompt, images).

lmms-eval's `multiple_choice` tasks send one log-likelihood request per option. Every scorer has two
paths that must agree (tests check 1e-4 on every native architecture):

- `naive`: each (prompt + answer) sequence is encoded and run through the whole model on its own;
  the reference, and the path that remote-code models use.
- `shared`: the options of one question share its image and prompt, so these are encoded once
  (vision tower + prompt, keeping the language model's KV cache, or the encoder states of an
  encoder-decoder model) and every option's answer tokens are scored from there in one batch.
  The floor is one prefix forward plus one short continuation batch; answers of one token (option
  letters) need no continuation pass at all, the prefix's last logits already score them.

Three answer conventions: decoder-only models continue the prompt (`CausalScorer`), encoder-decoder
models score the answer as decoder `labels` (`Seq2SeqScorer`, Flan-T5), and PaliGemma scores it as a
causal `suffix=` after its bidirectional prefix (`SuffixScorer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import torch

from models.requests import OptionGroup

Score = tuple[float, bool]  # (log p(answer tokens | prompt, images), every answer token is the argmax)


@dataclass
class Prefix:
    """A batch of encoded prompts: what the answers of their options are scored from."""

    last_logits: torch.Tensor  # [batch, vocab]: predicts each answer's first token
    cache: Any  # the language model's KV cache over the prompt
    attention_mask: torch.Tensor  # [batch, prompt length], left-padded
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-row tensors a model needs to continue


@lru_cache(maxsize=1)
def _cache_keyword() -> str:
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"


def cache_of(output) -> Any:
    """The KV cache a forward pass returned: `cache` since transformers 5.24, `past_key_values` before
    (the BLIP family keeps it in `language_model_outputs`)."""
    inner = output.get("language_model_outputs") or output
    return inner.get("cache") if inner.get("cache") is not None else inner.get("past_key_values")


def with_cache(cache: Any) -> dict[str, Any]:
    """The forward keyword argument that continues from `cache`, named as this transformers names it."""
    return {_cache_keyword(): cache}


def join_answer(prompt: str, answer: str) -> str:
    """prompt + answer; lmms-eval's " A" loses its space when the prompt already ends a line or word."""
    return prompt + (answer.lstrip() if prompt.endswith(("\n", " ")) else answer)


def answer_score(logprobs: torch.Tensor, answer: Sequence[int]) -> Score:
    """logprobs: [len(answer), vocab], row j predicting answer[j]."""
    targets = torch.tensor(answer, device=logprobs.device)
    chosen = logprobs.gather(-1, targets[:, None]).squeeze(-1)
    return float(chosen.sum()), bool((logprobs.argmax(-1) == targets).all())


def tail_score(logits: torch.Tensor, input_ids: torch.Tensor, n: int, skip_last: int = 0) -> Score:
    """Scores the n tokens that end `skip_last` tokens before the end of a (left-padded) row. Logits and
    ids are aligned at their ends, so a model that expands an image placeholder into several
    positions (logits longer than ids) is scored the same way."""
    if n <= 0:
        raise ValueError("the continuation added no tokens; cannot score an empty answer")
    end, logits_end = input_ids.shape[0] - skip_last, logits.shape[0] - skip_last
    logprobs = torch.log_softmax(logits[logits_end - n - 1 : logits_end - 1].float(), dim=-1)
    return answer_score(logprobs, input_ids[end - n : end].tolist())


def pad_right(rows: Sequence[Sequence[int]], value: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of right-padded rows."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


class ScoredWrapper(Protocol):
    """What a scorer uses of its wrapper (models.base.FGVRModel provides all of it)."""

    tokenizer: Any
    processor: Any
    model: Any
    device: Any
    position_offset: int

    def build_prompt(self, question: str, n_images: int) -> str: ...
    def encode(self, prompts: list[str], images: list[list]) -> dict[str, torch.Tensor]: ...
    def encode_answered(self, *args, **kwargs) -> dict[str, torch.Tensor]: ...
    def to_device(self, batch) -> dict[str, torch.Tensor]: ...
    def positions(self, attention_mask: torch.Tensor) -> torch.Tensor: ...
    def prefix_forward(self, inputs: dict[str, torch.Tensor]) -> Prefix: ...
    def continuation_logits(self, *args, **kwargs) -> torch.Tensor: ...


class AnswerScorer:
    """Scores answers for one wrapper; subclasses fix the answer convention."""

    def __init__(self, wrapper: ScoredWrapper):
        self.wrapper = wrapper

    def answer_ids(self, prompt: str, answer: str) -> list[int] | None:
        raise NotImplementedError

    def naive(self, prompts: list[str], answers: list[str], images: list[list]) -> list[Score]:
        raise NotImplementedError

    def shared(self, groups: list[OptionGroup]) -> list[list[Score]]:
        """Scores of every option of every group; options whose tokens do not split cleanly after the
        prompt (answer_ids is None) go through the naive path, so both paths always agree."""
        w = self.wrapper
        prompts = [w.prompt_for(g.context, len(g.images)) for g in groups]
        ids = [[self.answer_ids(p, a) for a in g.continuations] for p, g in zip(prompts, groups)]
        todo = [
            (gi, oi)
            for gi, options in enumerate(ids)
            for oi, answer in enumerate(options)
            if answer is not None
        ]
        scores: list[list[Score | None]] = [[None] * len(g.continuations) for g in groups]
        if todo:
            answers = [ids[gi][oi] for gi, oi in todo]
            with torch.inference_mode():
                logprobs = self.shared_logprobs(
                    prompts, [g.images for g in groups], [gi for gi, _ in todo], answers
                )
            for (gi, oi), answer, rows in zip(todo, answers, logprobs):
                scores[gi][oi] = answer_score(rows[: len(answer)], answer)
        for gi, group in enumerate(groups):
            for oi, answer in enumerate(ids[gi]):
                if answer is None:
                    scores[gi][oi] = self.naive([prompts[gi]], [group.continuations[oi]], [group.images])[0]
        return scores

    def shared_logprobs(self, prompts, images, rows: list[int], answers: list[list[int]]) -> torch.Tensor:
        """[len(answers), longest answer, vocab] log-probabilities; `rows[i]` is answer i's prompt."""
        raise NotImplementedError


class CausalScorer(AnswerScorer):
    """Decoder-only models: the answer continues the prompt."""

    def answer_ids(self, prompt: str, answer: str) -> list[int] | None:
        tokenizer = self.wrapper.tokenizer
        context = tokenizer(prompt)["input_ids"]
        full = tokenizer(join_answer(prompt, answer))["input_ids"]
        if len(full) <= len(context) or full[: len(context)] != context:
            return None
        return full[len(context) :]

    def naive(self, prompts, answers, images):
        w = self.wrapper
        full = w.encode_answered(prompts, answers, images)
        context = w.encode(prompts, images)
        lengths = (full["attention_mask"].sum(-1) - context["attention_mask"].sum(-1)).tolist()
        with torch.inference_mode():
            logits = w.model(**full, position_ids=w.positions(full["attention_mask"])).logits.float()
        return [tail_score(logits[row], full["input_ids"][row], n) for row, n in enumerate(lengths)]

    def shared_logprobs(self, prompts, images, rows, answers):
        w = self.wrapper
        prefix = w.prefix_forward(w.encode(prompts, images))
        index = torch.tensor(rows, device=prefix.last_logits.device)
        first = torch.log_softmax(prefix.last_logits[index], dim=-1)[:, None]
        longest = max(len(a) for a in answers)
        if longest == 1:  # one-token answers (option letters): the prefix alone scores them
            return first
        # feed every answer but its last token; the logits at token j predict token j + 1
        pad = w.tokenizer.pad_token_id if w.tokenizer.pad_token_id is not None else 0
        inputs, mask = pad_right([a[:-1] for a in answers], pad, index.device)
        prefix.cache.batch_select_indices(index)
        prompt_mask = prefix.attention_mask[index]
        positions = prompt_mask.sum(-1, keepdim=True) + torch.arange(inputs.shape[1], device=index.device)
        logits = w.continuation_logits(
            prefix, index, inputs, torch.cat([prompt_mask, mask], dim=1), positions + w.position_offset
        )
        return torch.cat([first, torch.log_softmax(logits.float(), dim=-1)], dim=1)


class SuffixScorer(CausalScorer):
    """PaliGemma: the answer is the processor's `suffix=` (causal, after the bidirectional prefix of
    image + prompt), tokenized on its own and followed by eos, which is not scored."""

    def answer_ids(self, prompt: str, answer: str) -> list[int] | None:
        return self.wrapper.tokenizer(answer.strip(), add_special_tokens=False)["input_ids"] or None

    def naive(self, prompts, answers, images):
        w = self.wrapper
        batch = w.processor(
            text=prompts,
            images=images,
            suffix=[a.strip() for a in answers],
            padding=True,
            return_tensors="pt",
        )
        inputs = w.to_device(batch)
        inputs.pop("labels", None)
        with torch.inference_mode():
            logits = w.model(**inputs, position_ids=w.positions(inputs["attention_mask"])).logits.float()
        lengths = [len(self.answer_ids(p, a)) for p, a in zip(prompts, answers)]
        return [
            tail_score(logits[row], inputs["input_ids"][row], n, skip_last=1) for row, n in enumerate(lengths)
        ]


class Seq2SeqScorer(AnswerScorer):
    """Encoder-decoder language models (Flan-T5 in BLIP-2 / InstructBLIP): the answer is the decoder's
    `labels`; the shared path runs the vision tower and encoder once and the decoder per option."""

    def answer_ids(self, prompt: str, answer: str) -> list[int] | None:
        return self.wrapper.tokenizer(answer.strip(), add_special_tokens=False)["input_ids"] or None

    def naive(self, prompts, answers, images):
        w = self.wrapper
        inputs = w.encode(prompts, images)
        ids = [self.answer_ids(p, a) for p, a in zip(prompts, answers)]
        labels, _ = pad_right(ids, -100, w.device)
        with torch.inference_mode():
            logits = w.model(**inputs, labels=labels).logits.float()
        return [answer_score(torch.log_softmax(logits[i, : len(a)], dim=-1), a) for i, a in enumerate(ids)]

    def shared_logprobs(self, prompts, images, rows, answers):
        w = self.wrapper
        inputs = w.encode(prompts, images)
        start = torch.full(
            (len(prompts), 1), w.model.config.text_config.decoder_start_token_id, device=w.device
        )
        encoded = w.model(**inputs, decoder_input_ids=start).language_model_outputs.encoder_last_hidden_state
        index = torch.tensor(rows, device=w.device)
        labels, _ = pad_right(answers, -100, w.device)
        logits = w.model.language_model(
            encoder_outputs=(encoded[index],), attention_mask=inputs["attention_mask"][index], labels=labels
        ).logits
        return torch.log_softmax(logits.float(), dim=-1)
