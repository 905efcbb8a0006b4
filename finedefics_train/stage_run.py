"""What one stage of a training run is (`StageRun`), below both the trainer and the resume rules,
which read it: the trainer trains it, `finedefics_train.resume` decides what a `--resume` of it may
continue."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finedefics_train.config import StageConfig, TrainingConfig
from finedefics_train.recipes import Recipe


@dataclass
class StageRun:
    """Everything `train_stage` needs, checked up front."""

    stage: str  # stage1 | stage2 | joint
    data: Path
    base: str
    out: Path
    config: TrainingConfig
    recipe: Recipe
    resume: bool = False
    init_adapter: Path | None = None
    num_processes: int = 1
    done: bool = False  # --resume found this stage finished
    # a previous stage's adapter, merged into `base` before this stage trains a fresh LoRA on the
    # merged weights (the reference's train.sh); the merged checkpoint is `merged_path(merge_from)`
    merge_from: Path | None = None

    @property
    def stage_config(self) -> StageConfig:
        return self.config.stage("stage1" if self.stage == "joint" else self.stage)

    @property
    def training_base(self) -> str:
        """The checkpoint this stage loads: `base`, or the merged one."""
        return self.base if self.merge_from is None else str(merged_path(self.merge_from))


def merged_path(adapter: Path) -> Path:
    """Where a stage's adapter merged into its base goes: beside the adapter folder, `<name>-merged`."""
    adapter = Path(adapter)
    return adapter.with_name(f"{adapter.name}-merged")
