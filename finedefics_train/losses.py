"""Finedefics' training losses (He et al., ICLR 2025, §3.2), each an `nn.Module` returning named terms.

Open_clip style: every module returns a dict whose keys ending in `_loss` are summed by the training
step (already weighted); other keys (temperatures) are logged only.

- OAC (object-attribute) and ACC (attribute-category): symmetric InfoNCE over the batch. Row i of
  the a->b direction scores a_i against every b_j of the batch and then against b_i's own hard
  negatives (K extra candidates, `b_neg[i]`), target i; the b->a direction likewise with `a_neg`.
  In ACC (and the object-category ablation) other rows of the same category carry the same name,
  so they are left out of the candidates, as in CCC (kept with `reference_compat`).
- CCC (category-category): category c_i against every category of the batch and its own K
  hard-negative categories. Correct mode: target i (the diagonal), and other batch rows of the same
  category are masked out (they are the same text, not negatives). `reference_compat=True`
  reproduces the reference implementation: target 0 on every row, nothing masked.
- Generation: token cross-entropy over the labelled tokens (the trainer masks prompt tokens with
  -100 in correct mode; the reference trains on the prompt too).

Temperatures are learnable, initialised at 0.07 and clamped to [0.001, 0.5] when used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TEMPERATURE_INIT = 0.07
TEMPERATURE_RANGE = (0.001, 0.5)


class LearnableTemperature(nn.Module):
    def __init__(self, init: float = TEMPERATURE_INIT):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        return self.value.clamp(*TEMPERATURE_RANGE)


def mask_same_label(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """-inf on batch candidates j != i with labels[j] == labels[i] (the same category's text: not a
    negative); the diagonal and the hard-negative columns are kept."""
    if labels is None:
        return logits
    n = labels.shape[0]
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(n, dtype=torch.bool, device=logits.device)
    pad = torch.zeros(n, logits.shape[1] - n, dtype=torch.bool, device=logits.device)
    return logits.masked_fill(torch.cat([same, pad], dim=1), float("-inf"))


def candidate_logits(query: torch.Tensor, keys: torch.Tensor, hard: torch.Tensor | None) -> torch.Tensor:
    """[B, B(+K)] cosine similarities: query i against every key j, then against its own hard[i, k]."""
    query, keys = F.normalize(query, dim=-1), F.normalize(keys, dim=-1)
    logits = query @ keys.T
    if hard is not None and hard.shape[1] > 0:
        logits = torch.cat([logits, torch.einsum("bd,bkd->bk", query, F.normalize(hard, dim=-1))], dim=1)
    return logits


class SymmetricInfoNCE(nn.Module):
    """InfoNCE in both directions between paired representations a_i <-> b_i, with hard negatives."""

    def __init__(self, name: str, weight: float = 1.0):
        super().__init__()
        self.name, self.weight = name, weight
        self.temperature = LearnableTemperature()

    def forward(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        a_neg: torch.Tensor | None = None,
        b_neg: torch.Tensor | None = None,
        same_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`same_labels`: category ids of the batch; other rows of the same category are then left out
        of each row's candidates (used where one side is the category name itself)."""
        temperature = self.temperature()
        targets = torch.arange(a.shape[0], device=a.device)
        # scale, then mask: -inf / t would give the temperature a NaN gradient (0 * inf)
        a_to_b = F.cross_entropy(
            mask_same_label(candidate_logits(a, b, b_neg) / temperature, same_labels), targets
        )
        b_to_a = F.cross_entropy(
            mask_same_label(candidate_logits(b, a, a_neg) / temperature, same_labels), targets
        )
        return {
            f"{self.name}_loss": self.weight * (a_to_b + b_to_a) / 2,
            f"{self.name}_temperature": temperature.detach(),
        }


class CategoryContrastive(nn.Module):
    """CCC: each category against the batch's categories and its own hard-negative categories."""

    def __init__(self, weight: float = 1.0, reference_compat: bool = False):
        super().__init__()
        self.weight, self.reference_compat = weight, reference_compat
        self.temperature = LearnableTemperature()

    def forward(
        self, categories: torch.Tensor, neg_categories: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        temperature = self.temperature()
        logits = candidate_logits(categories, categories, neg_categories) / temperature
        n = categories.shape[0]
        if self.reference_compat:
            targets = torch.zeros(n, dtype=torch.long, device=logits.device)
        else:
            targets = torch.arange(n, device=logits.device)
            logits = mask_same_label(logits, labels)
        return {
            "ccc_loss": self.weight * F.cross_entropy(logits, targets),
            "ccc_temperature": temperature.detach(),
        }


class GenerationLoss(nn.Module):
    """Next-token cross-entropy over labelled positions (labels -100 are ignored), weighted."""

    def __init__(self, name: str = "gen", weight: float = 1.0):
        super().__init__()
        self.name, self.weight = name, weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
        shifted_labels = labels[:, 1:].reshape(-1)
        return {
            f"{self.name}_loss": self.weight
            * F.cross_entropy(shifted_logits, shifted_labels, ignore_index=-100)
        }


class StageOneLoss(nn.Module):
    """L_gen + w (L_OAC + L_ACC + L_CCC) (+ w L_OCC for the object-category ablation); a term with
    weight 0 is not computed at all, so a recipe without attributes never needs their representations."""

    def __init__(
        self,
        gen_weight: float = 1.0,
        oac_weight: float = 0.5,
        acc_weight: float = 0.5,
        ccc_weight: float = 0.5,
        occ_weight: float = 0.0,
        reference_compat: bool = False,
    ):
        super().__init__()
        self.reference_compat = reference_compat
        # a term with weight 0 has no module, so no temperature that nothing trains
        self.gen = GenerationLoss("gen", gen_weight) if gen_weight else None
        self.oac = SymmetricInfoNCE("oac", oac_weight) if oac_weight else None
        self.acc = SymmetricInfoNCE("acc", acc_weight) if acc_weight else None
        self.occ = SymmetricInfoNCE("occ", occ_weight) if occ_weight else None  # object-category (Table 3b)
        self.ccc = CategoryContrastive(ccc_weight, reference_compat=reference_compat) if ccc_weight else None

    @property
    def uses_attributes(self) -> bool:
        return self.oac is not None or self.acc is not None

    def forward(
        self,
        *,
        image: torch.Tensor,
        attribute: torch.Tensor | None,
        category: torch.Tensor,
        neg_attribute: torch.Tensor | None,
        neg_category: torch.Tensor | None,
        labels: torch.Tensor,
        logits: torch.Tensor | None = None,
        gen_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.gen is not None and logits is not None:
            terms |= self.gen(logits, gen_labels)
        if self.oac is not None:
            terms |= self.oac(image, attribute, None, neg_attribute)
        # a category repeated in the batch is the same text: masked (not a negative) unless reproducing
        # the reference, which keeps it
        same = None if self.reference_compat else labels
        if self.acc is not None:
            terms |= self.acc(attribute, category, neg_attribute, neg_category, same_labels=same)
        if self.occ is not None:
            terms |= self.occ(image, category, None, neg_category, same_labels=same)
        if self.ccc is not None:
            terms |= self.ccc(category, neg_category, labels)
        return terms


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training objective: the sum of every `*_loss` term (each already weighted)."""
    losses = [value for key, value in terms.items() if key.endswith("_loss")]
    if not losses:
        raise ValueError(f"no loss terms to sum among {sorted(terms)}")
    return torch.stack(losses).sum()
