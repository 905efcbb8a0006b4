"""The paper's training recipes and ablations, by name (He et al., ICLR 2025, Tables 3 and 6).

A recipe says which stages run and how Stage I differs from the full method; the numbers (learning
rates, batches, weights) stay in the config. `apply_recipe` returns the config a recipe trains with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from finedefics_train.config import TrainingConfig
from harness.core.errors import unknown_name

STAGE2_STARTS = ("merged", "adapter")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    stages: tuple[str, ...]  # "stage1", "stage2", or "joint" (both objectives in one stage)
    loss_overrides: dict = field(default_factory=dict)
    use_attributes: bool = True
    random_negatives: bool = False
    # how Stage II starts after Stage I: "merged" (Stage I's adapter merged into the base, a fresh
    # LoRA on top: the reference's train.sh) or "adapter" (Stage I's adapter trained on)
    stage2_start: str = "merged"

    def __post_init__(self):
        if self.stage2_start not in STAGE2_STARTS:
            raise ValueError(f"recipe {self.name}: stage2_start must be one of {STAGE2_STARTS}")


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "finedefics",
            "the full method: Stage I (OAC + ACC + CCC + L_gen), merged into the base, then Stage II "
            "with a fresh LoRA",
            ("stage1", "stage2"),
        ),
        Recipe(
            "finedefics_continued",
            "the full method, Stage II training Stage I's adapter on (not merged, no fresh LoRA)",
            ("stage1", "stage2"),
            stage2_start="adapter",
        ),
        Recipe(
            "one_stage",
            "Table 3c: Stage I's objectives and Stage II's instruction loss together in a single stage",
            ("joint",),
        ),
        Recipe(
            "finetune_only", "Table 3a: Stage II instruction tuning only, no contrastive stage", ("stage2",)
        ),
        Recipe(
            "cl_obj_cat",
            "Table 3b: contrast objects with categories directly (no attributes, no description loss), then Stage II",
            ("stage1", "stage2"),
            loss_overrides={"oac_weight": 0.0, "acc_weight": 0.0, "gen_weight": 0.0, "occ_weight": 0.5},
            use_attributes=False,
        ),
        Recipe(
            "simple_negatives",
            "Table 6a: random negative categories (and their descriptions) instead of the mined hard ones",
            ("stage1", "stage2"),
            random_negatives=True,
        ),
        Recipe(
            "no_ccc",
            "the full method without the category-category term",
            ("stage1", "stage2"),
            loss_overrides={"ccc_weight": 0.0},
        ),  # fmt: skip
    )
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise unknown_name("recipe", name, RECIPES)
    return RECIPES[name]


def apply_recipe(recipe: Recipe, config: TrainingConfig) -> TrainingConfig:
    if not recipe.loss_overrides:
        return config
    return replace(config, loss=replace(config.loss, **recipe.loss_overrides))
