"""The model registry: every model the harness can run, listed once with its metadata.

Importing this module is cheap (no torch): the CLI and lmms-eval's entry-point loader read it.
`transformers` is the range of transformers releases a wrapper is known to work with; for
remote-code models it is the range their published modelling code targets, and loading refuses
outside it (see models/README-remote-code.md).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import asdict, dataclass

from harness.core.errors import UserError, unknown_name
from harness.core.protocols import FOCI_GENERIC_MARKERS, FociRecipe
from models.dtypes import DTYPES

NATIVE_TRANSFORMERS = ">=5.0,<6"  # tested on 5.23 with tiny checkpoints of every native architecture


@dataclass(frozen=True)
class ModelSpec:
    name: str  # harness name: `harness run --model NAME`
    wrapper: str  # "module:Class" of the lmms-eval wrapper
    hub_id: str  # default checkpoint
    display_name: str
    params_b: float
    family: str
    language_model: str
    vision_encoder: str
    licence: str
    remote_code: bool = False
    transformers: str = NATIVE_TRANSFORMERS  # versions the wrapper is known to work with
    foci: FociRecipe | None = None  # the paper's models: how FOCI-Benchmark evaluated them (--protocol foci)
    # config.json model_type(s) the wrapper loads (a checkpoint of another type is another architecture)
    model_types: tuple[str, ...] = ()

    @property
    def lmms_name(self) -> str:
        """The name lmms-eval knows the wrapper by (`lmms-eval --model <lmms_name>`)."""
        return f"{self.name}_fgvr"

    @property
    def lmms_class_path(self) -> str:
        module, _, cls = self.wrapper.partition(":")
        return f"{module}.{cls}"

    def load_wrapper(self) -> type:
        module, _, cls = self.wrapper.partition(":")
        return getattr(importlib.import_module(module), cls)

    def as_dict(self) -> dict:
        return {**asdict(self), "lmms_name": self.lmms_name}

    @property
    def reference_protocol(self) -> str:
        """The protocol of this model's published numbers: `foci` for the paper's models."""
        return "foci" if self.foci is not None else "harness"


# FOCI-Benchmark's evaluation of the paper's thirteen models (benchmark/data/dataset.py model_template,
# benchmark/model/model.py and model_internlm_xcomposer2.py), applied to each model's hub id.
# Generic class (HFModel): 100 new tokens, at least 1; answers after the first marker of the decoded text.
_USER_ASSISTANT = "USER: {images}\n{question}\nASSISTANT:"
FOCI_RECIPES: dict[str, FociRecipe] = {
    "llava15": FociRecipe(_USER_ASSISTANT, 100, 1, prompt_end="\nASSISTANT:"),
    "llava_next_mistral": FociRecipe("[INST] {images}\n{question} [/INST]", 100, 1, prompt_end=" [/INST]"),
    "mobilevlm_v2": FociRecipe(
        _USER_ASSISTANT, 10, 1, prompt_end="\nASSISTANT:", reference_class="MobileVLM"
    ),
    # max_new_tokens=10 without a minimum: the reference's one exception inside HFModel
    "instructblip_vicuna": FociRecipe("{question}", 10),
    "instructblip_flant5": FociRecipe("{question}", 100, 1),
    "blip2_flant5": FociRecipe("{question}", 100, 1),
    # "Phi-3-vision" and "pali" branches: the answer follows the decoded prompt's last words
    "phi3_vision": FociRecipe(
        None, 100, 1, prompt_end="directly. \n", markers=(*FOCI_GENERIC_MARKERS, "directly. \n")
    ),
    "paligemma": FociRecipe(
        "{question}", 100, 1, prompt_end="directly.\n", markers=(*FOCI_GENERIC_MARKERS, "directly.\n")
    ),
    "internlm_xcomposer2": FociRecipe(
        None,
        10,
        markers=(),
        cut_at="[UNUSED_TOKEN_145]",
        answer_after="The answer is ",
        reference_class="InternLMXComposerModel",
        system_prompt="",
    ),
    # IdeficsModel: [image, "User: ...", "<end_of_utterance>", "\nAssistant:"], stop and ban as below
    "idefics1": FociRecipe(
        "{images}User: {question}<end_of_utterance>\nAssistant:",
        10,
        prompt_end="\nAssistant:",
        markers=("Assistant:",),
        reference_class="IdeficsModel",
        stop_tokens=("<end_of_utterance>",),
        banned_tokens=("<image>", "<fake_token_around_image>"),
    ),
    # Idefics2Model: model_template's "User: " (paths containing "idefics") inside the chat template;
    # "StevenHH2000/Finedefics" contains no "idefics", so Finedefics gets none
    "idefics2": FociRecipe(
        None,
        1000,
        question_prefix="User: ",
        prompt_end="\nAssistant:",
        markers=("Assistant:",),
        drop="Answer: ",
        reference_class="Idefics2Model",
    ),
    "finedefics": FociRecipe(
        None,
        1000,
        prompt_end="\nAssistant:",
        markers=("Assistant:",),
        drop="Answer: ",
        reference_class="Idefics2Model",
    ),
    # QwenVLModel: no system turn; the picture ("Picture 1: <img>PATH</img>\n") before the template
    "qwen_vl_chat": FociRecipe(
        "<|im_start|>user\n{question}\n<|im_end|>\n<|im_start|>assistant\n",
        10,
        prompt_end="assistant\n",
        markers=("assistant",),
        reference_class="QwenVLModel",
        system_prompt="",
    ),
}


def _spec(
    name: str,
    wrapper: str,
    hub_id: str,
    display_name: str,
    params_b: float,
    family: str,
    language_model: str,
    vision_encoder: str,
    licence: str,
    **extra,
) -> ModelSpec:
    extra.setdefault("foci", FOCI_RECIPES.get(name))
    return ModelSpec(
        name,
        f"models.{wrapper}",
        hub_id,
        display_name,
        params_b,
        family,
        language_model,
        vision_encoder,
        licence,
        **extra,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "llava15",
            "llava:Llava15FGVR",
            "llava-hf/llava-1.5-7b-hf",
            "LLaVA-1.5-7B",
            7.1,
            "LLaVA",
            "Vicuna-7B-v1.5",
            "CLIP ViT-L/14-336",
            "Llama 2 Community License",
            model_types=("llava",),
        ),
        _spec(
            "llava_next_mistral",
            "llava:LlavaNextMistralFGVR",
            "llava-hf/llava-v1.6-mistral-7b-hf",
            "LLaVA-NeXT (Mistral-7B)",
            7.6,
            "LLaVA",
            "Mistral-7B-Instruct-v0.2",
            "CLIP ViT-L/14-336",
            "Apache-2.0",
            model_types=("llava_next",),
        ),
        _spec(
            "mobilevlm_v2",
            "mobilevlm:MobileVLMV2FGVR",
            "mtgv/MobileVLM_V2-7B",
            "MobileVLM V2 7B",
            7.1,
            "MobileVLM",
            "Vicuna-7B-v1.5",
            "CLIP ViT-L/14-336 + LDPv2",
            "Apache-2.0 (Llama 2 licence for the LM)",
            remote_code=True,
            transformers=">=4.33.1,<4.41",
            model_types=("mobilevlm",),
        ),
        _spec(
            "instructblip_vicuna",
            "blip:InstructBlipVicunaFGVR",
            "Salesforce/instructblip-vicuna-7b",
            "InstructBLIP (Vicuna-7B)",
            7.9,
            "BLIP",
            "Vicuna-7B-v1.1",
            "EVA-CLIP ViT-g/14 + Q-Former",
            "Llama licence (non-commercial)",
            model_types=("instructblip",),
        ),
        _spec(
            "instructblip_flant5",
            "blip:InstructBlipFlanT5FGVR",
            "Salesforce/instructblip-flan-t5-xl",
            "InstructBLIP (Flan-T5-XL)",
            4.0,
            "BLIP",
            "Flan-T5-XL",
            "EVA-CLIP ViT-g/14 + Q-Former",
            "MIT",
            model_types=("instructblip",),
        ),
        _spec(
            "phi3_vision",
            "phi3_vision:Phi3VisionFGVR",
            "microsoft/Phi-3-vision-128k-instruct",
            "Phi-3-Vision-128k-Instruct",
            4.2,
            "Phi-3",
            "Phi-3-mini-128k",
            "CLIP ViT-L/14-336",
            "MIT",
            remote_code=True,
            transformers=">=4.40.2,<4.49",
            model_types=("phi3_v",),
        ),
        _spec(
            "blip2_flant5",
            "blip:Blip2FlanT5FGVR",
            "Salesforce/blip2-flan-t5-xl",
            "BLIP-2 (Flan-T5-XL)",
            3.9,
            "BLIP",
            "Flan-T5-XL",
            "EVA-CLIP ViT-g/14 + Q-Former",
            "MIT",
            model_types=("blip-2",),
        ),
        _spec(
            "internlm_xcomposer2",
            "xcomposer2:XComposer2FGVR",
            "internlm/internlm-xcomposer2-vl-7b",
            "InternLM-XComposer2-VL-7B",
            8.6,
            "InternLM-XComposer",
            "InternLM2-7B",
            "CLIP ViT-L/14-490 + Partial LoRA",
            "InternLM licence (free commercial use on application)",
            remote_code=True,
            transformers=">=4.33.1,<4.46",
            model_types=("internlmxcomposer2",),
        ),
        _spec(
            "paligemma",
            "paligemma:PaliGemmaFGVR",
            "google/paligemma-3b-mix-224",
            "PaliGemma-3B-mix-224",
            2.9,
            "PaliGemma",
            "Gemma-2B",
            "SigLIP-So400m/14-224",
            "Gemma Terms of Use",
            model_types=("paligemma",),
        ),
        _spec(
            "idefics1",
            "idefics1:Idefics1FGVR",
            "HuggingFaceM4/idefics-9b-instruct",
            "IDEFICS-9B-Instruct",
            8.9,
            "Idefics",
            "LLaMA-7B",
            "OpenCLIP ViT-H/14",
            "LLaMA licence (non-commercial)",
            model_types=("idefics",),
        ),
        _spec(
            "idefics2",
            "idefics2:Idefics2FGVR",
            "HuggingFaceM4/idefics2-8b",
            "Idefics2",
            8.0,
            "Idefics",
            "Mistral-7B-v0.1",
            "SigLIP-SO400M",
            "Apache-2.0",
            model_types=("idefics2",),
        ),
        _spec(
            "qwen_vl_chat",
            "qwen_vl:QwenVLChatFGVR",
            "Qwen/Qwen-VL-Chat",
            "Qwen-VL-Chat",
            9.6,
            "Qwen-VL",
            "Qwen-7B",
            "OpenCLIP ViT-bigG/14",
            "Tongyi Qianwen licence",
            remote_code=True,
            transformers=">=4.32,<4.46",
            model_types=("qwen",),
        ),
        _spec(
            "finedefics",
            "idefics2:FinedeficsFGVR",
            "StevenHH2000/Finedefics",
            "Finedefics",
            8.0,
            "Idefics",
            "Mistral-7B-v0.1",
            "SigLIP-SO400M",
            "Apache-2.0",
            model_types=("idefics2",),
        ),
        # current open MLLMs beside the paper's thirteen
        _spec(
            "qwen2_5_vl",
            "qwen2_vl:QwenVLFGVR",
            "Qwen/Qwen2.5-VL-7B-Instruct",
            "Qwen2.5-VL-7B-Instruct",
            8.3,
            "Qwen-VL",
            "Qwen2.5-7B",
            "Qwen2.5-VL ViT (675M, window attention)",
            "Apache-2.0",
            model_types=("qwen2_5_vl",),
        ),
        _spec(
            "qwen3_vl",
            "qwen2_vl:Qwen3VLFGVR",
            "Qwen/Qwen3-VL-8B-Instruct",
            "Qwen3-VL-8B-Instruct",
            8.8,
            "Qwen-VL",
            "Qwen3-8B",
            "Qwen3-VL ViT (SigLIP-2 based, DeepStack)",
            "Apache-2.0",
            model_types=("qwen3_vl",),
        ),
        _spec(
            "fine_r1",
            "qwen2_vl:FineR1FGVR",
            "StevenHH2000/Fine-R1-7B",
            "Fine-R1-7B",
            8.3,
            "Qwen-VL",
            "Qwen2.5-7B",
            "Qwen2.5-VL ViT (675M, window attention)",
            "MIT",
            model_types=("qwen2_5_vl",),
        ),
        _spec(
            "gemma3_4b",
            "gemma3:Gemma3FGVR",
            "google/gemma-3-4b-it",
            "Gemma 3 4B IT",
            4.3,
            "Gemma",
            "Gemma 3 4B",
            "SigLIP-So400m/14-896",
            "Gemma Terms of Use",
            model_types=("gemma3",),
        ),
        _spec(
            "gemma3_12b",
            "gemma3:Gemma3Large",
            "google/gemma-3-12b-it",
            "Gemma 3 12B IT",
            12.2,
            "Gemma",
            "Gemma 3 12B",
            "SigLIP-So400m/14-896",
            "Gemma Terms of Use",
            model_types=("gemma3",),
        ),
        _spec(
            "internvl3",
            "internvl:InternVL3FGVR",
            "OpenGVLab/InternVL3-8B-hf",
            "InternVL3-8B",
            7.9,
            "InternVL",
            "Qwen2.5-7B",
            "InternViT-300M-448px-V2.5",
            "MIT (Qwen2.5 language model: Apache-2.0)",
            model_types=("internvl",),
        ),
        _spec(
            "llava_onevision",
            "llava_onevision:LlavaOnevisionFGVR",
            "llava-hf/llava-onevision-qwen2-7b-ov-hf",
            "LLaVA-OneVision-Qwen2-7B (OV)",
            8.0,
            "LLaVA",
            "Qwen2-7B",
            "SigLIP-So400m/14-384",
            "Apache-2.0",
            model_types=("llava_onevision",),
        ),
        _spec(
            "smolvlm2",
            "smolvlm:SmolVLM2FGVR",
            "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
            "SmolVLM2-2.2B-Instruct",
            2.2,
            "SmolVLM",
            "SmolLM2-1.7B",
            "SigLIP-So400m/14-384 (shape-optimised)",
            "Apache-2.0",
            model_types=("smolvlm",),
        ),
    )
}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model, as a row of `MODELS` does (lmms-eval finds it through models.manifest)."""
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is registered already")
    MODELS[spec.name] = spec
    return spec


