"""The base class of every FGVR model wrapper.

`FGVRModel` owns what all Hugging Face multimodal models share: loading (local folder or hub id,
revision, dtype, device, 4-/8-bit quantisation), left-padded batching, the greedy generation loop
and the log-likelihood scoring loop that lmms-eval's `multiple_choice` tasks call. A model file
only supplies what differs: the model class, its prompt format, stop tokens, and where needed how
the processor is called or an answer is scored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from harness.errors import UserError
from models.registry import ModelSpec, get_model_spec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hub_unavailable_message(hub_id: str) -> str:
    return (
        f"model weights '{hub_id}' are not available offline: they are not in the local Hugging Face "
        f"cache and the hub cannot be reached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!s}). "
        f"Download them on a connected machine (`hf download {hub_id}`) or pass "
        f"pretrained=/path/to/local/checkpoint in --model-args."
    )


def resolve_device(device: str | None) -> str:
    if device in (None, "", "auto_select"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} was requested but no CUDA device is available; use device=cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise UserError(f"dtype={dtype} is not supported; use one of auto, {', '.join(DTYPES)}") from None


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Request:
    """One lmms-eval request, unpacked: the question text, its images, and a continuation or gen kwargs."""

    index: int
    context: str
    images: list
    continuation: str | None = None
    gen_kwargs: dict | None = None


class FGVRModel(lmms):
    """Base class for the lmms-eval wrappers of Hugging Face MLLMs (decoder-only by default)."""

    is_simple = True
    registry_name: ClassVar[str]  # key in models.registry.MODELS
    model_class: ClassVar[str]  # transformers class, e.g. "Idefics2ForConditionalGeneration"
    stop_tokens: ClassVar[tuple[str, ...]] = ()  # besides the tokenizer's eos
    default_max_new_tokens: ClassVar[int] = 10

    def __init__(
        self,
        pretrained: str | None = None,
        revision: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int | str = 1,
        load_in_4bit: bool | str = False,
        load_in_8bit: bool | str = False,
        trust_remote_code: bool | str = False,
        max_new_tokens: int | str | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        self.spec: ModelSpec = get_model_spec(self.registry_name)
        if unknown:
            raise UserError(
                f"unknown --model-args for {self.spec.name}: {', '.join(sorted(unknown))}. Known: pretrained, "
                "revision, dtype, device, batch_size, load_in_4bit, load_in_8bit, trust_remote_code, max_new_tokens"
            )
        self.pretrained = pretrained or self.spec.hub_id
        self.revision = revision
        self.device_name = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device_name)
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens or self.default_max_new_tokens)
        self.trust_remote_code = as_bool(trust_remote_code)
        quantisation = self.quantisation_config(as_bool(load_in_4bit), as_bool(load_in_8bit))
        self.processor = self.load_processor()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        self.model = self.load_model(quantisation)
        self.model.eval()

    # ---- loading -------------------------------------------------------------------------------

    def quantisation_config(self, load_in_4bit: bool, load_in_8bit: bool):
        if load_in_4bit and load_in_8bit:
            raise UserError("load_in_4bit and load_in_8bit are mutually exclusive; pick one")
        if not (load_in_4bit or load_in_8bit):
            return None
        from transformers import BitsAndBytesConfig

        if load_in_8bit:
            return BitsAndBytesConfig(load_in_8bit=True)
        compute = self.torch_dtype if self.torch_dtype != torch.float32 else torch.bfloat16
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)

    def _from_pretrained(self, loader, **kwargs):
        try:
            return loader.from_pretrained(
                self.pretrained, revision=self.revision, trust_remote_code=self.trust_remote_code, **kwargs
            )
        except OSError as error:
            if Path(self.pretrained).exists():
                raise UserError(f"pretrained={self.pretrained}: cannot load a checkpoint from this folder ({error})") from error
            raise UserError(hub_unavailable_message(self.pretrained)) from error

    def load_processor(self):
        from transformers import AutoProcessor

        return self._from_pretrained(AutoProcessor)

    def load_model(self, quantisation):
        import transformers

        kwargs: dict[str, Any] = {"dtype": self.torch_dtype}
        if quantisation is not None:
            kwargs["quantization_config"] = quantisation
            kwargs["device_map"] = {"": self.device_name}
        elif self.device_name == "auto":
            kwargs["device_map"] = "auto"
        model = self._from_pretrained(getattr(transformers, self.model_class), **kwargs)
        if quantisation is None and self.device_name != "auto":
            model = model.to(self.device_name)
        return model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ---- hooks a model file may override ---------------------------------------------------------

    def build_prompt(self, question: str, n_images: int) -> str:
        """The model's own prompt around the question, ending where the answer starts."""
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, prompts: list[str], images: list[list]) -> dict[str, torch.Tensor]:
        """Processor call for a left-padded batch; returns tensors on the model's device."""
        batch = self.processor(text=prompts, images=images, padding=True, return_tensors="pt")
        return self.to_device(batch)

    def to_device(self, batch) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in batch.items():
            if torch.is_tensor(value):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.model.dtype if self.model.dtype.is_floating_point else self.torch_dtype)
            out[key] = value
        return out

    def stop_token_ids(self) -> list[int]:
        ids = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        for token in self.stop_tokens:
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != self.tokenizer.unk_token_id:
                ids.append(token_id)
        return ids

    def continuation_logprobs(self, prompts: list[str], continuations: list[str], images: list[list]):
        """Per request: (sum of log p(continuation tokens | prompt, image), all tokens greedy)."""
        full = self.encode([p + c for p, c in zip(prompts, continuations)], images)
        context = self.encode(prompts, images)
        n_cont = full["attention_mask"].sum(-1) - context["attention_mask"].sum(-1)
        logits = self.forward_logits(full)
        return self.sum_tail_logprobs(logits, full["input_ids"], n_cont.tolist())

    def forward_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = inputs["attention_mask"]
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at each row's first token
        with torch.inference_mode():
            return self.model(**inputs, position_ids=position_ids).logits.float()

    @staticmethod
    def sum_tail_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, tail_lengths: Sequence[int]):
        """Scores the last `n` tokens of each row (rows are left-padded, so answers end aligned)."""
        results = []
        for row, n in enumerate(tail_lengths):
            if n <= 0:
                raise ValueError("the continuation added no tokens; cannot score an empty answer")
            targets = input_ids[row, -n:]
            logprobs = torch.log_softmax(logits[row, -n - 1 : -1], dim=-1)
            chosen = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            results.append((float(chosen.sum()), bool((logprobs.argmax(-1) == targets).all())))
        return results

    # ---- lmms-eval interface ---------------------------------------------------------------------

    def _unpack(self, requests: list[Instance]) -> list[Request]:
        unpacked = []
        for index, request in enumerate(requests):
            context, second, doc_to_visual, doc_id, task, split = request.args
            images = doc_to_visual(self.task_dict[task][split][doc_id])
            if isinstance(second, str):
                unpacked.append(Request(index, context, images, continuation=second))
            else:
                unpacked.append(Request(index, context, images, gen_kwargs=dict(second or {})))
        return unpacked

    def _batches(self, items: list[Request], desc: str) -> Iterator[list[Request]]:
        ordered = sorted(items, key=lambda r: -len(r.context))  # similar lengths together, longest first
        size = self.batch_size
        for start in tqdm(range(0, len(ordered), size), desc=desc, disable=self.rank != 0):
            yield ordered[start : start + size]

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """(negative log-likelihood, is_greedy) per request: lmms-eval's multiple_choice takes the argmin.

        lmms-eval 0.7.3 passes responses through `unwrap_generation_output`, which turns a bare tuple
        into its string form; wrapping the pair in GenerationResult keeps it intact.
        """
        results: dict[int, tuple[float, bool]] = {}
        for batch in self._batches(self._unpack(requests), "Scoring options"):
            prompts = [self.build_prompt(r.context, len(r.images)) for r in batch]
            scored = self.continuation_logprobs(prompts, [r.continuation for r in batch], [r.images for r in batch])
            for request, (logprob, greedy) in zip(batch, scored):
                results[request.index] = (-logprob, greedy)
        return [GenerationResult(text=results[i]) for i in range(len(requests))]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        results: dict[int, str] = {}
        for batch in self._batches(self._unpack(requests), "Generating"):
            for request, text in zip(batch, self.generate_batch(batch)):
                results[request.index] = text
        return [results[i] for i in range(len(requests))]

    def generate_batch(self, batch: list[Request]) -> list[str]:
        gen_kwargs = batch[0].gen_kwargs or {}
        until = [s for s in gen_kwargs.get("until") or [] if s]
        prompts = [self.build_prompt(r.context, len(r.images)) for r in batch]
        inputs = self.encode(prompts, [r.images for r in batch])
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)),
                do_sample=False,
                eos_token_id=self.stop_token_ids(),
                pad_token_id=self.tokenizer.pad_token_id,
            )
        texts = self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [self.cut_at_stop(text, until) for text in texts]

    @staticmethod
    def cut_at_stop(text: str, until: Sequence[str]) -> str:
        for stop in until:
            text = text.split(stop, 1)[0]
        return text.strip()

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"{self.spec.display_name}: multi-round generation is not used by FGVR tasks")
