"""Builds a stand-in remote-code checkpoint: the stand-in's files and the shared core copied into a
folder, a tokenizer, and random weights, saved through the real trust_remote_code classes."""

from __future__ import annotations

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


def build_standin(name: str, out_dir: Path, seed: int = 0) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").is_file():
        return out_dir
    shutil.copytree(HERE / name, out_dir, dirs_exist_ok=True)
    shutil.copy(HERE / "_core" / "standin_core.py", out_dir)
    if name in SPECIAL_TOKENS:
        from harness.synthetic.tokenizer import llama_tokenizer

        llama_tokenizer(SPECIAL_TOKENS[name], pad_token="<unk>").save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir, trust_remote_code=True)
    config = AutoConfig.from_pretrained(out_dir, trust_remote_code=True)
    config.vocab_size = len(tokenizer)
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    model.save_pretrained(out_dir)
    return out_dir