def models_of_type(model_type: str) -> list[str]:
    """Registry names whose wrapper loads checkpoints of `model_type`."""
    return [name for name, spec in MODELS.items() if model_type in spec.model_types]


def spec_of_wrapper(wrapper: type) -> ModelSpec:
    """The registry entry of a wrapper class (or of the nearest registered class it derives from):
    a model's name is written once, in its registry row, never repeated on the class."""
    paths = {spec.wrapper: spec for spec in MODELS.values()}
    for cls in wrapper.__mro__:
        spec = paths.get(f"{cls.__module__}:{cls.__qualname__}")
        if spec is not None:
            return spec
    raise UserError(f"{wrapper.__module__}.{wrapper.__qualname__} is not a wrapper of models/registry.py")


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        pass
    for spec in MODELS.values():  # accept lmms-eval names too
        if spec.lmms_name == name:
            return spec
    raise unknown_name("model", name, MODELS)


BOOLEAN_SPELLINGS = ("true", "false", "1", "0", "yes", "no", "on", "off")


def known_model_args(wrapper: type) -> dict[str, inspect.Parameter]:
    """The --model-args a wrapper class takes: its constructors' named parameters (down to the base
    class's) and the model-specific `extra_args` it takes out of **extra."""
    known: dict[str, inspect.Parameter] = {}
    for cls in wrapper.__mro__:
        if "__init__" not in vars(cls) or cls.__module__.split(".")[0] != "models":
            continue
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                known.setdefault(name, parameter)
    for name in getattr(wrapper, "extra_args", ()):
        known.setdefault(name, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None))
    return known


