"""The Stage I loss modules against a direct, loop-by-loop computation of the paper's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from finedefics_train.losses import (
    TEMPERATURE_INIT,
    CategoryContrastive,
    GenerationLoss,
    StageOneLoss,
    SymmetricInfoNCE,
    total_loss,
)

B, K, D = 4, 3, 8


def cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def nll(scores: list[float], target: int, temperature: float) -> float:
    """-log softmax(scores / t)[target], written out."""
    exps = [math.exp(s / temperature) for s in scores]
    return -math.log(exps[target] / sum(exps))


def direct_direction(q, keys, hard, temperature) -> float:
    total = 0.0
    for i in range(q.shape[0]):
        scores = [cos(q[i], keys[j]) for j in range(keys.shape[0])]
        if hard is not None:
            scores += [cos(q[i], hard[i, k]) for k in range(hard.shape[1])]
        total += nll(scores, i, temperature)
    return total / q.shape[0]


@pytest.fixture()
def reps():
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(*shape, generator=g) for name, shape in
            {"a": (B, D), "b": (B, D), "a_neg": (B, K, D), "b_neg": (B, K, D)}.items()}  # fmt: skip


def test_symmetric_infonce_with_hard_negatives_equals_direct_computation(reps):
    module = SymmetricInfoNCE("oac", weight=0.5)
    terms = module(reps["a"], reps["b"], reps["a_neg"], reps["b_neg"])
    t = TEMPERATURE_INIT
    expected = (
        0.5
        * (
            direct_direction(reps["a"], reps["b"], reps["b_neg"], t)
            + direct_direction(reps["b"], reps["a"], reps["a_neg"], t)
        )
        / 2
    )
    assert float(terms["oac_loss"].detach()) == pytest.approx(expected, rel=1e-5)
    assert float(terms["oac_temperature"]) == pytest.approx(TEMPERATURE_INIT)
    # without hard negatives: plain symmetric InfoNCE (a different number)
    plain = module(reps["a"], reps["b"])["oac_loss"]
    expected_plain = (
        0.5
        * (direct_direction(reps["a"], reps["b"], None, t) + direct_direction(reps["b"], reps["a"], None, t))
        / 2
    )
    assert float(plain) == pytest.approx(expected_plain, rel=1e-5)
    assert abs(float(plain) - expected) > 1e-3


def direct_ccc(c, c_neg, labels, temperature, reference: bool) -> float:
    total = 0.0
    for i in range(c.shape[0]):
        scores = []
        for j in range(c.shape[0]):
            if not reference and j != i and labels[j] == labels[i]:
                continue  # the same category elsewhere in the batch is not a negative
            scores.append(cos(c[i], c[j]))
        scores += [cos(c[i], c_neg[i, k]) for k in range(c_neg.shape[1])]
        target = 0 if reference else sum(1 for j in range(i) if labels[j] != labels[i])
        total += nll(scores, target, temperature)
    return total / c.shape[0]


@pytest.mark.parametrize("reference", [False, True])
def test_ccc_equals_direct_computation_in_both_modes(reps, reference):
    labels = torch.tensor([0, 1, 0, 2])  # a repeated category: masked in the correct mode only
    module = CategoryContrastive(weight=1.0, reference_compat=reference)
    got = float(module(reps["a"], reps["a_neg"], labels)["ccc_loss"])
    assert got == pytest.approx(
        direct_ccc(reps["a"], reps["a_neg"], labels, TEMPERATURE_INIT, reference), rel=1e-5
    )


def test_ccc_modes_differ(reps):
    labels = torch.arange(B)
    correct = CategoryContrastive(reference_compat=False)(reps["a"], reps["a_neg"], labels)["ccc_loss"]
    reference = CategoryContrastive(reference_compat=True)(reps["a"], reps["a_neg"], labels)["ccc_loss"]
    assert abs(float(correct) - float(reference)) > 0.1


def test_temperature_is_learnable_and_clamped(reps):
    module = SymmetricInfoNCE("acc")
    module(reps["a"], reps["b"])["acc_loss"].backward()
    assert module.temperature.value.grad is not None and float(module.temperature.value.grad) != 0.0
    with torch.no_grad():
        module.temperature.value.fill_(5.0)
    assert float(module.temperature()) == 0.5
    with torch.no_grad():
        module.temperature.value.fill_(-1.0)
    assert float(module.temperature()) == pytest.approx(0.001)


def test_generation_loss_ignores_masked_tokens():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 2, -100, -100]])
    got = float(GenerationLoss(weight=2.0)(logits, labels)["gen_loss"])
    picked = []
    for row in range(2):
        for pos in range(1, 5):
            if labels[row, pos] != -100:
                picked.append(-float(torch.log_softmax(logits[row, pos - 1], -1)[labels[row, pos]]))
    assert got == pytest.approx(2.0 * sum(picked) / len(picked), rel=1e-5)


def test_stage_one_total_is_gen_plus_half_the_contrastive_terms(reps):
    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(B, 6, 11, generator=g), torch.randint(0, 11, (B, 6), generator=g)
    image = torch.randn(B, D, generator=g)
    cat_labels = torch.arange(B)
    loss = StageOneLoss()
    terms = loss(
        image=image, attribute=reps["a"], category=reps["b"], neg_attribute=reps["a_neg"],
        neg_category=reps["b_neg"], labels=cat_labels, logits=logits, gen_labels=labels,
    )  # fmt: skip
    assert sorted(k for k in terms if k.endswith("_loss")) == ["acc_loss", "ccc_loss", "gen_loss", "oac_loss"]
    unit = (SymmetricInfoNCE("x"), CategoryContrastive())
    expected = (
        GenerationLoss()(logits, labels)["gen_loss"]
        + 0.5 * unit[0](image, reps["a"], None, reps["a_neg"])["x_loss"]
        + 0.5 * unit[0](reps["a"], reps["b"], reps["a_neg"], reps["b_neg"])["x_loss"]
        + 0.5 * unit[1](reps["b"], reps["b_neg"], cat_labels)["ccc_loss"]
    )
    assert float(total_loss(terms)) == pytest.approx(float(expected), rel=1e-5)
    # a zero weight removes the term entirely (the no_ccc recipe)
    assert "ccc_loss" not in StageOneLoss(ccc_weight=0.0)(
        image=image, attribute=reps["a"], category=reps["b"], neg_attribute=reps["a_neg"],
        neg_category=reps["b_neg"], labels=cat_labels, logits=logits, gen_labels=labels,
    )  # fmt: skip


def test_acc_masks_a_repeated_category_unless_reproducing_the_reference(reps):
    g = torch.Generator().manual_seed(3)
    image = torch.randn(B, D, generator=g)
    labels = torch.tensor([0, 1, 0, 2])
    common = dict(image=image, attribute=reps["a"], category=reps["b"], neg_attribute=reps["a_neg"],
                  neg_category=reps["b_neg"], labels=labels)  # fmt: skip
    correct = StageOneLoss(gen_weight=0, oac_weight=0, ccc_weight=0)(**common)["acc_loss"]
    reference = StageOneLoss(gen_weight=0, oac_weight=0, ccc_weight=0, reference_compat=True)(**common)[
        "acc_loss"
    ]
    t = TEMPERATURE_INIT

    def direction(q, keys, hard):
        total = 0.0
        for i in range(B):
            kept = [j for j in range(B) if j == i or labels[j] != labels[i]]
            scores = [cos(q[i], keys[j]) for j in kept] + [cos(q[i], hard[i, k]) for k in range(K)]
            total += nll(scores, kept.index(i), t)
        return total / B

    expected = (
        0.5
        * (direction(reps["a"], reps["b"], reps["b_neg"]) + direction(reps["b"], reps["a"], reps["a_neg"]))
        / 2
    )
    assert float(correct.detach()) == pytest.approx(expected, rel=1e-5)
    assert abs(float(reference.detach()) - expected) > 1e-3
    # masked candidates must not poison any gradient (the temperature's included)
    loss = StageOneLoss(gen_weight=0, oac_weight=0, ccc_weight=0)
    inputs = {k: v.clone().requires_grad_(True) for k, v in common.items() if k != "labels"}
    loss(**inputs, labels=labels)["acc_loss"].backward()
    grads = [v.grad for v in inputs.values() if v.grad is not None] + [loss.acc.temperature.value.grad]
    assert all(torch.isfinite(g).all() for g in grads)
