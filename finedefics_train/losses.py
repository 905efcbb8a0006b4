"""Finedefics' training losses (He et al., ICLR 2025, §3.2), each an `nn.Module` returning named terms.

Open_clip style: every module returns a dict whose keys ending in `_loss` are summed by the training
step (already weighted); other keys (temperatures) are logged only.

Every contrastive direction scores a query row against one candidate set, built in one place
(`contrastive_candidates`): the batch's keys (row i's positive is key i), then the hard negatives
of the batch, row by row. With `hard_negatives="batch"` (the reference code's and the `finedefics`
recipe's choice) every row's hard negatives are candidates for every row; with `"own"` a row sees
only its own K hard negatives (the others are masked out).

- OAC (object-attribute) and ACC (attribute-category): symmetric InfoNCE, target i. The image side
  has no hard negatives, so attribute->image scores the batch's images only.
- CCC (category-category): category c_i against the batch's categories and the hard-negative
  categories, target i.
- Correct mode (default): a candidate of row i's own category other than its positive (the same
  name or a description of the same category elsewhere in the batch, or a shared hard negative of
  row i's category) is masked out of every term: it is not a negative (class-level descriptions
  are even the same text).
- `reference_compat=True` reproduces the reference's `modeling_idefics2.py`: shared negatives,
  nothing masked, CCC target 0 on every row (only the first row's target is its own category), and
  frozen temperatures (peft trains LoRA parameters only, so the reference's temperatures stay at
  their initial 0.07).
- Generation: token cross-entropy over the labelled tokens (the collators label the answer only in
  correct mode, every non-padding token with `reference_compat`).

Temperatures start at 0.07 and are clamped to [0.001, 0.5] when used; learnable unless frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from finedefics_train.config import HARD_NEGATIVE_SCOPES

TEMPERATURE_INIT = 0.07
TEMPERATURE_RANGE = (0.001, 0.5)
NO_LABEL = -1  # the category of a candidate whose category is unknown: never masked


class Temperature(nn.Module):
    """A softmax temperature, initialised at 0.07 and clamped when used; `learnable=False` freezes it
    (it stays in the state dict, so checkpoints look the same either way).

    The value is a one-element vector, not a scalar: FSDP (both versions) refuses scalar parameters.
    Adapters saved before, with a scalar, load as they are."""

    def __init__(self, init: float = TEMPERATURE_INIT, learnable: bool = True):
        super().__init__()
        self.value = nn.Parameter(torch.tensor([float(init)]), requires_grad=learnable)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "value"
        if key in state_dict and state_dict[key].dim() == 0:
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self) -> torch.Tensor:
        return self.value.clamp(*TEMPERATURE_RANGE)


@dataclass
class Candidates:
    """What the query rows of one direction are scored against.

    `keys[:n_keys]` are the batch's keys (query row r's positive is key `first_row + r`), then the
    hard negatives; `owners[j]` is the batch row a candidate belongs to and `labels[j]` its category
    id (NO_LABEL when unknown). `first_row` is the global index of the first query row: 0 in one
    process; a cross-process gather of the candidates sets it to the rank's offset."""

    keys: torch.Tensor  # [N, D]
    owners: torch.Tensor  # [N]
    labels: torch.Tensor  # [N]
    n_keys: int
    first_row: int = 0


def contrastive_candidates(
    keys: torch.Tensor,
    hard: torch.Tensor | None = None,
    key_labels: torch.Tensor | None = None,
    hard_labels: torch.Tensor | None = None,
) -> Candidates:
    """The batch's keys [B, D] followed by every row's hard negatives [B, K, D], flattened row by row
    (row 0's K, then row 1's, ...), with each candidate's owner row and category id."""
    n, device = keys.shape[0], keys.device
    owners = torch.arange(n, device=device)
    labels = key_labels if key_labels is not None else torch.full((n,), NO_LABEL, device=device)
    parts, owner_parts, label_parts = [keys], [owners], [labels.to(device)]
    if hard is not None and hard.shape[1] > 0:
        k = hard.shape[1]
        parts.append(hard.reshape(n * k, -1))
        owner_parts.append(owners.repeat_interleave(k))
        label_parts.append(
            hard_labels.reshape(-1).to(device)
            if hard_labels is not None
            else torch.full((n * k,), NO_LABEL, device=device)
        )
    return Candidates(torch.cat(parts), torch.cat(owner_parts), torch.cat(label_parts), n)