def check_model_args(spec: ModelSpec, model_args: dict[str, str]) -> None:
    """Refuse unknown --model-args and malformed values when the run is planned, before any data is
    prepared, CLIP model mined with or checkpoint loaded (imports the wrapper's module, not weights)."""
    known = known_model_args(spec.load_wrapper())
    unknown = sorted(set(model_args) - set(known))
    if unknown:
        raise UserError(
            f"unknown --model-args for {spec.name}: {', '.join(unknown)}. Known: {', '.join(known)}"
        )
    for name, value in model_args.items():
        _check_value(name, str(value).strip(), known[name])
    spec.load_wrapper().check_extra_args(model_args)


def _check_value(name: str, value: str, parameter: inspect.Parameter) -> None:
    annotation = str(parameter.annotation)
    if name == "dtype":
        if value not in ("auto", *DTYPES):
            raise UserError(
                f"--model-args dtype={value} is not supported; use one of auto, {', '.join(DTYPES)}"
            )
    elif isinstance(parameter.default, bool) and value.lower() not in BOOLEAN_SPELLINGS:
        raise UserError(f"--model-args {name}={value} is not true or false")
    elif annotation.startswith("int") and not (value.isdigit() and int(value) > 0):
        raise UserError(f"--model-args {name}={value} must be a positive whole number")
