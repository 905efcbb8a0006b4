"""The base class of every FGVR model wrapper.

`FGVRModel` owns what all Hugging Face multimodal models share: loading (local folder or hub id,
revision, dtype, device, 4-/8-bit quantisation), data-parallel ranks, left-padded batching, the
greedy generation loop and the log-likelihood loop that lmms-eval's `multiple_choice` tasks call.
How an answer is scored lives in `models.scoring` (decoder-only, encoder-decoder via labels, or a
causal suffix); a model file only supplies what differs: the model class, its prompt format, stop
tokens, and where needed how the processor is called or which scorer it uses.

Batches are prepared ahead (`EncodingPrefetcher`): a background thread (or, with `num_workers` > 0,
torch DataLoader worker processes) decodes the next batches' images and runs the processor while
the model answers the current one, and a request that raises
is retried alone, then answered with the failure marker of `harness.core.requests` (counted as an
error by the task's scoring).
"""

from __future__ import annotations

import copy
import gc
import logging
import multiprocessing
import os
import pickle
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from harness.core.errors import UserError
from harness.core.protocols import (
    VLMCLASSIFIER_MAX_NEW_TOKENS,
    VLMCLASSIFIER_TRIGGER,
    FociRecipe,
    check_protocol,
)
from harness.core.requests import FAILED_GENERATION, FAILED_NLL
from models import distributed
from models.dtypes import DTYPES
from models.registry import ModelSpec, known_model_args, spec_of_wrapper
from models.requests import DocumentImages, Request, VisualSource, generation_settings, group_options
from models.scoring import AnswerScorer, CausalScorer, Prefix, Score, cache_of, join_answer, with_cache

