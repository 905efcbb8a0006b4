"""Tiny random checkpoints: each loads through the normal path, sees the image, generates, rebuilds identically."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoProcessor  # noqa: E402

from models.fixtures import tokenizer  # noqa: E402
from models.fixtures.tiny_models import ARCHS, BUILD_MARKER, TINY_ARCHS, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(arch, root / arch) for arch in TINY_ARCHS}


@pytest.fixture(scope="session")
def loaded(checkpoints):
    """(processor, model) per architecture, loaded once for the session."""
    cache = {}

    def load(arch):
        if arch not in cache:
            path = checkpoints[arch]
            cache[arch] = (
                (ARCHS[arch].processor_class or AutoProcessor).from_pretrained(path),
                ARCHS[arch].model_class.from_pretrained(path).eval(),
            )
        return cache[arch]

    return load


def noise_image(seed: int, size=(64, 48)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def model_inputs(arch, processor, image):
    prompt = ARCHS[arch].sample_prompt
    if arch == "idefics1":  # one prompt per image, given as parallel lists
        return processor(text=[prompt], images=[image], return_tensors="pt")
    return processor(text=prompt, images=image, return_tensors="pt")


def next_token_logits(model, inputs) -> torch.Tensor:
    extra = {}
    if model.config.get_text_config().is_encoder_decoder:
        extra["decoder_input_ids"] = torch.tensor([[model.generation_config.decoder_start_token_id]])
    with torch.no_grad():
        return model(**inputs, **extra).logits[0, -1]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_loads_through_auto_processor_and_model_class(arch, loaded):
    processor, model = loaded(arch)
    record = ARCHS[arch]  # what the architecture's one record says its processor is
    assert type(processor).__name__ == record.processor
    assert isinstance(processor, getattr(transformers, record.processor))
    assert ("video_processor" in type(processor).__mro__[1].get_attributes()) == record.image_only
    assert type(model) is ARCHS[arch].model_class
    # Idefics1 finds images through image_attention_mask, so only the processor knows the token id.
    config_ids = [getattr(model.config, name, None) for name in ("image_token_id", "image_token_index")]
    image_token = next((token for token in config_ids if token is not None), None)
    if image_token is None:
        image_token = processor.image_token_id
    assert processor.tokenizer.convert_ids_to_tokens(image_token) == record.image_token


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_image_changes_the_logits(arch, loaded):
    processor, model = loaded(arch)
    noise = next_token_logits(model, model_inputs(arch, processor, noise_image(0)))
    red = next_token_logits(model, model_inputs(arch, processor, Image.new("RGB", (80, 60), "red")))
    # Far beyond float noise: at least a tenth of the spread of the logits.
    assert (noise - red).abs().max() > 0.1 * noise.std()


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_greedy_generation_returns_new_tokens(arch, loaded):
    processor, model = loaded(arch)
    inputs = model_inputs(arch, processor, noise_image(1))
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    prompt_length = 0 if model.config.get_text_config().is_encoder_decoder else inputs["input_ids"].shape[1]
    assert output.shape[1] > prompt_length


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_rebuild_with_the_same_seed_gives_identical_weights(arch, checkpoints, tmp_path):
    # Retrain the vocabularies too: the tokenizers trainers are not deterministic on their own.
    for train in (
        tokenizer.train_metaspace_bpe,
        tokenizer.train_metaspace_unigram,
        tokenizer.wordpiece_vocab,
        tokenizer.train_byte_level_bpe,
    ):
        train.cache_clear()
    again = build_tiny_model(arch, tmp_path / arch, seed=0)
    first, second = load_file(checkpoints[arch] / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert (checkpoints[arch] / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


def test_another_seed_gives_other_weights(checkpoints, tmp_path):
    other = load_file(build_tiny_model("llava15", tmp_path / "llava15", seed=1) / "model.safetensors")
    first = load_file(checkpoints["llava15"] / "model.safetensors")
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_existing_build_is_reused_and_a_foreign_folder_is_refused(tmp_path):
    path = build_tiny_model("idefics2", tmp_path / "model")
    marker_time = (path / BUILD_MARKER).stat().st_mtime_ns
    assert build_tiny_model("idefics2", path) == path
    assert (path / BUILD_MARKER).stat().st_mtime_ns == marker_time
    with pytest.raises(FileExistsError):
        build_tiny_model("idefics2", path, seed=1)
    build_tiny_model("idefics2", path, seed=1, overwrite=True)
    assert not [sibling.name for sibling in tmp_path.iterdir() if sibling.name.startswith(".")]


def test_unknown_architecture_is_named(tmp_path):
    with pytest.raises(KeyError, match="idefics2"):
        build_tiny_model("idefics3", tmp_path / "model")


CHAT_CASES = {
    "idefics2": "User:<image>What bird is this?<end_of_utterance>\nAssistant:",
    "llava15": "USER: <image>\nWhat bird is this? ASSISTANT:",
    "llava_next_mistral": "[INST] <image>\nWhat bird is this? [/INST]",
    "qwen2_5_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>What bird is this?<|im_end|>\n<|im_start|>assistant\n",
    "qwen3_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What bird is this?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "gemma3_4b": "<bos><start_of_turn>user\n<start_of_image>What bird is this?<end_of_turn>\n<start_of_turn>model\n",
    "internvl3": "<|im_start|>user\n<IMG_CONTEXT>\nWhat bird is this?<|im_end|>\n<|im_start|>assistant\n",
    "llava_onevision": "<|im_start|>user <image>\nWhat bird is this?<|im_end|><|im_start|>assistant\n",
    "smolvlm2": "<|im_start|>User:<image>What bird is this?<end_of_utterance>\nAssistant:",
}


@pytest.mark.parametrize("arch", CHAT_CASES)
def test_chat_template_renders_the_real_prompt_format(arch, loaded):
    processor, _ = loaded(arch)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What bird is this?"}]}
    ]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == CHAT_CASES[arch]


def test_idefics2_template_joins_turns():
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A1"}]},
        {"role": "user", "content": [{"type": "text", "text": "Q2"}]},
    ]
    from jinja2 import Template

    from models.fixtures.tiny_models import IDEFICS_CHAT_TEMPLATE

    rendered = Template(IDEFICS_CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    assert (
        rendered
        == "User:<image>Q1<end_of_utterance>\nAssistant: A1<end_of_utterance>\nUser: Q2<end_of_utterance>\nAssistant:"
    )


def test_paligemma_scores_a_suffix(loaded):
    processor, model = loaded("paligemma")
    inputs = processor(
        text=ARCHS["paligemma"].sample_prompt, images=noise_image(2), suffix="Cardinal", return_tensors="pt"
    )
    assert (inputs["labels"] != -100).sum() > 0
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).loss)


def test_image_only_processor_saves_and_loads_as_the_real_class(loaded, tmp_path):
    processor, _ = loaded("qwen2_5_vl")
    processor.save_pretrained(tmp_path)
    config = (tmp_path / "processor_config.json").read_text()
    assert '"processor_class": "Qwen2_5_VLProcessor"' in config and "video_processor" not in config
    again = ARCHS["qwen2_5_vl"].processor_class.from_pretrained(tmp_path)
    image = noise_image(3)
    first = processor(text=ARCHS["qwen2_5_vl"].sample_prompt, images=image, return_tensors="pt")
    second = again(text=ARCHS["qwen2_5_vl"].sample_prompt, images=image, return_tensors="pt")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("arch", ["internvl3", "qwen2_5_vl"])
def test_image_only_processor_loads_the_hub_layout_with_a_video_config(arch, checkpoints, loaded, tmp_path):
    """Hub checkpoints keep the image processor in preprocessor_config.json, the chat template in
    chat_template.json and a video processor config beside them (in processor_config.json or its own
    file): the image-only processor loads them and ignores the video part."""
    import json
    import shutil

    folder = shutil.copytree(checkpoints[arch], tmp_path / arch)
    combined = json.loads((folder / "processor_config.json").read_text())
    image = {**combined.pop("image_processor"), "processor_class": combined["processor_class"]}
    video = {**image, "video_processor_type": "NoSuchVideoProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(image))
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video))
    (folder / "processor_config.json").write_text(json.dumps({**combined, "video_processor": video}))
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (folder / "chat_template.jinja").unlink()
    processor = ARCHS[arch].processor_class.from_pretrained(folder)
    reference, _ = loaded(arch)
    assert processor.chat_template == reference.chat_template
    inputs = processor(text=ARCHS[arch].sample_prompt, images=noise_image(4), return_tensors="pt")
    expected = reference(text=ARCHS[arch].sample_prompt, images=noise_image(4), return_tensors="pt")
    assert inputs.keys() == expected.keys() and all(torch.equal(inputs[k], expected[k]) for k in inputs)
