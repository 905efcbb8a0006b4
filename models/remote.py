"""Models whose modelling code ships with the checkpoint (`trust_remote_code`).

Their published code targets older transformers releases and breaks on 5.x in known ways (cache
API, removed helpers), so loading one needs two things:

- an explicit opt-in, `trust_remote_code=true` in --model-args (that code runs on this machine);
- a transformers release inside the range the wrapper declares (`ModelSpec.transformers`);
  outside it the run stops with exit code 2 and says how to build a matching environment
  (models/README-remote-code.md).

A checkpoint folder may declare the range its own code was written for, as `"fgvr_transformers"`
in its config.json; that range then replaces the wrapper's. Hub checkpoints carry no such key, so
for them the wrapper's range always applies; the stand-ins in tests/remote_code/ (written for
transformers 5) use it to run the real loading path in the test suite.

These models take one request at a time, through their own interface (`model.chat`, their own
processors), and score answers with the naive path only.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch

from harness.core.errors import UserError
from models.base import FGVRModel
from models.registry import ModelSpec
from models.requests import Request
from models.scoring import AnswerScorer, Score

CHECKPOINT_RANGE_KEY = "fgvr_transformers"
ENVIRONMENT_DOC = "models/README-remote-code.md"


def declared_range(pretrained: str) -> str | None:
    """The transformers range a local checkpoint folder declares for its own code, if any."""
    try:
        return json.loads((Path(pretrained).expanduser() / "config.json").read_text()).get(
            CHECKPOINT_RANGE_KEY
        )
    except (OSError, ValueError):
        return None


def required_transformers(spec: ModelSpec, pretrained: str) -> str:
    return declared_range(pretrained) or spec.transformers


def check_transformers(spec: ModelSpec, pretrained: str, installed: str | None = None) -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    if installed is None:
        import transformers

        installed = transformers.__version__
    required = required_transformers(spec, pretrained)
    if Version(installed) not in SpecifierSet(required):
        raise UserError(
            f"{spec.display_name} ({spec.name}) runs its own modelling code, written for transformers {required}; "
            f"this environment has transformers {installed}. Evaluate it from a matching environment: "
            f"python3.11 -m venv .venv-remote, install transformers==4.40.2 and the harness's dependencies with "
            f"-c models/remote-code-constraints.txt, then `pip install --no-deps -e .`, and run the same command "
            f"from .venv-remote (the steps are in {ENVIRONMENT_DOC})."
        )


def preflight(spec: ModelSpec, model_args: dict[str, str], pretrained: str) -> None:
    """The checks a remote-code model makes before loading, for callers that want them up front."""
    if not spec.remote_code:
        return
    if str(model_args.get("trust_remote_code", "")).lower() not in ("1", "true", "yes", "on"):
        raise UserError(
            f"{spec.display_name} ({spec.name}) runs modelling code that comes with its checkpoint "
            f"({pretrained}); opt in with --model-args trust_remote_code=true once you trust that code"
        )
    check_transformers(spec, pretrained)


class RequestScorer(AnswerScorer):
    """Each (prompt, answer) scored by the wrapper's own `score_answer`; no shared prefix."""

    def naive(self, prompts, answers, images):
        return [self.wrapper.score_answer(p, a, i) for p, a, i in zip(prompts, answers, images)]

    def shared(self, groups):
        return [
            [
                self.wrapper.score_answer(self.wrapper.prompt_for(g.context, len(g.images)), a, g.images)
                for a in g.continuations
            ]
            for g in groups
        ]


class RemoteCodeModel(FGVRModel):
    scorer_class = RequestScorer
    loader: ClassVar[str] = "AutoModelForCausalLM"
    prefetch_encoding = False  # model.chat / score_answer take images, not encoded batches: decode ahead only

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shared_prefix = False

    @property
    def batch_size(self) -> int:
        return 1  # the published interfaces take one conversation at a time

    def check_environment(self) -> None:
        preflight(self.spec, {"trust_remote_code": str(self.trust_remote_code)}, self.pretrained)

    def checkpoint_config(self) -> dict:
        """The checkpoint's config.json as written (its model type may be unknown to transformers)."""
        from transformers.utils import cached_file

        path = cached_file(self.pretrained, "config.json", revision=self.revision)
        return json.loads(Path(path).read_text())

    def load_processor(self):
        from transformers import AutoTokenizer

        return self._from_pretrained(AutoTokenizer)

    def model_loader(self):
        import transformers

        return getattr(transformers, self.loader)

    @contextmanager
    def image_files(self, images: list) -> Iterator[list[str]]:
        """The images saved as PNG files, for interfaces that open pictures by path."""
        with tempfile.TemporaryDirectory(prefix="fgvr-images-") as folder:
            paths = []
            for number, image in enumerate(images, 1):
                path = str(Path(folder) / f"{number}.png")
                image.convert("RGB").save(path)
                paths.append(path)
            yield paths

    def generate_batch(self, batch: list[Request]) -> list[str]:
        texts = []
        for request in batch:
            gen_kwargs = request.gen_kwargs or {}
            until = [s for s in gen_kwargs.get("until") or [] if s]
            with torch.inference_mode():
                text = self.generate_one(request.context, request.images, self.new_token_budget(gen_kwargs))
            texts.append(self.cut_at_stop(text, until))
        return texts

    # ---- what each remote-code model file supplies -------------------------------------------------

    def generate_one(self, question: str, images: list, max_new_tokens: int) -> str:
        raise NotImplementedError

    def score_answer(self, prompt: str, answer: str, images: list) -> Score:
        raise NotImplementedError
