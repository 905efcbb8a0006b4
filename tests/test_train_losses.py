"""The Stage I loss modules against direct computations written out here: loop by loop for our
formulas, and, for `reference_compat`, the reference code's formulas as whole-matrix plain torch
(every row's hard negatives appended as candidates for all rows, diagonal targets, CCC target 0,
temperatures fixed at 0.07, every non-padding token a generation target)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

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


def direct_direction(q, keys, hard, temperature, *, scope="batch", labels=None, hard_labels=None) -> float:
    """Row i against every key j (its positive: key i) and the hard negatives (every row's with scope
    "batch", its own with "own"); with labels, candidates of row i's category other than its
    positive are left out."""
    total = 0.0
    for i in range(q.shape[0]):
        kept = []  # (score, is the positive)
        for j in range(keys.shape[0]):
            if j != i and labels is not None and labels[j] == labels[i]:
                continue
            kept.append((cos(q[i], keys[j]), j == i))
        for r in range(0 if hard is None else hard.shape[0]):
            if scope == "own" and r != i:
                continue
            for k in range(hard.shape[1]):
                if labels is not None and hard_labels[r][k] == labels[i]:
                    continue
                kept.append((cos(q[i], hard[r, k]), False))
        target = [positive for _, positive in kept].index(True)
        total += nll([score for score, _ in kept], target, temperature)
    return total / q.shape[0]


@pytest.fixture()
def reps():
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(*shape, generator=g) for name, shape in
            {"a": (B, D), "b": (B, D), "a_neg": (B, K, D), "b_neg": (B, K, D)}.items()}  # fmt: skip


@pytest.mark.parametrize("scope", ["batch", "own"])
def test_symmetric_infonce_with_hard_negatives_equals_direct_computation(reps, scope):
    module = SymmetricInfoNCE("oac", weight=0.5, own_negatives_only=scope == "own")
    terms = module(reps["a"], reps["b"], reps["a_neg"], reps["b_neg"])
    t = TEMPERATURE_INIT
    expected = 0.5 * (direct_direction(reps["a"], reps["b"], reps["b_neg"], t, scope=scope)
                      + direct_direction(reps["b"], reps["a"], reps["a_neg"], t, scope=scope)) / 2  # fmt: skip
    assert float(terms["oac_loss"].detach()) == pytest.approx(expected, rel=1e-5)
    assert float(terms["oac_temperature"]) == pytest.approx(TEMPERATURE_INIT)
    # without hard negatives: plain symmetric InfoNCE (a different number)
    plain = module(reps["a"], reps["b"])["oac_loss"].detach()
    expected_plain = 0.5 * (direct_direction(reps["a"], reps["b"], None, t)
                            + direct_direction(reps["b"], reps["a"], None, t)) / 2  # fmt: skip
    assert float(plain) == pytest.approx(expected_plain, rel=1e-5)
    assert abs(float(plain) - expected) > 1e-3


def test_shared_and_own_hard_negatives_differ(reps):
    shared = SymmetricInfoNCE("x")(reps["a"], reps["b"], None, reps["b_neg"])["x_loss"].detach()
    own = SymmetricInfoNCE("x", own_negatives_only=True)(reps["a"], reps["b"], None, reps["b_neg"])[
        "x_loss"
    ].detach()
    assert float(shared) > float(own) + 1e-3  # more negatives, a larger loss at the same similarities


def direct_ccc(c, c_neg, labels, neg_labels, temperature, *, scope="batch") -> float:
    return direct_direction(c, c, c_neg, temperature, scope=scope, labels=labels, hard_labels=neg_labels)


@pytest.mark.parametrize("scope", ["batch", "own"])
def test_ccc_equals_direct_computation(reps, scope):
    labels = torch.tensor([0, 1, 0, 2])  # a repeated category: masked
    neg_labels = torch.tensor(
        [[1, 3, 4], [0, 5, 6], [7, 8, 9], [0, 1, 10]]
    )  # row 3's negatives hold rows 0-2's
    module = CategoryContrastive(weight=1.0, own_negatives_only=scope == "own")
    got = float(module(reps["a"], reps["a_neg"], labels, neg_labels)["ccc_loss"])
    expected = direct_ccc(reps["a"], reps["a_neg"], labels, neg_labels, TEMPERATURE_INIT, scope=scope)
    assert got == pytest.approx(expected, rel=1e-5)


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


def test_temperatures_are_one_element_vectors_and_load_the_scalars_of_older_adapters():
    """FSDP (both versions) refuses scalar parameters; adapters written before saved scalars."""
    module = StageOneLoss()
    assert all(parameter.dim() == 1 and parameter.numel() == 1 for parameter in module.parameters())
    older = {key: value.reshape(()) * 0 + 0.2 for key, value in module.state_dict().items()}
    assert all(value.dim() == 0 for value in older.values())
    module.load_state_dict(older)
    assert all(float(value) == pytest.approx(0.2) for value in module.state_dict().values())


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


def stage_one_inputs(b: int, k: int, labels: list[int], seed: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    neg_labels = torch.tensor([[100 + 10 * i + j for j in range(k)] for i in range(b)], dtype=torch.long)
    return {
        "image": torch.randn(b, D, generator=g),
        "attribute": torch.randn(b, D, generator=g),
        "category": torch.randn(b, D, generator=g),
        "neg_attribute": torch.randn(b, k, D, generator=g),
        "neg_category": torch.randn(b, k, D, generator=g),
        "labels": torch.tensor(labels),
        "neg_labels": neg_labels.reshape(b, k),
    }


def test_stage_one_total_is_gen_plus_half_the_contrastive_terms():
    inputs = stage_one_inputs(B, K, [0, 1, 2, 3])
    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(B, 6, 11, generator=g), torch.randint(0, 11, (B, 6), generator=g)
    terms = StageOneLoss()(**inputs, logits=logits, gen_labels=labels)
    assert sorted(k for k in terms if k.endswith("_loss")) == ["acc_loss", "ccc_loss", "gen_loss", "oac_loss"]
    masked = SymmetricInfoNCE("x", mask_same_category=True)
    cat_labels, neg = inputs["labels"], inputs["neg_labels"]
    expected = (
        GenerationLoss()(logits, labels)["gen_loss"]
        + 0.5
        * masked(inputs["image"], inputs["attribute"], None, inputs["neg_attribute"], cat_labels, neg)[
            "x_loss"
        ]
        + 0.5
        * masked(
            inputs["attribute"],
            inputs["category"],
            inputs["neg_attribute"],
            inputs["neg_category"],
            cat_labels,
            neg,
        )["x_loss"]  # fmt: skip
        + 0.5 * CategoryContrastive()(inputs["category"], inputs["neg_category"], cat_labels, neg)["ccc_loss"]
    )
    assert float(total_loss(terms)) == pytest.approx(float(expected), rel=1e-5)
    # a zero weight removes the term entirely (the no_ccc recipe)
    assert "ccc_loss" not in StageOneLoss(ccc_weight=0.0)(**inputs, logits=logits, gen_labels=labels)


def test_oac_masks_descriptions_of_the_rows_own_category():
    inputs = stage_one_inputs(B, K, [0, 1, 0, 2], seed=4)
    inputs["neg_labels"][3, 1] = 1  # row 3's negative is row 1's category: not a negative for row 1
    got = StageOneLoss(gen_weight=0, acc_weight=0, ccc_weight=0)(**inputs)["oac_loss"]
    t, labels, neg = TEMPERATURE_INIT, inputs["labels"], inputs["neg_labels"]
    v, a = inputs["image"], inputs["attribute"]
    expected = 0.5 * (direct_direction(v, a, inputs["neg_attribute"], t, labels=labels, hard_labels=neg)
                      + direct_direction(a, v, None, t, labels=labels)) / 2  # fmt: skip
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)


def test_acc_masks_a_repeated_category_unless_reproducing_the_reference():
    inputs = stage_one_inputs(B, K, [0, 1, 0, 2], seed=3)
    inputs["neg_labels"][1, 0] = 0  # a shared hard negative of rows 0 and 2's category: masked for them
    only_acc = {"gen_weight": 0, "oac_weight": 0, "ccc_weight": 0}
    correct = StageOneLoss(**only_acc)(**inputs)["acc_loss"]
    reference = StageOneLoss(**only_acc, reference_compat=True)(**inputs)["acc_loss"]
    t, labels, neg = TEMPERATURE_INIT, inputs["labels"], inputs["neg_labels"]
    a, c = inputs["attribute"], inputs["category"]
    expected = 0.5 * (direct_direction(a, c, inputs["neg_category"], t, labels=labels, hard_labels=neg)
                      + direct_direction(c, a, inputs["neg_attribute"], t, labels=labels, hard_labels=neg)) / 2  # fmt: skip
    assert float(correct.detach()) == pytest.approx(expected, rel=1e-5)
    assert abs(float(reference.detach()) - expected) > 1e-3
    # masked candidates must not poison any gradient (the temperature's included)
    loss = StageOneLoss(**only_acc)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items() if v.is_floating_point()}
    loss(**inputs | leaves)["acc_loss"].backward()
    grads = [v.grad for v in leaves.values() if v.grad is not None] + [loss.acc.temperature.value.grad]
    assert all(torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------- the reference, formula by formula


def reference_contrastive(v, a, c, neg_a, neg_c, t=0.07) -> dict[str, torch.Tensor]:
    """The reference's Stage I contrastive terms on global representations: normalised rows; every
    row's hard negatives (row 0's, then row 1's, ...) appended to the attribute and category
    candidates of every row; i2t, a2c, c2a with diagonal targets, t2i against the images only;
    c2c with target 0 on every row; one fixed temperature."""
    b = v.shape[0]
    v, a, c = F.normalize(v), F.normalize(a), F.normalize(c)
    attributes = torch.cat([a, F.normalize(neg_a.reshape(-1, v.shape[1]))]) if neg_a.numel() else a
    categories = torch.cat([c, F.normalize(neg_c.reshape(-1, v.shape[1]))]) if neg_c.numel() else c
    diagonal = torch.arange(b)

    def ce(logits, targets):
        return -F.log_softmax(logits, dim=1)[torch.arange(b), targets].mean()

    oac = (ce(v @ attributes.T / t, diagonal) + ce(a @ v.T / t, diagonal)) / 2
    acc = (ce(a @ categories.T / t, diagonal) + ce(c @ attributes.T / t, diagonal)) / 2
    ccc = ce(c @ categories.T / t, torch.zeros(b, dtype=torch.long))
    return {"oac_loss": 0.5 * oac, "acc_loss": 0.5 * acc, "ccc_loss": 0.5 * ccc}


def reference_generation(logits, input_ids, attention_mask) -> torch.Tensor:
    """The reference's L_gen: labels are the input ids; positions whose next token is padding (by the
    attention mask) are dropped; the cross-entropy is the mean over the rest."""
    keep = attention_mask[:, 1:] != 0
    return F.cross_entropy(logits[:, :-1][keep], input_ids[:, 1:][keep])


@pytest.mark.parametrize(
    "b,k,labels",
    [
        (1, 3, [0]),  # one row (the only case that agreed before)
        (4, 0, [0, 1, 2, 3]),  # no hard negatives
        (4, 3, [0, 1, 2, 3]),
        (5, 2, [0, 1, 0, 1, 2]),  # repeated categories: nothing masked in the reference
        (3, 1, [7, 7, 7]),
    ],
)
def test_reference_compat_equals_the_reference_formulas(b, k, labels):
    inputs = stage_one_inputs(b, k, labels, seed=10 + b + k)
    g = torch.Generator().manual_seed(b * 7 + k)
    input_ids = torch.randint(0, 13, (b, 9), generator=g)
    lengths = torch.randint(3, 10, (b,), generator=g)
    attention = (torch.arange(9)[None, :] < lengths[:, None]).long()
    logits = torch.randn(b, 9, 13, generator=g)
    gen_labels = input_ids.masked_fill(attention == 0, -100)  # what the compat collator labels
    for value in (*[v for v in inputs.values() if v.is_floating_point()], logits):
        value.requires_grad_(True)
    loss = StageOneLoss(reference_compat=True)
    terms = loss(**inputs, logits=logits, gen_labels=gen_labels)
    expected = reference_contrastive(inputs["image"], inputs["attribute"], inputs["category"],
                                     inputs["neg_attribute"], inputs["neg_category"])  # fmt: skip
    expected["gen_loss"] = reference_generation(logits, input_ids, attention)
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(float(value), abs=1e-5), name
    assert float(total_loss(terms)) == pytest.approx(float(sum(expected.values())), abs=1e-5)
    # the temperatures never move: not trainable, no gradient
    total_loss(terms).backward()
    temperatures = [p for name, p in loss.named_parameters() if "temperature" in name]
    assert len(temperatures) == 3 and all(not p.requires_grad and p.grad is None for p in temperatures)


def test_reference_compat_differed_from_per_row_negatives():
    """The case the issue names: several rows with hard negatives. Per-row candidates give another number."""
    inputs = stage_one_inputs(4, 3, [0, 1, 2, 3])
    expected = reference_contrastive(inputs["image"], inputs["attribute"], inputs["category"],
                                     inputs["neg_attribute"], inputs["neg_category"])  # fmt: skip
    own = StageOneLoss(gen_weight=0, hard_negatives="own")(**inputs)
    assert abs(float(own["oac_loss"]) - float(expected["oac_loss"])) > 1e-3


def test_reference_compat_needs_shared_negatives():
    with pytest.raises(ValueError, match="hard_negatives must be batch"):
        StageOneLoss(reference_compat=True, hard_negatives="own")
