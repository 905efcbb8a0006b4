"""Builds a stand-in remote-code checkpoint: the stand-in's files and the shared core copied into a
folder, a tokenizer, and random weights, saved through the real trust_remote_code classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

HERE = Path(__file__).parent
STANDINS = ("qwen_vl_chat", "phi3_vision", "internlm_xcomposer2", "mobilevlm_v2")
SPECIAL_TOKENS = {
    "phi3_vision": ["<|user|>", "<|assistant|>", "<|end|>"],
    "internlm_xcomposer2": ["[UNUSED_TOKEN_146]", "[UNUSED_TOKEN_145]"],
    "mobilevlm_v2": [],
}


def in_declared_range(name: str) -> bool:
    """True in an environment made for the remote-code models (make remote-env): the running
    transformers is inside the range the wrapper declares for the real checkpoint."""
    import transformers
    from packaging.specifiers import SpecifierSet

    from models.registry import get_model_spec

    return transformers.__version__ in SpecifierSet(get_model_spec(name).transformers)


def build_standin(name: str, out_dir: Path, seed: int = 0) -> Path:
    """The stand-in checkpoint of a remote-code model. Its config declares transformers 5
    ("fgvr_transformers"), the range it was written for, so the main environment can load it; in the
    remote-code environment that key is dropped and the wrapper's own range applies, as for the
    real checkpoint."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").is_file():
        return out_dir
    shutil.copytree(HERE / name, out_dir, dirs_exist_ok=True)
    if in_declared_range(name):
        config_file = out_dir / "config.json"
        config_file.write_text(
            json.dumps(
                {k: v for k, v in json.loads(config_file.read_text()).items() if k != "fgvr_transformers"},
                indent=2,
            )
        )
    shutil.copy(HERE / "_core" / "standin_core.py", out_dir)
    if name in SPECIAL_TOKENS:
        from models.fixtures.tokenizer import portable_llama_tokenizer

        portable_llama_tokenizer(SPECIAL_TOKENS[name]).save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir, trust_remote_code=True)
    config = AutoConfig.from_pretrained(out_dir, trust_remote_code=True)
    config.vocab_size = len(tokenizer)
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    model.save_pretrained(out_dir)
    return out_dir
