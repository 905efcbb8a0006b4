"""Tiny random checkpoints of the real multimodal architectures, built offline for tests.

`build_tiny_model("idefics2", path)` writes a folder that loads through the normal path:
`AutoProcessor.from_pretrained(path)` and `Idefics2ForConditionalGeneration.from_pretrained(path)`.
Each build is a 2-layer model with the real model and processor classes, a tokenizer trained on an
embedded corpus (see `tokenizer.py`) and, where the real checkpoint has one, a chat template
written for this project. Weights are random but deterministic for a seed, and initialised so the
image visibly changes the logits. Text widths are multiples of 64 so bitsandbytes can quantise them.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2Processor,
    MistralConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

from harness.synthetic.tokenizer import llama_tokenizer

BUILD_MARKER = "tiny_build.json"
# Bump when a builder changes, so cached folders from older builders are rebuilt rather than reused.
BUILDER_VERSION = 1

# Shared by every text tower: widths are multiples of 64 for bitsandbytes 4-bit.
TEXT_DIMS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
}
VISION_DIMS = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}

IDEFICS2_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set parts = message['content'] if message['content'] is not string"
    " else [{'type': 'text', 'text': message['content']}] -%}"
    "{{- message['role'] | capitalize -}}"
    # The real format glues an opening image to the colon and puts a space before opening text.
    "{{- ':' if parts and parts[0]['type'] == 'image' else ': ' -}}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<end_of_utterance>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
)


def _idefics2() -> tuple[PreTrainedModel, ProcessorMixin]:
    n_latents = 8
    tokenizer = llama_tokenizer(["<fake_token_around_image>", "<image>", "<end_of_utterance>"], pad_token="<unk>")
    image_processor = Idefics2ImageProcessorPil(
        size={"shortest_edge": 32, "longest_edge": 64}, do_image_splitting=False
    )
    processor = Idefics2Processor(
        image_processor, tokenizer, image_seq_len=n_latents, chat_template=IDEFICS2_CHAT_TEMPLATE
    )
    text_config = MistralConfig(
        vocab_size=len(tokenizer), sliding_window=None, pad_token_id=tokenizer.pad_token_id, **TEXT_DIMS
    )
    config = Idefics2Config(
        text_config=text_config,
        vision_config={**VISION_DIMS, "image_size": 64, "patch_size": 8},
        perceiver_config={
            "hidden_size": TEXT_DIMS["hidden_size"],
            "resampler_n_latents": n_latents,
            "resampler_depth": 1,
            "resampler_n_heads": 4,
            "resampler_head_dim": 16,
            "num_key_value_heads": 4,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = Idefics2ForConditionalGeneration(config)
    end_of_utterance = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    model.generation_config = _generation_config(tokenizer, extra_eos=[end_of_utterance])
    return model, processor


def _generation_config(tokenizer, extra_eos: list[int] = ()) -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, *extra_eos],
        pad_token_id=tokenizer.pad_token_id,
    )


BUILDERS: dict[str, Callable[[], tuple[PreTrainedModel, ProcessorMixin]]] = {
    "idefics2": _idefics2,
}
TINY_ARCHS: tuple[str, ...] = tuple(BUILDERS)


def build_tiny_model(arch: str, out_dir: Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the tiny `arch` checkpoint into `out_dir` and return it; an existing identical build is reused.

    The folder appears atomically: it is written to a temporary sibling and renamed into place, so
    an interrupted build never leaves a half checkpoint. A folder holding something else raises
    `FileExistsError` unless `overwrite` is set.
    """
    if arch not in BUILDERS:
        raise KeyError(f"unknown tiny architecture {arch!r}; known: {', '.join(TINY_ARCHS)}")
    out_dir = Path(out_dir)
    marker = {"arch": arch, "seed": seed, "builder_version": BUILDER_VERSION}
    if out_dir.exists() and not overwrite:
        if _read_marker(out_dir) == marker:
            return out_dir
        raise FileExistsError(f"{out_dir} exists and is not a tiny {arch!r} build with seed {seed}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex}")
    try:
        _write_build(arch, seed, staging, marker)
        _move_into_place(staging, out_dir, marker)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _write_build(arch: str, seed: int, folder: Path, marker: dict) -> None:
    torch.manual_seed(seed)
    model, processor = BUILDERS[arch]()
    model.eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    # Written last: its presence is what marks the folder as complete.
    (folder / BUILD_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _move_into_place(staging: Path, out_dir: Path, marker: dict) -> None:
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex}")
        out_dir.rename(retired)
        shutil.rmtree(retired, ignore_errors=True)
    try:
        staging.rename(out_dir)
    except OSError:
        # Another process finished the same build first; theirs is as good as ours.
        if _read_marker(out_dir) != marker:
            raise


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / BUILD_MARKER).read_text())
    except (OSError, ValueError):
        return None
