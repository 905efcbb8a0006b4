"""Visual question answering, chosen by a spec:
- `model:NAME,pretrained=PATH[,key=value...]`: one of our registered MLLM wrappers (models/), with any
  `harness run --model-args` (dtype, device, batch_size, load_in_4bit...); answers come from the
  wrapper's own generation path (prompt template, processor, left-padded batches, greedy decoding),
  as in evaluation;
- `openai:BASE_URL#MODEL`: a vision-language model behind an OpenAI-compatible server (vLLM, SGLang,
  `transformers serve`), images sent inline (harness/llm/chat.py)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from harness.config import parse_model_args
from harness.core.errors import UserError


def check_vqa_spec(spec: str) -> None:
    """A malformed spec or an unknown model name is an error before anything loads."""
    if spec.startswith("openai:"):
        from harness.llm.chat import check_chat_spec

        check_chat_spec(spec)
    else:
        parse_vqa_spec(spec)


def load_vqa_backend(spec: str, *, batch_size: int = 8, concurrency: int = 8):
    """An object with `spec`, `batch_size` and `answer([(image, question), ...], max_new_tokens=)`."""
    if spec.startswith("openai:"):
        from harness.llm.chat import load_chat_backend

        return load_chat_backend(spec, concurrency=concurrency)
    return WrapperVQA(spec, batch_size=batch_size)


def parse_vqa_spec(spec: str):
    """(the registered ModelSpec, its --model-args) of a `model:NAME,key=value,...` spec; loads nothing."""
    from models.registry import get_model_spec

    name, _, args_text = spec.removeprefix("model:").partition(",")
    if not spec.startswith("model:") or not name:
        raise UserError(
            f"--vqa {spec!r}: expected 'model:NAME,pretrained=PATH[,key=value...]' with NAME a registered "
            "model (harness list models), e.g. 'model:blip2_flant5,pretrained=/models/blip2-flan-t5-xl', "
            "or 'openai:BASE_URL#MODEL' for a vision-language model on an OpenAI-compatible server"
        )
    return get_model_spec(name), parse_model_args(args_text)


class WrapperVQA:
    """A registered MLLM wrapper answering one question about one image per request."""

    def __init__(self, spec: str, *, batch_size: int = 8):
        model_spec, model_args = parse_vqa_spec(spec)
        args = {"batch_size": str(batch_size), **model_args}
        self.spec = spec
        try:
            self.wrapper = model_spec.load_wrapper()(**args)
        except UserError as error:
            raise UserError(f"--vqa {spec}: {error}") from error
        except Exception as error:  # noqa: BLE001 - any loading failure of a third-party model
            raise UserError(
                f"--vqa {spec}: the model cannot load ({type(error).__name__}: {error})"
            ) from error

    @property
    def batch_size(self) -> int:
        return self.wrapper.batch_size

    def answer(self, questions: Sequence[tuple[Path, str]], *, max_new_tokens: int = 64) -> list[str]:
        from models.requests import DocumentImages, Request

        requests = [
            Request(
                index,
                question,
                DocumentImages(partial(_load_rgb, image_path)),
                gen_kwargs={"max_new_tokens": max_new_tokens},
            )
            for index, (image_path, question) in enumerate(questions)
        ]
        return self.wrapper.generate_batch(requests)


def _load_rgb(path: Path) -> list:
    """The one image of a VQA request, decoded when the wrapper (or its prefetch thread) asks for it."""
    from PIL import Image

    with Image.open(path) as image:
        return [image.convert("RGB")]
