"""`harness train merge`: a LoRA adapter folded into its base, saved as a full safetensors checkpoint
that `harness run --model finedefics --model-args pretrained=MERGED` loads like any Idefics2."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from harness.core.errors import UserError
from harness.core.io import file_sha256


def merge_adapter(
    adapter: Path, out: Path, base: str | None = None, *, force: bool = False
) -> tuple[Path, str]:
    """Merges `adapter` into `base` (default: the base it was trained on); returns the merged folder and
    the base actually used."""
    import transformers
    from peft import PeftModel
    from transformers import AutoProcessor

    from finedefics_train.arch import adapter_for, read_base_config
    from finedefics_train.resume import RECORD_FILE

    adapter, out = Path(adapter).expanduser(), Path(out).expanduser()
    check_adapter_files(adapter)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a new folder for the merged checkpoint")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not empty; choose a new folder")
    trained_on = trained_base(adapter)
    base = check_merge_base(adapter, trained_on, base, force)
    arch = adapter_for(read_base_config(base), f"--base {base}")
    record = json.loads((adapter / RECORD_FILE).read_text()) if (adapter / RECORD_FILE).is_file() else {}
    if record.get("base_architecture") not in (None, arch.name):
        raise UserError(
            f"{adapter} was trained on a {record['base_architecture']} base, but {base} is {arch.name}"
        )
    model = getattr(transformers, arch.model_class).from_pretrained(base)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    staging = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex}")
    try:
        merged.save_pretrained(str(staging))
        AutoProcessor.from_pretrained(base).save_pretrained(str(staging))
        weights = adapter / "adapter_model.safetensors"
        origin = {  # a later stage reuses this checkpoint only while the adapter is unchanged
            "merged_from": str(adapter),
            "merged_adapter_sha256": file_sha256(weights) if weights.is_file() else None,
            "merged_onto": base,
            "trained_on": trained_on,
            "base": base,
        }
        (staging / RECORD_FILE).write_text(json.dumps(record | origin, indent=2))
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out, base


def trained_base(adapter: Path) -> str:
    """The base the adapter was trained on: its training record's, else peft's base_model_name_or_path."""
    from finedefics_train.resume import RECORD_FILE
    from models.idefics2 import adapter_base

    try:
        recorded = json.loads((adapter / RECORD_FILE).read_text()).get("base")
    except (OSError, ValueError):
        recorded = None
    return recorded or adapter_base(adapter)


def check_merge_base(adapter: Path, trained_on: str, base: str | None, force: bool) -> str:
    """--base defaults to the adapter's own; another base is refused unless --force (the LoRA deltas were
    learnt against the trained base's weights, and only its architecture can be checked)."""
    if base is None or same_base(base, trained_on):
        return base or trained_on
    if not force:
        raise UserError(
            f"--base {base}: {adapter} was trained on {trained_on}; merging onto another base gives weights "
            "nobody trained. Leave out --base, or pass --force to merge onto it anyway"
        )
    return base


def same_base(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() or pb.exists():
        return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
    return a == b


def check_adapter_files(adapter: Path) -> None:
    """adapter_config.json and readable adapter weights, checked before the base loads."""
    from safetensors import safe_open

    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"--adapter {adapter}: not an adapter folder (no adapter_config.json)")
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise UserError(
            f"--adapter {adapter}: no adapter_model.safetensors (training did not finish?); "
            "pass a finished adapter folder"
        )
    try:
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                handle.get_slice(key)
    except Exception as error:  # noqa: BLE001 - a truncated or corrupt file, whichever way it fails
        raise UserError(
            f"{weights}: not a readable safetensors file ({error}); re-train or restore it"
        ) from None
