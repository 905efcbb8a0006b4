"""Representation features of a wrapped MLLM: the language model's last-layer hidden states.

Both papers probe the final hidden states of the language model at the last token and averaged
over the tokens; `pooled_hidden_states` computes both for a padded batch (left or right padding:
the attention mask says which positions are real tokens)."""

from __future__ import annotations

import inspect

import torch

from harness.core.errors import UserError

POOLINGS = ("last", "avg")  # last real token, mean over real tokens


def last_layer(output) -> torch.Tensor:
    """The last hidden layer of the language model in a forward output (batch, tokens, width)."""
    hidden = getattr(output, "hidden_states", None)
    if hidden is None:  # BLIP-2-style outputs keep the language model's output apart
        hidden = getattr(getattr(output, "language_model_outputs", None), "hidden_states", None)
    if not hidden:
        raise UserError(
            f"{type(output).__name__} returns no hidden states; representation probes need a "
            "decoder-only language model"
        )
    return hidden[-1]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"last": the state of each row's last real token, "avg": the mean over its real tokens}."""
    mask = attention_mask.to(hidden.device).bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last_index = torch.where(mask, positions, -1).amax(dim=1)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_index]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    avg = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    return {"last": last.float().cpu(), "avg": avg.float().cpu()}


@torch.inference_mode()
def pooled_hidden_states(
    wrapper, inputs: dict[str, torch.Tensor], *, text_only: bool = False
) -> dict[str, torch.Tensor]:
    """Runs the wrapped model on an encoded batch and pools its last hidden layer. Text alone goes to
    the decoder-only language model itself where the wrapped model insists on an image (InstructBLIP)."""
    mask = inputs["attention_mask"]
    try:
        output = wrapper.model(**inputs, position_ids=wrapper.positions(mask), output_hidden_states=True)
    except (TypeError, ValueError) as error:
        language_model = getattr(wrapper.model, "language_model", None)
        if not text_only or language_model is None or language_model.config.is_encoder_decoder:
            raise UserError(
                f"{wrapper.spec.display_name}: this architecture cannot give hidden-state features "
                f"({type(error).__name__}: {error})"
            ) from error
        output = language_model(**inputs, position_ids=wrapper.positions(mask), output_hidden_states=True)
    return pool(last_layer(output), mask)


def text_hidden_states(wrapper, texts: list[str]) -> dict[str, torch.Tensor]:
    """Pooled last-layer states of plain texts, tokenised without a prompt. A model that takes
    `token_type_ids` (PaliGemma's prefix marker) gets the whole text as its prefix, as in a prompt."""
    batch = wrapper.to_device(wrapper.tokenizer(texts, padding=True, return_tensors="pt"))
    if "token_type_ids" in inspect.signature(wrapper.model.forward).parameters:
        batch.setdefault("token_type_ids", torch.zeros_like(batch["input_ids"]))
    return pooled_hidden_states(wrapper, batch, text_only=True)
