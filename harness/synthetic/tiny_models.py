"""Tiny random checkpoints of the real multimodal architectures, built offline for tests.

`build_tiny_model("idefics2", path)` writes a folder that loads through the normal path:
`AutoProcessor.from_pretrained(path)` and `ARCHS["idefics2"].model_class.from_pretrained(path)`.
Each build is a 2-layer model with the real model and processor classes, a tokenizer trained on an
embedded corpus (see `tokenizer.py`) and, where the real checkpoint has one, a chat template
written for this project that renders the real prompt format. Weights are random but deterministic
for a seed, and initialised so the image visibly changes the logits. Text widths are multiples of 64
so bitsandbytes can quantise them.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    CLIPVisionConfig,
    GemmaConfig,
    GenerationConfig,
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2Processor,
    IdeficsConfig,
    IdeficsForVisionText2Text,
    IdeficsProcessor,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
    LlavaProcessor,
    MistralConfig,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedModel,
    ProcessorMixin,
    SiglipVisionConfig,
    T5Config,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil
from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from harness.synthetic.tokenizer import bert_tokenizer, gemma_tokenizer, llama_tokenizer, t5_tokenizer

BUILD_MARKER = "tiny_build.json"
# Bump when a builder changes, so cached folders from older builders are rebuilt rather than reused.
BUILDER_VERSION = 1

# Every text tower: widths are multiples of 64 for bitsandbytes 4-bit (no GQA, so k/v are 64 wide too).
TEXT_DIMS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 16,
    "max_position_embeddings": 4096,
}
T5_DIMS = {"d_model": 64, "d_ff": 128, "d_kv": 16, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}
VISION_DIMS = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
# 32 px images in 8 px patches: 16 patch tokens per image.
IMAGE_SIZE, PATCH_SIZE = 32, 8
N_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2
N_QUERY_TOKENS = 8  # Q-Former queries (BLIP-2, InstructBLIP) and perceiver latents (Idefics, Idefics2)

# Idefics2 turns: "User:<image>Q<end_of_utterance>\nAssistant: A<end_of_utterance>\n".
IDEFICS_CHAT_TEMPLATE = (
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

# LLaVA-1.5 (Vicuna) turns: "USER: <image>\nQ ASSISTANT: A USER: ..."; images first, then text.
LLAVA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set parts = message['content'] if message['content'] is not string"
    " else [{'type': 'text', 'text': message['content']}] -%}"
    "{%- if message['role'] != 'system' -%}{{- message['role'] | upper -}}: {% endif -%}"
    "{%- for part in parts if part['type'] == 'image' -%}{{- '<image>\n' -}}{%- endfor -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{- part['text'] ~ ' ' -}}{%- endfor -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

# LLaVA-NeXT (Mistral) turns: "[INST] <image>\nQ [/INST] A</s>"; images first, then text.
LLAVA_MISTRAL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set parts = message['content'] if message['content'] is not string"
    " else [{'type': 'text', 'text': message['content']}] -%}"
    "{%- set text = parts | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '[INST] ' -}}"
    "{%- for part in parts if part['type'] == 'image' -%}{{- '<image>\n' -}}{%- endfor -%}"
    "{{- text ~ ' [/INST]' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- ' ' ~ text ~ '</s>' -}}"
    "{%- else -%}{{- text ~ '\n\n' -}}{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass(frozen=True)
class TinyArch:
    """How to build one architecture, load it back, and prompt it with one image."""

    model_class: type[PreTrainedModel]
    build: Callable[[], tuple[PreTrainedModel, ProcessorMixin]]
    # Text the processor accepts alongside one image, in the real checkpoint's prompt format.
    sample_prompt: str


def _generation_config(tokenizer, *extra_eos: int, **kwargs) -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, *extra_eos],
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )


def _text_config(config_class, tokenizer, **overrides):
    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return config_class(**{**ids, **TEXT_DIMS, **overrides})


def _t5_config(tokenizer) -> T5Config:
    # Flan-T5: gated-GELU feed-forward, untied head, decoding starts from <pad>.
    return T5Config(
        vocab_size=len(tokenizer),
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **T5_DIMS,
    )


def _clip_vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(**VISION_DIMS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=64)


def _idefics2() -> tuple[PreTrainedModel, ProcessorMixin]:
    tokenizer = llama_tokenizer(
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>"], pad_token="<unk>"
    )
    image_processor = Idefics2ImageProcessorPil(
        size={"shortest_edge": 32, "longest_edge": 64}, do_image_splitting=False
    )
    processor = Idefics2Processor(
        image_processor, tokenizer, image_seq_len=N_QUERY_TOKENS, chat_template=IDEFICS_CHAT_TEMPLATE
    )
    config = Idefics2Config(
        text_config=_text_config(MistralConfig, tokenizer, sliding_window=None),
        vision_config={**VISION_DIMS, "image_size": 64, "patch_size": PATCH_SIZE},
        perceiver_config={
            "hidden_size": TEXT_DIMS["hidden_size"],
            "resampler_n_latents": N_QUERY_TOKENS,
            "resampler_depth": 1,
            "resampler_n_heads": 4,
            "resampler_head_dim": 16,
            "num_key_value_heads": 4,
            # At the default 0.02 the all-ones latents drown the image: logits move by ~1% of their spread.
            "initializer_range": 0.2,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = Idefics2ForConditionalGeneration(config)
    end_of_utterance = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    model.generation_config = _generation_config(tokenizer, end_of_utterance)
    return model, processor


def _llava_tokenizer():
    # llava-hf layout: <image> right after the base vocabulary, then a dedicated <pad>.
    tokenizer = llama_tokenizer(["<image>"])
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def _llava15() -> tuple[PreTrainedModel, ProcessorMixin]:
    tokenizer = _llava_tokenizer()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor,
        tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=_clip_vision_config(),
        text_config=_text_config(LlamaConfig, tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=N_PATCHES,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    return model, processor


def _llava_next_mistral() -> tuple[PreTrainedModel, ProcessorMixin]:
    tokenizer = _llava_tokenizer()
    pinpoints = [[IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE], [2 * IMAGE_SIZE, 2 * IMAGE_SIZE]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor,
        tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_MISTRAL_CHAT_TEMPLATE,
    )
    config = LlavaNextConfig(
        vision_config=_clip_vision_config(),
        text_config=_text_config(MistralConfig, tokenizer, sliding_window=None),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        image_seq_length=N_PATCHES,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaNextForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    return model, processor


def _blip_config_kwargs(qformer_vocab_size: int = 2) -> dict:
    """Vision, Q-Former and query settings shared by BLIP-2 and InstructBLIP."""
    return {
        # The BLIP vision default initializer_range is 1e-10, which leaves the image without effect.
        "vision_config": {
            **VISION_DIMS,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "initializer_range": 0.02,
        },
        "qformer_config": {
            **VISION_DIMS,
            "vocab_size": qformer_vocab_size,
            "encoder_hidden_size": VISION_DIMS["hidden_size"],
            "cross_attention_frequency": 1,
            # At 0.02 the near-uniform Q-Former attention averages the image away (logits move by
            # ~0.1 std between a red and a blue image); at 0.1 they move by ~2 std.
            "initializer_range": 0.1,
        },
        "num_query_tokens": N_QUERY_TOKENS,
    }


def _blip_image_processor() -> BlipImageProcessorPil:
    return BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _randomise_query_tokens(model: PreTrainedModel) -> PreTrainedModel:
    # BLIP initialises the Q-Former queries to zeros, which makes every query read the image alike.
    torch.nn.init.normal_(model.query_tokens, std=0.02)
    return model


def _never_predict_pad(model: PreTrainedModel, tokenizer) -> None:
    # A random T5 head often ranks <pad> first once image features are strong, so every greedy answer
    # would decode to "". A zero row gives <pad> a logit of 0, in the middle of the others.
    with torch.no_grad():
        model.get_output_embeddings().weight[tokenizer.pad_token_id] = 0.0


def _blip_generation_config(tokenizer, text_config) -> GenerationConfig:
    if text_config.is_encoder_decoder:
        return _generation_config(tokenizer, decoder_start_token_id=text_config.decoder_start_token_id)
    return _generation_config(tokenizer)


def _instructblip(tokenizer, make_text_config) -> tuple[PreTrainedModel, ProcessorMixin]:
    qformer_tokenizer = bert_tokenizer()
    # The processor adds the <image> placeholder token to the tokenizer, so the text config comes after it.
    processor = InstructBlipProcessor(
        _blip_image_processor(), tokenizer, qformer_tokenizer, num_query_tokens=N_QUERY_TOKENS
    )
    text_config = make_text_config(tokenizer)
    config = InstructBlipConfig(
        **_blip_config_kwargs(qformer_vocab_size=len(qformer_tokenizer)),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = _randomise_query_tokens(InstructBlipForConditionalGeneration(config))
    if text_config.is_encoder_decoder:
        _never_predict_pad(model, tokenizer)
    model.generation_config = _blip_generation_config(tokenizer, text_config)
    return model, processor


def _instructblip_vicuna() -> tuple[PreTrainedModel, ProcessorMixin]:
    tokenizer = llama_tokenizer()
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return _instructblip(tokenizer, lambda tok: _text_config(LlamaConfig, tok))


def _instructblip_flant5() -> tuple[PreTrainedModel, ProcessorMixin]:
    return _instructblip(t5_tokenizer(), _t5_config)


def _blip2_flant5() -> tuple[PreTrainedModel, ProcessorMixin]:
    tokenizer = t5_tokenizer()
    processor = Blip2Processor(_blip_image_processor(), tokenizer, num_query_tokens=N_QUERY_TOKENS)
    text_config = _t5_config(tokenizer)
    config = Blip2Config(
        **_blip_config_kwargs(),
        text_config=text_config,
        image_text_hidden_size=64,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = _randomise_query_tokens(Blip2ForConditionalGeneration(config))
    _never_predict_pad(model, tokenizer)
    model.generation_config = _blip_generation_config(tokenizer, text_config)
    return model, processor


def _paligemma() -> tuple[PreTrainedModel, ProcessorMixin]:
    tokenizer = gemma_tokenizer(add_bos_token=True)
    image_processor = SiglipImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_seq_length=N_PATCHES
    )
    # Adds <image> and the 1024 <locNNNN> + 128 <segNNN> tokens, as in the real vocabulary.
    processor = PaliGemmaProcessor(image_processor, tokenizer)
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            **VISION_DIMS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False
        ),
        text_config=_text_config(GemmaConfig, tokenizer),
        image_token_index=processor.image_token_id,
        vocab_size=len(tokenizer),
        projection_dim=TEXT_DIMS["hidden_size"],
        hidden_size=TEXT_DIMS["hidden_size"],
    )
    model = PaliGemmaForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    return model, processor


# Idefics1 has Llama-style attention without grouped-query or head_dim options.
IDEFICS_TEXT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def _idefics1() -> tuple[PreTrainedModel, ProcessorMixin]:
    extras = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    tokenizer = llama_tokenizer(extras, pad_token="<unk>")
    image_processor = IdeficsImageProcessorPil(image_size=IMAGE_SIZE)
    processor = IdeficsProcessor(image_processor, tokenizer, image_size=IMAGE_SIZE)
    config = IdeficsConfig(
        # The image tokens live in the decoupled "additional" embedding rows, after the base vocabulary.
        vocab_size=len(tokenizer) - len(extras),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **{key: TEXT_DIMS[key] for key in IDEFICS_TEXT_KEYS},
        additional_vocab_size=len(extras),
        vision_config={
            "embed_dim": VISION_DIMS["hidden_size"],
            "intermediate_size": VISION_DIMS["intermediate_size"],
            "num_hidden_layers": VISION_DIMS["num_hidden_layers"],
            "num_attention_heads": VISION_DIMS["num_attention_heads"],
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        use_resampler=True,
        perceiver_config={
            "use_resampler": True,
            "resampler_n_latents": N_QUERY_TOKENS,
            "resampler_depth": 1,
            "resampler_n_heads": 4,
            "resampler_head_dim": 16,
        },
        # The default "zeros" gates shut every cross-attention block, so the image has no effect.
        alpha_initializer="ones",
    )
    model = IdeficsForVisionText2Text(config)
    end_of_utterance = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    model.generation_config = _generation_config(tokenizer, end_of_utterance)
    return model, processor


ARCHS: dict[str, TinyArch] = {
    "idefics2": TinyArch(
        Idefics2ForConditionalGeneration,
        _idefics2,
        "User:<image>What bird is this?<end_of_utterance>\nAssistant:",
    ),
    "llava15": TinyArch(
        LlavaForConditionalGeneration, _llava15, "USER: <image>\nWhat bird is this? ASSISTANT:"
    ),
    "llava_next_mistral": TinyArch(
        LlavaNextForConditionalGeneration, _llava_next_mistral, "[INST] <image>\nWhat bird is this? [/INST]"
    ),
    "instructblip_vicuna": TinyArch(
        InstructBlipForConditionalGeneration, _instructblip_vicuna, "What bird is this?"
    ),
    "instructblip_flant5": TinyArch(
        InstructBlipForConditionalGeneration, _instructblip_flant5, "What bird is this?"
    ),
    "blip2_flant5": TinyArch(
        Blip2ForConditionalGeneration, _blip2_flant5, "Question: What bird is this? Answer:"
    ),
    "paligemma": TinyArch(
        PaliGemmaForConditionalGeneration, _paligemma, "<image>answer en What bird is this?"
    ),
    # Idefics1 takes the image as a separate prompt item; the processor adds the image tokens itself.
    "idefics1": TinyArch(
        IdeficsForVisionText2Text, _idefics1, "User: What bird is this?<end_of_utterance>\nAssistant:"
    ),
}
TINY_ARCHS: tuple[str, ...] = tuple(ARCHS)


def build_tiny_model(arch: str, out_dir: Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the tiny `arch` checkpoint into `out_dir` and return it; an existing identical build is reused.

    The folder appears atomically: it is written to a temporary sibling and renamed into place, so
    an interrupted build never leaves a half checkpoint. A folder holding something else raises
    `FileExistsError` unless `overwrite` is set.
    """
    if arch not in ARCHS:
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
    model, processor = ARCHS[arch].build()
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
