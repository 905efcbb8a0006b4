"""`harness train merge`: a LoRA adapter folded into its base, saved as a full safetensors checkpoint
that `harness run --model finedefics --model-args pretrained=MERGED` loads like any Idefics2."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from harness.core.errors import UserError
from harness.core.io import file_sha256


def merge_adapter(adapter: Path, out: Path, base: str | None = None) -> Path:
    import transformers
    from peft import PeftModel
    from transformers import AutoProcessor

    from finedefics_train.arch import RECORD_FILE, adapter_for, read_base_config
    from models.idefics2 import adapter_base

    adapter, out = Path(adapter).expanduser(), Path(out).expanduser()
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"--adapter {adapter}: not an adapter folder (no adapter_config.json)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not empty; choose a new folder")
    base = base or adapter_base(adapter)
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
        }
        (staging / RECORD_FILE).write_text(json.dumps(record | origin, indent=2))
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