def contrastive_logits(
    query: torch.Tensor,
    candidates: Candidates,
    temperature: torch.Tensor,
    *,
    own_negatives_only: bool = False,
    query_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, N] cosine similarities / temperature, with -inf where a candidate is left out: another
    row's hard negative (`own_negatives_only`), or a candidate of the query row's own category other
    than its positive (`query_labels` given)."""
    logits = F.normalize(query, dim=-1) @ F.normalize(candidates.keys, dim=-1).T / temperature
    rows = candidates.first_row + torch.arange(query.shape[0], device=query.device)
    columns = torch.arange(candidates.keys.shape[0], device=query.device)
    blocked = torch.zeros_like(logits, dtype=torch.bool)
    if own_negatives_only:
        blocked |= (columns[None, :] >= candidates.n_keys) & (candidates.owners[None, :] != rows[:, None])
    if query_labels is not None:
        same = candidates.labels[None, :] == query_labels.to(logits.device)[:, None]
        blocked |= same & (columns[None, :] != rows[:, None])
    # scale, then mask: -inf / t would give the temperature a NaN gradient (0 * inf)
    return logits.masked_fill(blocked, float("-inf")) if bool(blocked.any()) else logits


class SymmetricInfoNCE(nn.Module):
    """InfoNCE in both directions between paired representations a_i <-> b_i, with hard negatives.

    `mask_same_category`: candidates of the row's own category other than its positive are left out
    (every term in correct mode; none with `reference_compat`)."""

    def __init__(
        self,
        name: str,
        weight: float = 1.0,
        *,
        own_negatives_only: bool = False,
        mask_same_category: bool = False,
        learnable_temperature: bool = True,
    ):
        super().__init__()
        self.name, self.loss_weight = name, weight
        self.own_negatives_only, self.mask_same_category = own_negatives_only, mask_same_category
        self.temperature = Temperature(learnable=learnable_temperature)

    def direction(self, query, keys, hard, labels, hard_labels, temperature) -> torch.Tensor:
        candidates = contrastive_candidates(keys, hard, labels, hard_labels)
        logits = contrastive_logits(
            query,
            candidates,
            temperature,
            own_negatives_only=self.own_negatives_only,
            query_labels=labels if self.mask_same_category else None,
        )
        targets = candidates.first_row + torch.arange(query.shape[0], device=query.device)
        return F.cross_entropy(logits, targets)

    def forward(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        a_neg: torch.Tensor | None = None,
        b_neg: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        neg_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`labels` [B]: the rows' category ids; `neg_labels` [B, K]: the hard negatives' (shared
        by `a_neg` and `b_neg`, which are of the same negative categories)."""
        temperature = self.temperature()
        a_to_b = self.direction(a, b, b_neg, labels, neg_labels, temperature)
        b_to_a = self.direction(b, a, a_neg, labels, neg_labels, temperature)
        return {
            f"{self.name}_loss": self.loss_weight * (a_to_b + b_to_a) / 2,
            f"{self.name}_temperature": temperature.detach(),
        }


