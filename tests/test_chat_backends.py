"""LLM chat backends (harness/llm/chat.py): a local transformers model, and a real `transformers serve`
endpoint on 127.0.0.1 serving the same tiny folder offline."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from harness.core.errors import UserError
from harness.llm.chat import load_chat_backend
from models.fixtures.serve import free_port, transformers_serve

PROMPTS = ["What are useful attributes for distinguishing bird species?", "hello", "Describe the wings."]


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory) -> Path:
    from models.fixtures.tiny_chat_lm import build_tiny_chat_lm

    return build_tiny_chat_lm(tmp_path_factory.mktemp("chat") / "tiny-chat", seed=0)


@pytest.fixture(scope="module")
def served(tiny_chat):
    """`transformers serve` on a free local port, the tiny folder preloaded; yields the base URL."""
    with transformers_serve(tiny_chat) as url:
        yield url


def direct_greedy(folder: Path, prompt: str, max_new_tokens: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_hf_backend_batches_equal_one_by_one_greedy(tiny_chat):
    backend = load_chat_backend(f"hf:{tiny_chat}", batch_size=2)
    replies = backend.complete(PROMPTS, max_new_tokens=6)
    assert replies == [direct_greedy(tiny_chat, prompt, 6) for prompt in PROMPTS]
    assert all(replies)


@pytest.mark.server
def test_served_endpoint_answers_like_the_local_model(tiny_chat, served):
    backend = load_chat_backend(f"openai:{served}#{tiny_chat}", concurrency=3)
    local = load_chat_backend(f"hf:{tiny_chat}")
    assert backend.complete(PROMPTS, max_new_tokens=6) == local.complete(PROMPTS, max_new_tokens=6)


@pytest.mark.server
def test_served_endpoint_names_a_wrong_model(tiny_chat, served):
    backend = load_chat_backend(f"openai:{served}#{tiny_chat}-typo", retries=1, backoff_s=0.01)
    with pytest.raises(UserError, match=r"does not serve model .*-typo"):
        backend.complete(["hi"], max_new_tokens=2)


def test_unreachable_endpoint_is_a_user_error():
    backend = load_chat_backend(f"openai:http://127.0.0.1:{free_port()}#m", retries=1, backoff_s=0.01)
    with pytest.raises(UserError, match=r"127\.0\.0\.1.*unreachable"):
        backend.complete(["hi"])


@pytest.mark.parametrize("spec", ["gpt4", "openai:localhost:8000", "openai:http://h:1", "hf:"])
def test_bad_specs(spec):
    with pytest.raises(UserError, match="spec|BASE_URL#MODEL"):
        load_chat_backend(spec)


class FlakyServer(ThreadingHTTPServer):
    """A real HTTP server answering 429 `fail_first` times, then a chat completion; records the auth header."""

    def __init__(self, fail_first: int, status: int = 429):
        self.fail_first, self.status, self.calls, self.auth = fail_first, status, 0, []
        super().__init__(("127.0.0.1", 0), FlakyHandler)


class FlakyHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        server: FlakyServer = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.calls += 1
        server.auth.append(self.headers.get("Authorization"))
        if server.calls <= server.fail_first:
            self.send_response(server.status)
            self.end_headers()
            return
        payload = json.dumps(
            {"choices": [{"message": {"content": f" echo {body['messages'][0]['content']}"}}]}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def flaky(request):
    server = FlakyServer(*request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.mark.parametrize("flaky", [(2, 429)], indirect=True)
def test_retries_with_backoff_on_429_and_sends_the_key(flaky, monkeypatch):
    monkeypatch.setenv("FGVR_LLM_API_KEY", "sk-test")
    backend = load_chat_backend(
        f"openai:http://127.0.0.1:{flaky.server_port}#m", concurrency=1, backoff_s=0.01
    )
    assert backend.complete(["a"]) == ["echo a"]
    assert flaky.calls == 3 and flaky.auth == ["Bearer sk-test"] * 3


@pytest.mark.parametrize("flaky", [(99, 401)], indirect=True)
def test_authentication_failure_names_the_variable(flaky):
    backend = load_chat_backend(f"openai:http://127.0.0.1:{flaky.server_port}#m", api_key_env="MY_KEY")
    with pytest.raises(UserError, match="authentication failed .*FGVR_LLM_API_KEY"):
        backend.complete(["a"])
    assert flaky.calls == 1
