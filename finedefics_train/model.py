"""The module the Trainer optimises: a peft-wrapped base model plus the stage's loss modules.

`forward(**batch)` returns `{"loss": total, "<term>_loss": ..., "<term>_temperature": ...}`; the
visual tokens are computed once and shared by the image representation and the generation term.
The learnable temperatures live in `self.losses`, so the optimiser sees them and checkpoints carry them.

Under N data-parallel processes (finedefics_train.distributed) the contrastive terms are computed over
the global batch's candidates, gathered from every process, and the language-model terms are token
means over the global batch: N processes of B rows step as one process of N*B rows. With
`local_candidates=True` each process contrasts its own rows only (the reference code's behaviour).
"""

from __future__ import annotations

import torch
from torch import nn

from finedefics_train.arch import (
    ArchAdapter,
    generation_logits,
    image_representation,
    text_representations,
)
from finedefics_train.distributed import gather_candidates, global_token_share
from finedefics_train.losses import GenerationLoss, StageOneLoss, total_loss


class FinedeficsTrainingModel(nn.Module):
    def __init__(
        self,
        peft_model: nn.Module,
        adapter: ArchAdapter,
        losses: nn.Module,
        eos_token_id: int,
        local_candidates: bool = False,
    ):
        super().__init__()
        self.local_candidates = local_candidates
        self.peft_model = peft_model
        self.adapter = adapter
        self.losses = losses
        # decided here: under FSDP `self.losses` becomes the unit wrapping the loss module
        self.stage_one = isinstance(losses, StageOneLoss)
        self.eos_token_id = eos_token_id
        self.instruction_loss = GenerationLoss("lm", 1.0)  # the one_stage recipe adds Stage II's term

    @property
    def _no_split_modules(self) -> list[str]:
        """The base's transformer blocks, which accelerate's FSDP TRANSFORMER_BASED_WRAP makes units."""
        return list(getattr(self.base, "_no_split_modules", None) or [])

    @property
    def base(self) -> nn.Module:
        return self.peft_model.get_base_model()

    def forward(self, **batch) -> dict[str, torch.Tensor]:
        visual = self.adapter.visual_tokens(self.base, batch)
        if self.stage_one:
            terms = self.stage_one_terms(visual, batch)
            if "instr_input_ids" in batch:
                logits = generation_logits(
                    self.adapter, self.base, visual, batch["instr_input_ids"], batch["instr_attention_mask"]
                )
                terms |= token_mean(
                    self.instruction_loss(logits, batch["instr_labels"]), batch["instr_labels"]
                )
        else:
            terms = token_mean(self.losses(self.logits(visual, batch), batch["labels"]), batch["labels"])
        return {"loss": total_loss(terms), **terms}

    def logits(self, visual: torch.Tensor, batch: dict) -> torch.Tensor:
        return generation_logits(self.adapter, self.base, visual, batch["input_ids"], batch["attention_mask"])

    def stage_one_terms(self, visual: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        n, k = visual.shape[0], int(batch["n_negatives"])
        texts = text_representations(self.adapter, self.base, batch["text_ids"], batch["text_lengths"])
        category, neg_category = texts[:n], texts[n : n + n * k].view(n, k, -1)
        attribute = neg_attribute = None
        if texts.shape[0] > n + n * k:  # descriptions follow the categories
            rest = texts[n + n * k :]
            attribute, neg_attribute = rest[:n], rest[n:].view(n, k, -1)
        candidates = {
            "image": image_representation(self.adapter, self.base, visual, self.eos_token_id),
            "attribute": attribute,
            "category": category,
            "neg_attribute": neg_attribute,
            "neg_category": neg_category,
            "labels": batch["category_labels"],
            "neg_labels": batch.get("neg_category_labels"),
        }
        if not self.local_candidates:
            candidates = gather_candidates(candidates)
        with_gen = "labels" in batch and self.losses.gen is not None
        terms = self.losses(
            **candidates,
            logits=self.logits(visual, batch) if with_gen else None,
            gen_labels=batch.get("labels"),
        )
        return token_mean(terms, batch["labels"], keys=("gen_loss",)) if with_gen else terms

    @torch.no_grad()
    def category_retrieval(self, builder, images: list, labels: list[int], class_names: list[str]) -> float:
        """Share of images whose most similar category (cosine of the global representations) is
        their own, among all `class_names`: Stage I's retrieval accuracy."""
        was_training = self.training
        self.eval()
        try:
            pixels, _ = builder.pixels_and_prompts([self.adapter.prompt("")] * len(images), images)
            pixels = {key: value.to(self.base.device) for key, value in pixels.items()}
            visual = self.adapter.visual_tokens(self.base, pixels)
            image = nn.functional.normalize(
                image_representation(self.adapter, self.base, visual, self.eos_token_id), dim=-1
            )
            ids, lengths = builder.text_batch(list(class_names))
            texts = text_representations(
                self.adapter, self.base, ids.to(visual.device), lengths.to(visual.device)
            )
            predicted = (image @ nn.functional.normalize(texts, dim=-1).T).argmax(dim=1).cpu()
        finally:
            self.train(was_training)
        return float((predicted == torch.tensor(labels)).float().mean())


def token_mean(terms: dict, labels, keys: tuple[str, ...] | None = None) -> dict:
    """The language-model terms (`keys`, default all) as token means over the global batch."""
    share = global_token_share(labels)
    return {k: v * share if keys is None or k in keys else v for k, v in terms.items()}


def stage_losses(stage: str, options: dict) -> nn.Module:
    """Stage I's loss module from `LossConfig.loss_options()`; Stage II's language-model loss."""
    if stage == "stage1":
        return StageOneLoss(**options)
    return GenerationLoss("lm", 1.0)
