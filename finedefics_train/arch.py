"""Where each base architecture keeps what Finedefics' training needs, and the shared forwards.

Global representations (paper §3.2): the last layer's hidden state of the last token, with
- an image: the connector's visual tokens followed by one EOS embedding, through the language model;
- a text (attribute description, category name): its tokens followed by EOS, through the language model.
The visual tokens are computed once per batch (`visual_tokens`) and reused by the image
representation and by the generation term (`generation_logits` scatters them into the prompt's image
placeholders), and all texts of a batch go through the language model in ONE right-padded forward.

`ArchAdapter` is the small per-architecture part (Idefics2, LLaVA-1.5); `adapter_for(config)`
picks it from a checkpoint's config.json `architectures`/`model_type` before any weights load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.core.errors import UserError
from models.idefics2 import IDEFICS2_FORMAT
from models.llava import Llava15FGVR


def read_base_config(base: str) -> dict:
    """config.json of a local folder or a cached hub id; a clear error otherwise."""
    folder = Path(base).expanduser()
    if folder.is_dir():
        path = folder / "config.json"
        if not path.is_file():
            raise UserError(f"--base {base}: no config.json in the folder (not a transformers checkpoint)")
    elif base.startswith(("/", ".", "~")):
        raise UserError(f"--base {base}: no such folder")
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(base, "config.json"))
        except Exception as error:  # offline, unknown id, no access: all mean the same to the user
            raise UserError(f"--base {base}: cannot read its config.json ({type(error).__name__}); "
                            "pass a local checkpoint folder") from error  # fmt: skip
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"{path}: not valid JSON ({error})") from error


LORA_PROJECTIONS = r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class ArchAdapter:
    """One base architecture: its model class, where the visual tokens and the language model live,
    its prompt format and the LoRA targets (language model + connector, vision encoder frozen)."""

    name: str
    model_class: str
    model_types: tuple[str, ...]
    prompt_format: str  # {images} {question}
    end_of_turn: str  # appended to an answer in Stage II and to a description in Stage I
    lora_target_modules: str  # a peft regex (matched in full against module names)

    def prompt(self, question: str, image_token: str = "<image>") -> str:
        return self.prompt_format.format(images=image_token, question=question)

    def language_model(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def visual_tokens(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """[B, N_visual, D]: the connector's output for the batch's one-image-per-sample pixels."""
        raise NotImplementedError


class Idefics2Adapter(ArchAdapter):
    def language_model(self, model):
        return model.model.text_model

    def visual_tokens(self, model, batch):
        features = model.model.get_image_features(
            pixel_values=batch["pixel_values"], pixel_attention_mask=batch.get("pixel_attention_mask")
        ).pooler_output
        return torch.stack(list(features))


class LlavaAdapter(ArchAdapter):
    def language_model(self, model):
        return model.model.language_model

    def visual_tokens(self, model, batch):
        config = model.config
        features = model.model.get_image_features(
            pixel_values=batch["pixel_values"],
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        ).pooler_output
        return torch.stack(list(features))


ADAPTERS: dict[str, ArchAdapter] = {
    "idefics2": Idefics2Adapter(
        name="idefics2",
        model_class="Idefics2ForConditionalGeneration",
        model_types=("idefics2",),
        prompt_format=IDEFICS2_FORMAT,
        end_of_turn="<end_of_utterance>",
        lora_target_modules=rf".*\.(text_model|connector)\..*\.{LORA_PROJECTIONS}",
    ),
    "llava15": LlavaAdapter(
        name="llava15",
        model_class="LlavaForConditionalGeneration",
        model_types=("llava",),
        prompt_format=Llava15FGVR.prompt_template,
        end_of_turn="</s>",
        lora_target_modules=rf".*\.language_model\..*\.{LORA_PROJECTIONS}|.*\.multi_modal_projector\.linear_[12]",
    ),
}


def adapter_for(config: dict, where: str = "config.json") -> ArchAdapter:
    """The adapter for a checkpoint's config.json content; a clear error for anything else."""
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    for adapter in ADAPTERS.values():
        if adapter.model_class in architectures or model_type in adapter.model_types:
            return adapter
    supported = ", ".join(f"{a.name} ({a.model_class})" for a in ADAPTERS.values())
    raise UserError(
        f"{where}: base architecture {architectures or model_type!r} is not supported for Finedefics "
        f"training; supported: {supported}"
    )


# ---------------------------------------------------------------- shared forwards


def last_token_states(language_model: nn.Module, embeds: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, D]: the last layer's hidden state at position lengths-1 of right-padded `embeds`."""
    positions = torch.arange(embeds.shape[1], device=embeds.device)
    attention_mask = (positions[None, :] < lengths[:, None]).long()
    hidden = language_model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]


def image_representation(
    adapter: ArchAdapter, model: nn.Module, visual: torch.Tensor, eos_token_id: int
) -> torch.Tensor:
    """[B, D]: visual tokens + EOS through the language model, last token."""
    embed = model.get_input_embeddings()
    eos = embed(torch.tensor([eos_token_id], device=visual.device)).to(visual.dtype)
    sequence = torch.cat([visual.to(eos.dtype), eos.expand(visual.shape[0], 1, -1)], dim=1)
    lengths = torch.full((visual.shape[0],), sequence.shape[1], device=visual.device)
    return last_token_states(adapter.language_model(model), sequence, lengths)


def text_representations(
    adapter: ArchAdapter, model: nn.Module, input_ids: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """[N, D]: every text of the batch (right-padded ids that already end in EOS) in one forward."""
    embeds = model.get_input_embeddings()(input_ids)
    return last_token_states(adapter.language_model(model), embeds, lengths)


def generation_logits(
    adapter: ArchAdapter,
    model: nn.Module,
    visual: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """[B, T, V] logits of prompt+answer sequences whose image placeholders take `visual`."""
    embeds = model.get_input_embeddings()(input_ids)
    placeholders = (input_ids == model.config.image_token_id).unsqueeze(-1)
    if int(placeholders.sum()) != visual.shape[0] * visual.shape[1]:
        raise ValueError(
            f"{int(placeholders.sum())} image placeholders for {visual.shape[0]}x{visual.shape[1]} visual tokens"
        )
    embeds = embeds.masked_scatter(placeholders, visual.to(embeds.dtype))
    hidden = adapter.language_model(model)(
        inputs_embeds=embeds, attention_mask=attention_mask
    ).last_hidden_state
    return model.get_output_embeddings()(hidden)
