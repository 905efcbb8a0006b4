"""What a training run is, and the rules `--resume` follows (docs/training-safety.md).

A run's identity (`run_identity`: stage, base, recipe, init adapter, data manifest hash, the settings
that decide the weights) is written to OUT/checkpoints/run.json when a run starts afresh and into the
adapter's record when it finishes; `--resume` continues only a run with the same identity, from its
newest complete checkpoint. A run without `--resume` removes the previous run's record, adapter and
checkpoints first, so nothing in OUT describes weights that are no longer there.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from finedefics_train.stage_run import StageRun
from finedefics_train.training_data import manifest_hash
from harness.core.errors import UserError
from harness.core.io import write_json_atomic

TEMPERATURES_FILE = "temperatures.safetensors"
RECORD_FILE = "finedefics_training.json"
CHECKPOINTS = "checkpoints"
IDENTITY_FILE = "run.json"  # OUT/checkpoints/run.json: what the checkpoints were trained with
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", TEMPERATURES_FILE)
# settings that change what is saved or logged, not what is learnt: a resume may change them
BOOKKEEPING = ("save_steps", "save_total_limit", "logging_steps", "report_to", "dataloader_num_workers")


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint under OUT/checkpoints: one killed while being written (no
    trainer_state.json, which the Trainer writes last, unreadable weights, or a process's RNG state
    missing) is passed over."""
    processes = written_by(out)
    numbered = [
        (int(m.group(1)), p)
        for p in checkpoint_folders(out)
        if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
    ]
    return next((p for _, p in sorted(numbered, reverse=True) if checkpoint_complete(p, processes)), None)


def checkpoint_folders(out: Path) -> list[Path]:
    folder = Path(out) / CHECKPOINTS
    return [p for p in folder.glob("checkpoint-*") if p.is_dir()] if folder.is_dir() else []


def checkpoint_complete(folder: Path, processes: int | None = None) -> bool:
    """Every file a resume reads is there and readable. With `processes` (the number of processes that
    wrote the checkpoints), every process's RNG state too: each process writes its own, and rank 0's
    trainer_state.json does not wait for the others'."""
    from safetensors import safe_open

    needed = ["adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"]
    if processes is not None:
        needed += rng_state_files(processes)
    if not all((folder / name).is_file() for name in needed):
        return False
    try:
        json.loads((folder / "trainer_state.json").read_text())
        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as weights:
            weights.keys()
    except Exception:  # noqa: BLE001 - torn JSON or safetensors: whatever the error, not resumable
        return False
    return True


def rng_state_files(processes: int) -> list[str]:
    """The Trainer's RNG state files of a checkpoint written by `processes` processes."""
    return ["rng_state.pth"] if processes == 1 else [f"rng_state_{rank}.pth" for rank in range(processes)]


def written_by(out: Path) -> int | None:
    """How many processes trained the checkpoints under OUT/checkpoints (run.json; None if not recorded)."""
    path = Path(out) / CHECKPOINTS / IDENTITY_FILE
    try:
        return json.loads(path.read_text()).get("num_processes") if path.is_file() else None
    except ValueError:
        return None  # recorded_identity names the torn file


def check_same_processes(run: StageRun, checkpoint: Path) -> None:
    """A checkpoint continues only in as many processes as wrote it: each process restores its own RNG
    state, and the number of processes decides the gradient accumulation (so Stage I's contrastive
    candidates per micro-batch) of the same global batch."""
    written = written_by(run.out)
    if written is not None and written != run.num_processes:
        raise UserError(
            f"--resume: {checkpoint} was written by {written} process(es), this run has {run.num_processes}; "
            f"resume with --num-processes {written} (the checkpoint's per-process RNG states and batch split "
            "belong to that number), or run without --resume to start afresh"
        )


def incomplete_checkpoints(out: Path) -> list[Path]:
    processes = written_by(out)
    return sorted(p for p in checkpoint_folders(out) if not checkpoint_complete(p, processes))


def run_identity(run: StageRun) -> dict:
    """What decides the weights a stage learns: compared with the checkpoints' and the record's on --resume."""
    config = run.config.to_dict()
    stage = config["stage1" if run.stage == "joint" else run.stage]
    base = Path(run.base).expanduser()
    return {
        "stage": run.stage,
        "base": str(base.resolve()) if base.exists() else run.base,
        "recipe": run.recipe.name,
        "init_adapter": str(Path(run.init_adapter).resolve()) if run.init_adapter else None,
        "data_manifest_sha256": manifest_hash(run.data),
        "config": {
            "model": config["model"],
            "loss": config["loss"],
            "stage": {k: v for k, v in stage.items() if k not in BOOKKEEPING},
        },  # fmt: skip
    }


def identity_differences(recorded: dict, ours: dict, prefix: str = "") -> list[str]:
    """The dotted names of the fields that differ, e.g. ['base', 'config.stage.learning_rate']."""
    differ = []
    for key in sorted(set(recorded) | set(ours)):
        a, b = recorded.get(key), ours.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differ += identity_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differ.append(f"{prefix}{key}")
    return differ


def check_same_run(run: StageRun, recorded: dict | None, where: Path) -> None:
    """--resume continues only the run it was started as; anything else is refused, naming what differs."""
    if recorded is None:
        return
    ours = run_identity(run)
    differ = identity_differences(recorded, ours)
    if differ:
        shown = "; ".join(
            f"{name}: {lookup(recorded, name)!r} there, {lookup(ours, name)!r} now" for name in differ[:6]
        )
        raise UserError(
            f"--resume: {where} was trained with other settings ({shown}); resume with the same --base, "
            "--config, --set, --recipe and --data, or run without --resume to start afresh"
        )


def lookup(mapping: dict, dotted: str):
    for part in dotted.split("."):
        mapping = mapping.get(part) if isinstance(mapping, dict) else None
    return mapping


def recorded_identity(run: StageRun) -> tuple[dict | None, Path]:
    """The identity of the finished adapter (its record) or else of the checkpoints (run.json)."""
    for path in (run.out / RECORD_FILE, run.out / CHECKPOINTS / IDENTITY_FILE):
        if path.is_file():
            try:
                return json.loads(path.read_text()).get("identity"), path
            except ValueError as error:
                raise UserError(
                    f"{path}: not valid JSON ({error}); run without --resume to start afresh"
                ) from None
    return None, run.out


def start_afresh(run: StageRun) -> None:
    """A run without --resume: the previous run's record, adapter and checkpoints in OUT no longer
    describe what will be there, so they go (later stages' folders inside OUT are left alone)."""
    old = [run.out / name for name in (RECORD_FILE, *ADAPTER_FILES) if (run.out / name).exists()]
    if last_checkpoint(run.out) is not None or (run.out / RECORD_FILE).exists():
        print(f"{run.stage}: starting afresh in {run.out}; the previous run's record and checkpoints are "
              "removed (--resume continues a run instead)")  # fmt: skip
    for path in old:
        path.unlink()
    shutil.rmtree(run.out / CHECKPOINTS, ignore_errors=True)
    write_json_atomic(run.out / CHECKPOINTS / IDENTITY_FILE,
                      {"identity": run_identity(run), "num_processes": run.num_processes})  # fmt: skip


def drop_incomplete_checkpoints(run: StageRun) -> None:
    for folder in incomplete_checkpoints(run.out):
        print(f"{run.stage}: {folder} was not completely written (interrupted); removed")
        shutil.rmtree(folder, ignore_errors=True)
