"""Text-only LLM chat backends, chosen by a spec string: the LLM steps of training-data construction.

- `hf:PATH_OR_ID`: a local transformers causal LM with a chat template, loaded once, prompts rendered
  with its chat template and generated greedily in left-padded batches.
- `openai:BASE_URL#MODEL`: any OpenAI-compatible server (vLLM, SGLang, `transformers serve`, a hosted
  API) through `POST {BASE_URL}/v1/chat/completions`. The API key is read from the environment
  variable `FGVR_LLM_API_KEY`, else `OPENAI_API_KEY` (none is sent when both are unset, as local
  servers expect); `api_key_env=NAME` names another one. Requests run on a bounded pool of threads
  (`concurrency`, default 8) and are retried with exponential backoff on 429, 5xx and dropped
  connections (`retries`, default 4). `answer` asks a served vision-language model about images.

Both reply greedily, one reply per prompt, in order. Authentication failures, unknown model names and
unreachable endpoints raise `UserError` naming the endpoint and the model.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from harness.core.errors import UserError

API_KEY_ENVS = ("FGVR_LLM_API_KEY", "OPENAI_API_KEY")
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ChatBackend(Protocol):
    spec: str

    def complete(self, prompts: Sequence[str], *, max_new_tokens: int = 256) -> list[str]:
        """Greedy replies to single-turn user prompts, one per prompt, in order."""
        ...


def load_chat_backend(spec: str, **options) -> ChatBackend:
    """The backend a spec names: `hf:PATH_OR_ID` or `openai:BASE_URL#MODEL` (see the module doc)."""
    kind, rest = check_chat_spec(spec)
    return BACKENDS[kind](rest, **options)


def check_chat_spec(spec: str) -> tuple[str, str]:
    """(kind, rest) of a well-formed spec, checked without loading or connecting to anything."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest or kind not in BACKENDS:
        raise UserError(
            f"LLM backend spec {spec!r} is not understood: use 'hf:PATH_OR_ID' (a local transformers chat "
            "model) or 'openai:BASE_URL#MODEL' (an OpenAI-compatible server, e.g. "
            "'openai:http://127.0.0.1:8000#meta-llama/Llama-3.1-8B-Instruct')"
        )
    if kind == "openai":
        _split_target(rest)
    return kind, rest


def _split_target(target: str) -> tuple[str, str]:
    base_url, sep, model = target.partition("#")
    if not sep or not model or not base_url.startswith(("http://", "https://")):
        raise UserError(
            f"LLM backend 'openai:{target}': write 'openai:BASE_URL#MODEL', e.g. "
            "'openai:http://127.0.0.1:8000#Qwen/Qwen2.5-7B-Instruct'"
        )
    return base_url, model


