"""A tiny random transformers CLIP checkpoint with an offline character-level tokenizer, for
testing and benchmarking the CLIP hard-negative miner without hub access."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch


def build_tiny_clip(out_dir: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Builds (or reuses) the checkpoint in `out_dir`; loadable with CLIPModel/CLIPProcessor.from_pretrained."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers: the PIL processor is the default one
        from transformers import CLIPImageProcessor as ImageProcessor

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        chars = [chr(code) for code in range(33, 127)]  # printable ASCII, each alone and word-final
        vocab = {
            token: index
            for index, token in enumerate(
                [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
            )
        }
        (staging / "vocab.json").write_text(json.dumps(vocab))
        (staging / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(staging / "vocab.json"), str(staging / "merges.txt"))
        crop = {"height": image_size, "width": image_size}
        processor = CLIPProcessor(
            image_processor=ImageProcessor(size={"shortest_edge": image_size}, crop_size=crop),
            tokenizer=tokenizer,
        )
        special = {
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        }
        config = CLIPConfig(
            text_config={
                "vocab_size": len(vocab),
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 77,
                **special,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": image_size,
                "patch_size": 8,
            },
            projection_dim=16,
        )
        torch.manual_seed(seed)
        CLIPModel(config).save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "vocab.json").unlink()
        (staging / "merges.txt").unlink()
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