log = logging.getLogger(__name__)
# A reasoning block, or one left open when generation stopped before the answer.
THINKING = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


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
    if dtype not in DTYPES:
        raise UserError(f"dtype={dtype} is not supported; use one of auto, {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def dtype_keyword() -> str:
    """from_pretrained's dtype argument: `dtype` since transformers 4.56, `torch_dtype` before (remote-code envs)."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def default_num_workers(device: str, world_size: int = 1) -> int:
    """DataLoader workers per rank when --num-workers is not given: none on CPU (the model computes on
    the same cores, and the prefetch thread already overlaps with it); on a GPU, the cores this rank
    has (its share of the machine's) less one for the rank itself, at most 4."""
    if not device.startswith("cuda"):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(4, cores // max(1, world_size) - 1))


# Tensors smaller than this come back from a worker inside its message; larger ones (pixel values)
# through shared memory, whose file descriptor costs a socket round trip with the worker per tensor.
INLINE_BYTES = 1 << 18
# What a worker's copy of the wrapper leaves out: the model and the state of the run in this process.
MODEL_STATE = (
    "model",
    "scorer",
    "accelerator",
    "parallel",
    "task_dict",
    "_twin",
    "_workers",
    "encode",
    "prompt_for",
)


def picklable(value) -> bool:
    try:
        pickle.dumps(value)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def default_start_method() -> str:
    """How DataLoader workers start: forked where the platform can and CUDA is not initialised here
    (a forked child cannot use the parent's CUDA state; forking costs no imports), else spawned
    (Windows, macOS's default, or a process whose model is already on a GPU)."""
    if "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


@dataclass(frozen=True)
class PipedTensor:
    """A small CPU tensor on its way back from a worker, as an array pickled into the worker's message."""

    array: np.ndarray

    @classmethod
    def wrap(cls, value):
        if torch.is_tensor(value) and value.nbytes < INLINE_BYTES and value.dtype != torch.bfloat16:
            return cls(value.numpy())
        return value

    @staticmethod
    def unwrap(value):
        return torch.from_numpy(value.array) if isinstance(value, PipedTensor) else value


class WorkerJobs(Dataset):
    """What a DataLoader worker does with one job (a batch: each question's text, task, split and
    document index): decode the images, build the prompts with `encoder` (the wrapper without its
    model) and, with `run_processor`, run the processor. A worker holds the encoder, the documents and
    each task's `doc_to_visual` (`visuals`) from its start (inherited when forked, pickled once when
    spawned), so a job travels as its small description (the function is lmms-eval's bound method:
    pickled, it carries the whole task object, about 150 KB) and one set of workers serves every
    call of a run."""

    def __init__(
        self, encoder: FGVRModel, documents: Mapping, visuals: Mapping[str, Callable], run_processor: bool
    ):
        self.encoder, self.documents, self.run_processor = encoder, documents, run_processor
        self.visuals = dict(visuals)

    @staticmethod
    def job(batch: list) -> list[tuple[str, str, str, int]]:
        """A batch's description for a worker (each item's `source.origin` must be in `visuals`)."""
        return [(item.context, o.task, o.split, o.doc_id) for item in batch for o in (item.source.origin,)]

    def __getitem__(self, job: list[tuple[str, str, str, int]]) -> tuple[list, list[str], dict | None]:
        sources = [VisualSource(self.visuals[task], task, split, doc) for _, task, split, doc in job]
        images = [source.load(self.documents) for source in sources]
        prompts = [self.encoder.prompt_for(item[0], len(row)) for item, row in zip(job, images)]
        if not self.run_processor:  # the decoded images go back, so that nothing decodes them again there
            return [[to_shared(image) for image in row] for row in images], prompts, None
        processed = self.encoder.process(prompts, images)
        # the images are not needed where the model runs: only their count
        return [len(row) for row in images], prompts, {k: PipedTensor.wrap(v) for k, v in processed.items()}


class JobFeed(Sampler):
    """The jobs of the current call; each pass of a persistent DataLoader hands out the list set last."""

    def __init__(self):
        self.jobs: list = []

    def __iter__(self):
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)


class WorkerPool:
    """`num_workers` DataLoader worker processes for one wrapper, started on the first call and kept
    (persistent_workers) until the evaluation ends: a run's later calls (the journal's chunks, the
    other request type) pay no new start, which for spawned workers means importing torch again."""

    def __init__(self, jobs: WorkerJobs, num_workers: int, start_method: str):
        self._feed = JobFeed()
        self.visuals = jobs.visuals  # each task's doc_to_visual, as the workers hold them
        self.settings: tuple = ()  # what the wrapper started it for
        self.held: tuple = ()
        self._loader = DataLoader(
            jobs,
            batch_size=None,
            sampler=self._feed,
            num_workers=num_workers,
            collate_fn=_as_is,
            prefetch_factor=2,
            persistent_workers=True,
            worker_init_fn=_one_thread,
            multiprocessing_context=start_method,
        )

    def run(self, jobs: list) -> Iterator[tuple[list, list[str], dict | None]]:
        """The workers' results for `jobs`, in order, two jobs ahead per worker."""
        self._feed.jobs = jobs
        return iter(self._loader)


class SharedImage:
    """A decoded RGB or greyscale image on its way back from a DataLoader worker: its pixels as a
    tensor, which torch passes through shared memory (a pickled PIL image would be copied through
    the worker's pipe, which costs more than decoding it)."""

    def __init__(self, image):
        self.mode, self.pixels = image.mode, torch.from_numpy(np.asarray(image))

    def image(self):
        from PIL import Image

        return Image.fromarray(self.pixels.numpy(), self.mode)


def to_shared(image):
    return SharedImage(image) if getattr(image, "mode", None) in ("RGB", "L") else image


def from_shared(image):
    return image.image() if isinstance(image, SharedImage) else image


def _as_is(sample):
    return sample


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # N workers on N cores: no thread oversubscription inside each


class EncodingPrefetcher:
    """Overlaps image loading and preprocessing with model compute: while the model answers batch i, a
    background thread decodes the images of batch i+1 and runs the processor on its prompts; when
    the scorer calls `encode` with exactly those prompts and images, the tensors are ready, and
    `prompt_for` returns the prompts built there. Any other `encode` call (the naive path's prompt +
    answer sequences) is computed as before.

    With `workers` (a WorkerPool), the image decoding, the prompts and (where the pool runs the
    processor) the processor run in DataLoader worker processes instead of the thread, and
    `to_device` moves their tensors here."""

    def __init__(
        self,
        encode: Callable[[list[str], list[list]], Any],
        prompt: Callable[[str, int], str],
        run_processor: bool,
        workers: WorkerPool | None = None,
        to_device: Callable[[Any], Any] | None = None,
        prompt_here: Callable[[str, int], str] | None = None,
    ):
        self._encode, self._prompt, self._run_processor = encode, prompt, run_processor
        self._workers, self._to_device = workers, to_device
        self._prompt_here = prompt_here or prompt  # for prompts asked of this thread, not prepared
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fgvr-prefetch")
        self._ready: tuple[tuple, Any] | None = None
        self._prompts: dict[tuple[str, int], str] = {}

    @staticmethod
    def _key(prompts: Sequence[str], images: Sequence[Sequence]) -> tuple:
        # a document's image list is one object from decoding to release: its identity names its images
        return tuple(prompts), tuple(map(id, images))

    def _prepare(self, batch: list) -> tuple[tuple, Any, list[str]]:
        images = [item.images for item in batch]  # decodes each document's images once
        if not self._run_processor:
            return (), None, None
        prompts = [self._prompt(item.context, len(row)) for item, row in zip(batch, images)]
        return self._key(prompts, images), self._encode(prompts, images), prompts

    def encode(self, prompts: list[str], images: list[list]):
        if self._ready is not None and self._ready[0] == self._key(prompts, images):
            return self._ready[1]
        return self._encode(prompts, images)

    def prompt_for(self, context: str, n_images: int) -> str:
        prompt = self._prompts.get((context, n_images))
        return prompt if prompt is not None else self._prompt_here(context, n_images)

    def batches(self, batches: Iterator[list]) -> Iterator[list]:
        """Each batch (of Requests or OptionGroups), handed over with its encoding done and the next
        batch's under way; its images are released once the caller is done with it."""
        try:
            if self._workers is not None:
                yield from self._from_workers(batches)
                return
            pending: tuple[list, Future] | None = None
            for batch in batches:
                future = self._pool.submit(self._prepare, batch)
                if pending is not None:
                    yield from self._hand_over(*pending)
                pending = (batch, future)
            if pending is not None:
                yield from self._hand_over(*pending)
        finally:
            self._ready, self._prompts = None, {}
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _from_workers(self, batches: Iterator[list]) -> Iterator[list]:
        chunks = list(batches)
        jobs = [WorkerJobs.job(batch) for batch in chunks]
        for batch, (shared, prompts, processed) in zip(chunks, self._workers.run(jobs)):
            images = []
            for item, row in zip(batch, shared):
                if isinstance(row, int):  # processed there: decoded here only if asked for
                    item.source.defer(row)
                else:  # the decoded images, so that nothing decodes them again here
                    item.source.fill([from_shared(image) for image in row])
                images.append(item.images)
            if processed is not None:
                tensors = {key: PipedTensor.unwrap(value) for key, value in processed.items()}
                self._ready = (self._key(prompts, images), self._to_device(tensors))
            yield from self._served(batch, prompts, images)

    def _hand_over(self, batch: list, future: Future) -> Iterator[list]:
        key, encoding, prompts = future.result()  # a preprocessing error is raised here, with its batch
        self._ready = (key, encoding) if self._run_processor else None
        yield from self._served(batch, prompts, [item.images for item in batch])

    def _served(self, batch: list, prompts: list[str] | None, images: list) -> Iterator[list]:
        self._prompts = {(item.context, len(row)): p for item, p, row in zip(batch, prompts or (), images)}
        yield batch
        self._ready, self._prompts = None, {}
        for item in batch:
            item.source.release()


class FGVRModel(lmms):
    """Base class for the lmms-eval wrappers of Hugging Face MLLMs (decoder-only by default)."""

    is_simple = True
    model_class: ClassVar[str]  # transformers class, e.g. "Idefics2ForConditionalGeneration"
    stop_tokens: ClassVar[tuple[str, ...]] = ()  # besides the tokenizer's eos
    default_max_new_tokens: ClassVar[int] = 10
    scorer_class: ClassVar[type[AnswerScorer]] = CausalScorer
    position_offset: ClassVar[int] = (
        0  # the position id of a sequence's first token (PaliGemma counts from 1)
    )
    generate_returns_prompt: ClassVar[bool] = True  # False where generate() returns only the new tokens
    # The documented prompt format, e.g. "USER: {images}\n{question}\nASSISTANT:" ({images}: one image_token
    # per image); None: the checkpoint's chat template.
    prompt_template: ClassVar[str | None] = None
    image_token: ClassVar[str] = "<image>"
    extra_args: ClassVar[tuple[str, ...]] = ()  # model-specific --model-args that accept_extra_args takes
    prefetch_encoding: ClassVar[bool] = (
        True  # run `encode` ahead of the model (False: only decode images ahead)
    )
    chat_interface: ClassVar[bool] = False  # answers through the checkpoint's own `model.chat`
    worker_start_method: str | None = None  # "fork", "spawn", "forkserver"; None: default_start_method()

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
        shared_prefix: bool | str = True,
        attn_implementation: str | None = None,
        use_safetensors: bool | str = False,
        protocol: str = "harness",
        num_workers: str | int | None = None,  # not "int ...": 0 and "auto" are valid (see worker_count)
        **extra: Any,
    ) -> None:
        super().__init__()
        self.request_failures: list[str] = []  # one "Type: message" per request that raised
        self.spec: ModelSpec = spec_of_wrapper(type(self))
        self.set_protocol(protocol)
        self.accept_extra_args(extra)
        self.pretrained = pretrained or self.spec.hub_id
        self.revision = revision
        self.parallel = distributed.current_process(device)
        self._rank, self._world_size = self.parallel.rank, self.parallel.world_size
        self.device_name = resolve_device(self.parallel.device or device)
        self.torch_dtype = resolve_dtype(dtype, self.device_name)
        self.batch_size_per_gpu = int(batch_size)
        self.num_workers = self.worker_count(num_workers)
        self.max_new_tokens = int(max_new_tokens or self.default_max_new_tokens)
        self.trust_remote_code = as_bool(trust_remote_code)
        self.shared_prefix = as_bool(shared_prefix)
        self.attn_implementation = attn_implementation
        self.thinking_blocks = 0  # <think>...</think> blocks stripped from generated answers
        self.use_safetensors = as_bool(
            use_safetensors
        )  # True: never fall back to pickled weights (the worker)
        quantisation = self.quantisation_config(as_bool(load_in_4bit), as_bool(load_in_8bit))
        self.check_environment()
        self.processor = self.load_processor()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        self.model = self.load_model(quantisation)
        self.model.eval()
        self.scorer = self.scorer_class(self)
        if self.parallel.accelerator is not None:
            self.accelerator = self.parallel.accelerator  # lmms-eval's data-parallel path syncs through it

    def worker_count(self, num_workers: int | str | None) -> int:
        """DataLoader worker processes that decode and preprocess for this rank (--num-workers)."""
        if num_workers in (None, "", "auto"):
            return default_num_workers(self.device_name, self._world_size)
        try:
            count = int(num_workers)
        except ValueError:
            count = -1
        if count < 0:
            raise UserError(
                f"num_workers must be a whole number >= 0 (0: no worker processes), got {num_workers!r}"
            )
        return count

    @classmethod
    def check_extra_args(cls, args: dict[str, str]) -> None:
        """Refuse bad values of the model-specific --model-args (`extra_args`) when a run is planned,
        before loading; `accept_extra_args` parses them the same way when the model loads."""

    def accept_extra_args(self, extra: dict[str, Any]) -> None:
        """Model-specific --model-args (a subclass takes its own out of `extra` first); the rest are unknown."""
        if extra:
            known = known_model_args(type(self))  # the same list `harness run` checks when it plans
            raise UserError(
                f"unknown --model-args for {self.spec.name}: {', '.join(sorted(extra))}. "
                f"Known: {', '.join(known)}"
            )

    def check_environment(self) -> None:
        """Refuse before loading when the model cannot run here (remote-code models check their opt-in)."""

    def set_protocol(self, protocol: str) -> None:
        """The evaluation protocol (harness.core.protocols) the prompts and generation follow."""
        self.protocol = check_protocol(str(protocol))
        self.foci: FociRecipe | None = self.spec.foci if self.protocol == "foci" else None
        if self.protocol == "foci" and self.foci is None:
            raise UserError(
                f"--protocol foci: {self.spec.name} is not one of the paper's models, so FOCI-Benchmark "
                "never evaluated it; use --protocol harness"
            )
        if self.protocol == "vlmclassifier" and self.chat_interface:
            raise UserError(
                f"--protocol vlmclassifier opens the assistant's turn with its trigger, but {self.spec.name} "
                "answers through its own model.chat; use --protocol harness"
            )

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
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
        )

    def _from_pretrained(self, loader, path: str | None = None, **kwargs):
        path = path or self.pretrained
        try:
            return loader.from_pretrained(
                path, revision=self.revision, trust_remote_code=self.trust_remote_code, **kwargs
            )
        except OSError as error:
            if Path(path).exists():
                raise UserError(
                    f"pretrained={path}: cannot load a checkpoint from this folder ({error})"
                ) from error
            raise UserError(hub_unavailable_message(path)) from error

    def load_processor(self):
        from transformers import AutoProcessor

        return self._from_pretrained(AutoProcessor)

    def model_loader(self):
        """The class whose from_pretrained loads the model."""
        import transformers

        return getattr(transformers, self.model_class)

    def load_model(self, quantisation, path: str | None = None):
        kwargs: dict[str, Any] = {dtype_keyword(): self.torch_dtype}
        if quantisation is not None:
            kwargs["quantization_config"] = quantisation
            kwargs["device_map"] = {"": self.device_name}
        elif self.device_name == "auto":
            kwargs["device_map"] = "auto"
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        if self.use_safetensors:
            kwargs["use_safetensors"] = True
        model = self._from_pretrained(self.model_loader(), path, **kwargs)
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
        if self.prompt_template is not None:
            return self.prompt_template.format(images=self.image_token * n_images, question=question)
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prompt_for(self, question: str, n_images: int) -> str:
        """The prompt under the run's protocol: `foci`, the reference's template for this model (or
        the model's own prompt around the question with the reference's in-text prefix);
        `vlmclassifier`, the model's prompt with the trigger opening the assistant's turn; else
        `build_prompt`."""
        if self.foci is not None:
            if self.foci.template is not None:
                return self.foci.template.format(images=self.image_token * n_images, question=question)
            question = self.foci.question_prefix + question
        prompt = self.build_prompt(question, n_images)
        if self.protocol == "vlmclassifier":
            prompt += ("" if prompt[-1:].isspace() else " ") + VLMCLASSIFIER_TRIGGER
        return prompt

    def encode(self, prompts: list[str], images: list[list]) -> dict[str, torch.Tensor]:
        """Processor call for a left-padded batch; returns tensors on the model's device."""
        return self.to_device(self.process(prompts, images))

    def process(self, prompts: list[str], images: list[list]):
        """The processor call of `encode`, on the CPU (what DataLoader workers run)."""
        batch = self.processor(text=prompts, images=images, padding=True, return_tensors="pt")
        batch.pop("labels", None)  # PaliGemma's processor returns training labels too
        return batch

    def encode_answered(
        self, prompts: list[str], answers: list[str], images: list[list]
    ) -> dict[str, torch.Tensor]:
        """The batch of prompt + answer sequences that the naive path scores."""
        return self.encode([join_answer(p, a) for p, a in zip(prompts, answers)], images)

    def to_device(self, batch) -> dict[str, torch.Tensor]:
        # the device and dtype once per batch: each look-up walks the model's parameters
        device, dtype = self.device, self.model.dtype
        dtype = dtype if dtype.is_floating_point else self.torch_dtype
        out = {}
        for key, value in batch.items():
            if torch.is_tensor(value):
                value = value.to(device)
                if value.is_floating_point():
                    value = value.to(dtype)
            out[key] = value
        return out

    def positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids of a left-padded batch: each row counts from its first real token."""
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0) + self.position_offset

    def prefix_forward(self, inputs: dict[str, torch.Tensor]) -> Prefix:
        """Encodes image + prompt once, keeping the KV cache (shared-prefix scoring of decoder-only models)."""
        out = self.model(
            **inputs, position_ids=self.positions(inputs["attention_mask"]), use_cache=True, logits_to_keep=1
        )
        return Prefix(out.logits[:, -1].float(), cache_of(out), inputs["attention_mask"])

    def continuation_logits(
        self,
        prefix: Prefix,
        rows: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Logits of answer tokens fed after the cached prompt; `prefix.cache` already holds one row per answer."""
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **with_cache(prefix.cache),
        ).logits

    def stop_token_ids(self) -> list[int]:
        ids = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        extra = self.foci.stop_tokens if self.foci is not None else ()
        for token in (*self.stop_tokens, *extra):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != self.tokenizer.unk_token_id:
                ids.append(token_id)
        return ids

    def generation_options(self) -> dict[str, Any]:
        """generate() options of the protocol besides the length: FOCI's minimum length and banned tokens."""
        options: dict[str, Any] = {}
        if self.foci is not None and self.foci.min_new_tokens:
            options["min_new_tokens"] = self.foci.min_new_tokens
        if self.foci is not None and self.foci.banned_tokens:
            options["bad_words_ids"] = self.tokenizer(
                list(self.foci.banned_tokens), add_special_tokens=False
            ).input_ids
        return options

    def generation_inputs(self, batch: list[Request]) -> dict[str, torch.Tensor]:
        prompts = [self.prompt_for(r.context, len(r.images)) for r in batch]
        return self.encode(prompts, [r.images for r in batch])

    # ---- lmms-eval interface ---------------------------------------------------------------------

    def _unpack(self, requests: list[Instance]) -> list[Request]:
        """The requests, each document's images shared by its requests and decoded only when needed."""
        unpacked, sources = [], {}
        for index, request in enumerate(requests):
            context, second, doc_to_visual, doc_id, task, split = request.args
            key = (task, split, doc_id)
            if key not in sources:
                origin = VisualSource(doc_to_visual, task, split, doc_id)
                sources[key] = DocumentImages(partial(origin.load, self.task_dict), origin)
            if isinstance(second, str):
                unpacked.append(Request(index, context, sources[key], continuation=second, doc_key=key))
            else:
                unpacked.append(
                    Request(index, context, sources[key], gen_kwargs=dict(second or {}), doc_key=key)
                )
        return unpacked

    def prefetch_twin(self) -> FGVRModel:
        """A shallow copy of this wrapper with its own copy of the processor, for the prefetch thread:
        a fast tokenizer must not be used by two threads at once (it changes its padding state per call)."""
        if self.__dict__.get("_twin") is None:
            twin = copy.copy(self)
            twin.processor = copy.deepcopy(self.processor)
            twin.tokenizer = getattr(twin.processor, "tokenizer", twin.processor)
            self._twin = twin
        return self._twin

    def clean(self) -> None:
        """lmms-eval's end-of-evaluation cleanup, with one garbage collection instead of two when no
        accelerator holds references (each costs about half a second in a process with lmms-eval loaded)."""
        self._twin = None  # it shares the model: the cleanup must be able to free it
        self._workers = None  # the worker processes stop when their DataLoader is freed
        if getattr(self, "accelerator", None) is not None:
            return super().clean()
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.nn.Module):
                delattr(self, name)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def worker_encoder(self) -> FGVRModel:
        """This wrapper without its model and the run's state here: what DataLoader workers use (the
        prompt builder and the processor). Picklable, so spawned workers get a copy."""
        encoder = copy.copy(self)
        for name in list(encoder.__dict__):
            # the model and run state, and methods replaced on this instance (the response journal's
            # hooks, the prefetcher's encode): closures that a spawned worker could not receive
            if name in MODEL_STATE or callable(getattr(type(self), name, None)):
                del encoder.__dict__[name]
        return encoder

    def worker_pool(self, run_processor: bool, items: list) -> WorkerPool:
        """This rank's DataLoader workers for `items`, started on first use and kept for the evaluation
        (the documents lmms-eval gave this wrapper and the image loaders of the tasks asked so far are
        theirs; new documents or a new task's loader get new workers)."""
        pool = self.__dict__.get("_workers")
        start = self.worker_start_method or default_start_method()
        # lmms-eval fills one task_dict in place: the workers hold the documents of its tasks at their start
        settings = (
            self.num_workers,
            start,
            run_processor,
            tuple((t, id(d)) for t, d in self.task_dict.items()),
        )
        visuals = {item.source.origin.task: item.source.origin.doc_to_visual for item in items}
        if pool is not None and pool.settings == settings:
            if all(pool.visuals.get(task) == load for task, load in visuals.items()):
                return pool
            visuals = {**pool.visuals, **visuals}
        jobs = WorkerJobs(self.worker_encoder(), self.task_dict, visuals, run_processor)
        self._workers = pool = WorkerPool(jobs, self.num_workers, start)
        pool.settings, pool.held = settings, tuple(self.task_dict.values())  # held: the ids stay theirs
        return pool

    def workers_can_load(self, items: list) -> bool:
        """Whether worker processes can be given these requests' image loaders: forked ones inherit
        them; spawned ones receive each task's doc_to_visual pickled, so it must be picklable (a
        module-level function or a method of a picklable object); if not, the prefetch thread loads
        them here, with a warning. (Trying to pickle lmms-eval's loader pickles its whole task:
        tens of milliseconds, not spent for forked workers.)"""
        if (self.worker_start_method or default_start_method()) == "fork":
            return True
        functions = {item.source.origin.task: item.source.origin.doc_to_visual for item in items}.values()
        unpicklable = [f for f in functions if not picklable(f)]
        if unpicklable:
            log.warning(
                "%s: --num-workers ignored: the task's doc_to_visual %r cannot be sent to worker processes "
                "(not a module-level function); images are decoded in this process",
                self.spec.name,
                unpicklable[0],
            )
        return not unpicklable

    def _batches(self, items: list, desc: str, kind: Callable[[Any], str] | None = None) -> Iterator[list]:
        """Batches of similar context lengths, longest first, each prepared ahead by an EncodingPrefetcher
        (which serves this wrapper's `encode` while the batches run). Items of different `kind` (e.g.
        generation settings) never share a batch."""
        ordered = sorted(items, key=lambda r: -len(r.context))
        kinds: dict[str, list] = {}
        for item in ordered:
            kinds.setdefault(kind(item) if kind else "", []).append(item)
        size = self.batch_size
        chunks = [
            same[start : start + size] for same in kinds.values() for start in range(0, len(same), size)
        ]
        chunks = tqdm(chunks, desc=desc, disable=self.rank != 0)
        # the thread encodes with a twin (its own processor); workers have their own copies
        twin = self.prefetch_twin() if self.prefetch_encoding and not self.num_workers else self
        # workers run the processor where `encode` is the base class's (processor, then device)
        own_encode = type(self).encode is not FGVRModel.encode
        workers = None
        if self.num_workers and self.workers_can_load(items):
            workers = self.worker_pool(self.prefetch_encoding and not own_encode, items)
        prefetcher = EncodingPrefetcher(
            twin.encode,
            twin.prompt_for,
            self.prefetch_encoding,
            workers=workers,
            to_device=self.to_device,
            prompt_here=self.prompt_for,
        )
        # the scorer's encode and prompt_for calls find what was prepared ahead
        self.encode, self.prompt_for = prefetcher.encode, prefetcher.prompt_for
        try:
            yield from prefetcher.batches(chunks)
        finally:
            del self.encode, self.prompt_for

    def answer_batch(
        self, compute: Callable[[list], list], batch: list, failed: Callable[[Any], Any]
    ) -> list:
        """compute(batch), one answer per item; when it raises, each item is retried alone, and an item
        that raises again is answered `failed(item)` and recorded in `request_failures` (counted as an
        error by the task's scoring, never silently as a wrong answer)."""
        try:
            return compute(batch)
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as error:
            if len(batch) > 1:
                return [answer for item in batch for answer in self.answer_batch(compute, [item], failed)]
            self.request_failures.append(f"{type(error).__name__}: {error}")
            log.warning("%s: a request failed (%s: %s)", self.spec.name, type(error).__name__, error)
            return [failed(batch[0])]

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """(negative log-likelihood, is_greedy) per request: lmms-eval's multiple_choice takes the argmin.

        With `shared_prefix` (the default) the options of one question are scored from one encoding
        of its image and prompt; otherwise every (prompt + option) is scored on its own, the reference.
        lmms-eval 0.7.3 passes responses through `unwrap_generation_output`, which turns a bare tuple
        into its string form; wrapping the pair in GenerationResult keeps it intact. A request that
        fails is answered with a NaN likelihood (harness.core.requests).
        """
        results: dict[int, Score] = {}
        unpacked = self._unpack(requests)
        failed_score = (-FAILED_NLL, False)
        if self.shared_prefix:
            for batch in self._batches(group_options(unpacked), "Scoring questions"):
                answers = self.answer_batch(
                    self.scorer.shared, batch, lambda g: [failed_score] * len(g.indices)
                )
                for group, scores in zip(batch, answers):
                    results.update(zip(group.indices, scores))
        else:
            for batch in self._batches(unpacked, "Scoring options"):
                results.update(
                    zip(
                        (r.index for r in batch),
                        self.answer_batch(self._score_naive, batch, lambda r: failed_score),
                    )
                )
        return [GenerationResult(text=(-results[i][0], results[i][1])) for i in range(len(requests))]

    def _score_naive(self, batch: list[Request]) -> list[Score]:
        prompts = [self.prompt_for(r.context, len(r.images)) for r in batch]
        return self.scorer.naive(prompts, [r.continuation for r in batch], [r.images for r in batch])

    def generate_until(self, requests: list[Instance]) -> list[str]:
        results: dict[int, str] = {}
        for batch in self._batches(self._unpack(requests), "Generating", generation_settings):
            for request, text in zip(
                batch, self.answer_batch(self.generate_batch, batch, lambda r: FAILED_GENERATION)
            ):
                results[request.index] = text
        if self.thinking_blocks:
            print(
                f"{self.spec.name}: stripped {self.thinking_blocks} <think> blocks from generated answers "
                "before parsing",
                file=sys.stderr,
            )
        return [results[i] for i in range(len(requests))]

    def generate_batch(self, batch: list[Request]) -> list[str]:
        # one batch, one set of settings: `_batches` keeps requests of other settings apart
        gen_kwargs = batch[0].gen_kwargs or {}
        until = [s for s in gen_kwargs.get("until") or [] if s]
        inputs = self.generation_inputs(batch)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.new_token_budget(gen_kwargs),
                do_sample=False,
                eos_token_id=self.stop_token_ids(),
                pad_token_id=self.tokenizer.pad_token_id,
                **self.generation_options(),
            )
        if self.generate_returns_prompt:
            output = output[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        return [self.cut_at_stop(self.strip_thinking(text), until) for text in texts]

    def new_token_budget(self, gen_kwargs: dict) -> int:
        """How many tokens to generate: the protocol's (FOCI's per model, VLMClassifier's 1,024), else
        the task's max_new_tokens, else the model's."""
        if self.foci is not None:
            return self.foci.max_new_tokens
        if self.protocol == "vlmclassifier":
            return VLMCLASSIFIER_MAX_NEW_TOKENS
        return int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))

    def strip_thinking(self, text: str) -> str:
        """The answer without its <think>...</think> blocks (an unclosed one runs to the end), which
        are counted in `thinking_blocks` and never reach the task's answer parser."""
        answer, n = THINKING.subn("", text)
        self.thinking_blocks += n
        return answer

    @staticmethod
    def cut_at_stop(text: str, until: Sequence[str]) -> str:
        for stop in until:
            text = text.split(stop, 1)[0]
        return text.strip()

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            f"{self.spec.display_name}: multi-round generation is not used by FGVR tasks"
        )

    # ---- representation features (`harness probe repr`) -------------------------------------------

    def features(self, questions: list[str], images: list[list]) -> dict[str, torch.Tensor]:
        """Last-layer hidden states of the language model for image prompts (the model's own prompt
        around each question): {"last": last token, "avg": token mean}, one row per prompt."""
        from models.features.hidden_states import pooled_hidden_states

        prompts = [self.build_prompt(q, len(i)) for q, i in zip(questions, images)]
        return pooled_hidden_states(self, self.encode(prompts, images))

    def text_features(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The same for plain texts (category names, descriptions), tokenised without a prompt."""
        from models.features.hidden_states import text_hidden_states

        return text_hidden_states(self, texts)