class HFChatBackend:
    """A local transformers chat model; `batch_size`, `device` and `dtype` are options."""

    def __init__(
        self, path_or_id: str, *, batch_size: int = 8, device: str | None = None, dtype: str = "auto"
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = f"hf:{path_or_id}"
        self.batch_size = batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path_or_id, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=dtype)
        except (OSError, ValueError) as error:
            raise UserError(
                f"LLM {self.spec}: cannot load a transformers causal LM from {path_or_id!r}: {error}"
            ) from error
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(
                f"LLM {self.spec}: the tokenizer has no chat template; use an instruction-tuned model"
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()

    def complete(self, prompts: Sequence[str], *, max_new_tokens: int = 256) -> list[str]:
        replies: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            replies += self._complete_batch(prompts[start : start + self.batch_size], max_new_tokens)
        return replies

    def _complete_batch(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        import torch

        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            for prompt in prompts
        ]
        # The chat template writes BOS itself where the model wants one.
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class OpenAIChatBackend:
    """An OpenAI-compatible chat-completions endpoint, called from a bounded pool of threads."""

    def __init__(
        self,
        target: str,
        *,
        concurrency: int = 8,
        retries: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float = 300.0,
        api_key_env: str | None = None,
    ):
        import httpx

        base_url, model = _split_target(target)
        self.spec = f"openai:{target}"
        self.base_url, self.model = base_url.rstrip("/").removesuffix("/v1"), model
        self.concurrency, self.retries, self.backoff_s = concurrency, retries, backoff_s
        headers = {}
        key = _api_key(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._checked_model = threading.Lock()

    def complete(self, prompts: Sequence[str], *, max_new_tokens: int = 256) -> list[str]:
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda prompt: self._complete_one(prompt, max_new_tokens), prompts))

    @property
    def batch_size(self) -> int:
        """Requests handed to `complete`/`answer` at a time by callers that batch (one per thread)."""
        return self.concurrency

    def answer(self, questions: Sequence[tuple[Path, str]], *, max_new_tokens: int = 64) -> list[str]:
        """Greedy answers of a vision-language model served here, one (image file, question) each: the
        image goes inline as a base64 data URL before the question, as OpenAI's vision messages do."""
        if not questions:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(questions))) as pool:
            return list(pool.map(lambda q: self._complete_one(q[1], max_new_tokens, image=q[0]), questions))

    def _complete_one(self, prompt: str, max_new_tokens: int, image: Path | None = None) -> str:
        content: str | list = prompt
        if image is not None:
            content = [
                {"type": "image_url", "image_url": {"url": _data_url(image)}},
                {"type": "text", "text": prompt},
            ]
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_new_tokens,
            "temperature": 0,
        }
        response = self._post_with_retries(body)
        try:
            return response.json()["choices"][0]["message"]["content"].strip()
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise UserError(
                f"{self._where}: the reply is not a chat completion: {response.text[:300]!r}"
            ) from None

    def _post_with_retries(self, body: dict):
        import httpx

        for attempt in range(self.retries + 1):
            last_try = attempt == self.retries
            try:
                response = self._client.post("/v1/chat/completions", json=body)
            except httpx.TransportError as error:
                if last_try:
                    raise UserError(
                        f"{self._where}: endpoint unreachable ({error}); is the server running?"
                    ) from error
            else:
                if response.status_code < 400:
                    return response
                self._raise_if_permanent(response, last_try)
            time.sleep(self.backoff_s * 2**attempt * (1 + random.random() / 2))
        raise AssertionError("unreachable")

    def _raise_if_permanent(self, response, last_try: bool) -> None:
        status = response.status_code
        if status in (401, 403):
            raise UserError(
                f"{self._where}: authentication failed (HTTP {status}); set the API key in "
                f"{' or '.join(API_KEY_ENVS)} (or name another variable with api_key_env)"
            )
        if status in (400, 404) or status >= 500:
            self._check_model_is_served()
        if status not in RETRY_STATUS or last_try:
            raise UserError(f"{self._where}: HTTP {status}: {response.text[:300]}")

    def _check_model_is_served(self) -> None:
        """Servers answer an unknown model with 400, 404 or 500; their model list tells whether that was it."""
        with self._checked_model:
            try:
                listing = self._client.get("/v1/models")
                served = (
                    [entry["id"] for entry in listing.json()["data"]] if listing.status_code == 200 else None
                )
            except Exception:  # an endpoint without a model list: let the status decide
                served = None
            if served is not None and self.model not in served:
                raise UserError(
                    f"{self._where}: the server does not serve model {self.model!r} "
                    f"(it lists: {', '.join(served) or 'nothing'}); fix the part after '#' in the spec"
                )

    @property
    def _where(self) -> str:
        return f"LLM endpoint {self.base_url} (model {self.model!r})"


def _data_url(image: Path) -> str:
    mime = mimetypes.guess_type(str(image))[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(Path(image).read_bytes()).decode()}"


def _api_key(env_name: str | None) -> str | None:
    names = (env_name,) if env_name else API_KEY_ENVS
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


BACKENDS = {"hf": HFChatBackend, "openai": OpenAIChatBackend}
