"""Representation features of a wrapped MLLM: the language model's last-layer hidden states.

Both papers probe the final hidden states of the language model at the last token and averaged
over the tokens; `pooled_hidden_states` computes both for a padded batch (left or right padding:
the attention mask says which positions are real tokens)."""

from __future__ import annotations

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
def pooled_hidden_states(wrapper, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Runs the wrapped model on an encoded batch and pools its last hidden layer."""
    mask = inputs["attention_mask"]
    try:
        output = wrapper.model(**inputs, position_ids=wrapper.positions(mask), output_hidden_states=True)
    except (TypeError, ValueError) as error:
        raise UserError(
            f"{wrapper.spec.display_name}: this architecture cannot give hidden-state features "
            f"({type(error).__name__}: {error})"
        ) from error
    return pool(last_layer(output), mask)