class CategoryContrastive(nn.Module):
    """CCC: each category against the batch's categories and the hard-negative categories."""

    def __init__(
        self,
        weight: float = 1.0,
        reference_compat: bool = False,
        *,
        own_negatives_only: bool = False,
        learnable_temperature: bool = True,
    ):
        super().__init__()
        self.loss_weight, self.reference_compat = weight, reference_compat
        self.own_negatives_only = own_negatives_only
        self.temperature = Temperature(learnable=learnable_temperature)

    def forward(
        self,
        categories: torch.Tensor,
        neg_categories: torch.Tensor | None,
        labels: torch.Tensor,
        neg_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        temperature = self.temperature()
        candidates = contrastive_candidates(categories, neg_categories, labels, neg_labels)
        n = categories.shape[0]
        if self.reference_compat:  # the reference's target: column 0 for every row
            logits = contrastive_logits(categories, candidates, temperature)
            targets = torch.zeros(n, dtype=torch.long, device=logits.device)
        else:
            logits = contrastive_logits(categories, candidates, temperature,
                                        own_negatives_only=self.own_negatives_only, query_labels=labels)  # fmt: skip
            targets = candidates.first_row + torch.arange(n, device=logits.device)
        return {
            "ccc_loss": self.loss_weight * F.cross_entropy(logits, targets),
            "ccc_temperature": temperature.detach(),
        }


class GenerationLoss(nn.Module):
    """Next-token cross-entropy over labelled positions (labels -100 are ignored), weighted.

    The weight of every loss module is `loss_weight`: PEFT's FSDP wrap policy takes any module's
    `weight` attribute for a parameter."""

    def __init__(self, name: str = "gen", weight: float = 1.0):
        super().__init__()
        self.name, self.loss_weight = name, weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
        shifted_labels = labels[:, 1:].reshape(-1)
        return {
            f"{self.name}_loss": self.loss_weight
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
        hard_negatives: str = "batch",
    ):
        super().__init__()
        if hard_negatives not in HARD_NEGATIVE_SCOPES:
            raise ValueError(f"hard_negatives must be one of {HARD_NEGATIVE_SCOPES}, got {hard_negatives!r}")
        if reference_compat and hard_negatives != "batch":
            raise ValueError(
                "reference_compat shares every row's hard negatives: hard_negatives must be batch"
            )
        self.reference_compat = reference_compat
        own = hard_negatives == "own"
        shared = {"own_negatives_only": own, "learnable_temperature": not reference_compat}
        # a candidate of the row's own category is not a negative: masked unless reproducing the
        # reference, which keeps it
        pairs = {**shared, "mask_same_category": not reference_compat}
        # a term with weight 0 has no module, so no temperature that nothing trains
        self.gen = GenerationLoss("gen", gen_weight) if gen_weight else None
        self.oac = SymmetricInfoNCE("oac", oac_weight, **pairs) if oac_weight else None
        self.acc = SymmetricInfoNCE("acc", acc_weight, **pairs) if acc_weight else None
        self.occ = SymmetricInfoNCE("occ", occ_weight, **pairs) if occ_weight else None  # Table 3b
        self.ccc = CategoryContrastive(ccc_weight, reference_compat, **shared) if ccc_weight else None

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
        neg_labels: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        gen_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`labels` [B] and `neg_labels` [B, K]: category ids of the rows and of their hard negatives
        (equal ids are the same category name)."""
        terms: dict[str, torch.Tensor] = {}
        if self.gen is not None and logits is not None:
            terms |= self.gen(logits, gen_labels)
        if self.oac is not None:
            terms |= self.oac(image, attribute, None, neg_attribute, labels, neg_labels)
        if self.acc is not None:
            terms |= self.acc(attribute, category, neg_attribute, neg_category, labels, neg_labels)
        if self.occ is not None:
            terms |= self.occ(image, category, None, neg_category, labels, neg_labels)
        if self.ccc is not None:
            terms |= self.ccc(category, neg_category, labels, neg_labels)
        return terms


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training objective: the sum of every `*_loss` term (each already weighted)."""
    losses = [value for key, value in terms.items() if key.endswith("_loss")]
    if not losses:
        raise ValueError(f"no loss terms to sum among {sorted(terms)}")
    return torch.stack(losses).sum()
