"""Checkpoint submissions: everything checked before a job is queued, each refusal with its reason.

Checked here (no database): the base architecture, the options, the name format, that a local
path resolves (symlinks included) inside the submission root, that the weights are safetensors and
nothing pickled sits beside them (pickle files are never opened), that the config is readable, that
code the checkpoint would run is allow-listed, and the size limit. Duplicates and the per-submitter
rate limit need the queue and are checked by `SubmissionQueue.submit` in the same transaction as
the insert.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.config import SCORINGS
from harness.core.errors import UserError, did_you_mean
from harness.core.paths import harness_home, looks_like_local_path
from leaderboard import spec

WEIGHTS = ("full", "adapter")
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
MAX_SAFETENSORS_HEADER = 100 * 2**20

ROOT_ENV = "HARNESS_SUBMISSION_ROOT"
MAX_GB_ENV = "HARNESS_SUBMISSION_MAX_GB"
PER_DAY_ENV = "HARNESS_SUBMISSIONS_PER_DAY"
ALLOWLIST_ENV = "HARNESS_REMOTE_CODE_ALLOWLIST"


class SubmissionRefused(UserError):
    """A submission that is not queued; `check` names the rule it broke."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class SubmissionPolicy:
    root: Path  # local checkpoints must resolve inside it
    max_bytes: int = 40 * 2**30
    per_day: int = 5  # submissions per submitter in any 24 hours
    remote_code_allowlist: frozenset[str] = frozenset()  # sha256 of reviewed code files

    @classmethod
    def from_env(cls) -> SubmissionPolicy:
        allow = os.environ.get(ALLOWLIST_ENV, "")
        return cls(
            root=Path(os.environ.get(ROOT_ENV) or harness_home() / "submissions").expanduser(),
            max_bytes=int(float(os.environ.get(MAX_GB_ENV, "40")) * 2**30),
            per_day=int(os.environ.get(PER_DAY_ENV, "5")),
            remote_code_allowlist=frozenset(part.strip().lower() for part in allow.split(",") if part.strip()),
        )


@dataclass(frozen=True)
class SubmissionRequest:
    model: str  # a local folder or a hub id
    base: str  # registry architecture it fine-tunes, e.g. "idefics2"
    revision: str | None = None
    weights: str = "full"
    precision: str = "auto"
    tasks: tuple[str, ...] = spec.TASK_KEYS
    scoring: str = "generate"
    submitter: str = "anonymous"


@dataclass(frozen=True)
class ValidatedSubmission:
    model_name: str
    checkpoint: str  # resolved local path or hub id
    is_local: bool
    base: str
    revision: str  # hub revision, or a fingerprint of the local folder's content
    weights: str
    precision: str
    tasks: tuple[str, ...]
    scoring: str
    submitter: str
    size_bytes: int

    @property
    def dedupe_key(self) -> str:
        """Same checkpoint, revision and precision: the same submission."""
        return hashlib.sha256(f"{self.checkpoint}\0{self.revision}\0{self.precision}".encode()).hexdigest()


class CheckpointFiles(Protocol):
    """Read access to a checkpoint's files, local or on the hub."""

    where: str

    def files(self) -> dict[str, int]: ...  # relative path -> size in bytes

    def read_text(self, name: str) -> str: ...

    def safetensors_header(self, name: str) -> dict[str, Any]: ...


@dataclass
class LocalCheckpoint:
    folder: Path  # already resolved
    root: Path  # already resolved
    where: str = field(init=False)

    def __post_init__(self) -> None:
        self.where = str(self.folder)

    def files(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for dirpath, dirnames, filenames in os.walk(self.folder):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                target = path.resolve()
                if not target.is_relative_to(self.root):
                    raise SubmissionRefused("root", f"{path} links to {target}, outside the submission root "
                                                    f"{self.root}; copy the file into the checkpoint folder")
                if name in filenames:
                    found[path.relative_to(self.folder).as_posix()] = target.stat().st_size
        return found

    def read_text(self, name: str) -> str:
        return (self.folder / name).read_text()

    def safetensors_header(self, name: str) -> dict[str, Any]:
        with open(self.folder / name, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ValueError("shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_SAFETENSORS_HEADER:
                raise ValueError(f"header length {length} is not plausible")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        return header

    def fingerprint(self, files: dict[str, int]) -> str:
        """A content fingerprint without reading gigabytes: names, sizes and 1 MiB from the start, middle
        and end of every file. Different fine-tunes of one architecture differ in all of those chunks."""
        digest = hashlib.sha256()
        chunk = 2**20
        for name, size in sorted(files.items()):
            digest.update(f"{name}\0{size}\0".encode())
            with open(self.folder / name, "rb") as handle:
                for offset in sorted({0, max(0, size // 2 - chunk // 2), max(0, size - chunk)}):
                    handle.seek(offset)
                    digest.update(handle.read(chunk))
        return "local-" + digest.hexdigest()[:16]


@dataclass
class HubCheckpoint:
    repo: str
    revision: str | None
    where: str = field(init=False)

    def __post_init__(self) -> None:
        self.where = f"{self.repo}@{self.revision or 'main'}"

    def _api(self):
        from huggingface_hub import HfApi

        return HfApi()

    def files(self) -> dict[str, int]:
        try:
            info = self._api().model_info(self.repo, revision=self.revision, files_metadata=True)
        except Exception as exc:  # offline, unknown repo, gated repo: all refusals with the hub's reason
            raise SubmissionRefused("hub", f"cannot read {self.where} on the Hugging Face hub: {exc}") from exc
        return {sibling.rfilename: sibling.size or 0 for sibling in info.siblings}

    def read_text(self, name: str) -> str:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(self.repo, name, revision=self.revision)).read_text()

    def safetensors_header(self, name: str) -> dict[str, Any]:
        from huggingface_hub import get_safetensors_metadata

        get_safetensors_metadata(self.repo, revision=self.revision)  # raises on a file that is not safetensors
        return {}


CheckpointOpener = Callable[[str, str | None], CheckpointFiles]


def reserved_names() -> set[str]:
    """Names a submission may not take: registry models and the paper's rows."""
    from leaderboard.store import reported_rows
    from models.registry import MODELS

    return set(MODELS) | {row["model"] for row in reported_rows()}


def validate_submission(request: SubmissionRequest, policy: SubmissionPolicy,
                        open_hub: CheckpointOpener = HubCheckpoint) -> ValidatedSubmission:
    """Every check that needs no database; raise SubmissionRefused with the reason for the first failure."""
    _check_options(request)
    checkpoint, name, is_local = _locate(request, policy, open_hub)
    files = checkpoint.files()
    _check_weights(checkpoint, files, request.weights)
    _check_config(checkpoint, files, request.weights, policy)
    size = sum(files.values())
    if size > policy.max_bytes:
        raise SubmissionRefused("size", f"{checkpoint.where} holds {_human(size)}; the limit is "
                                        f"{_human(policy.max_bytes)} ({MAX_GB_ENV})")
    revision = request.revision or "main"
    if is_local:
        revision = checkpoint.fingerprint(files)
    return ValidatedSubmission(
        model_name=name, checkpoint=checkpoint.where if is_local else request.model, is_local=is_local,
        base=request.base, revision=revision, weights=request.weights, precision=request.precision,
        tasks=tuple(request.tasks), scoring=request.scoring, submitter=request.submitter, size_bytes=size,
    )


def _human(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _check_options(request: SubmissionRequest) -> None:
    from models.registry import MODELS

    if request.base not in MODELS:
        raise SubmissionRefused("base", f"unknown base architecture '{request.base}'.{did_you_mean(request.base, MODELS)}"
                                        f" Known bases: {', '.join(sorted(MODELS))}")
    for option, value, allowed in (("weights", request.weights, WEIGHTS), ("precision", request.precision, PRECISIONS),
                                   ("scoring", request.scoring, SCORINGS)):
        if value not in allowed:
            raise SubmissionRefused("options", f"--{option} must be one of {', '.join(allowed)}, got '{value}'")
    if not request.tasks:
        raise SubmissionRefused("options", "choose at least one task")
    try:
        spec.validate_tasks(request.tasks)
    except UserError as exc:
        raise SubmissionRefused("options", str(exc)) from None
    if request.revision is not None and not REVISION.match(request.revision):
        raise SubmissionRefused("name", f"--revision '{request.revision}' is not a branch, tag or commit name")
    if not request.submitter.strip():
        raise SubmissionRefused("options", "the submitter is empty")


def _locate(request: SubmissionRequest, policy: SubmissionPolicy,
            open_hub: CheckpointOpener) -> tuple[CheckpointFiles, str, bool]:
    model = request.model.strip()
    if looks_like_local_path(model):
        folder = _inside_root(Path(model).expanduser(), policy.root)
        name = folder.name
        if not LOCAL_NAME.match(name):
            raise SubmissionRefused("name", f"folder name '{name}' is not a model name: use letters, digits and . _ + -"
                                            " (at most 128 characters, starting with a letter or digit)")
        checkpoint: CheckpointFiles = LocalCheckpoint(folder, policy.root.resolve())
    else:
        if not HUB_ID.match(model):
            raise SubmissionRefused("name", f"'{model}' is neither a local folder nor a hub id of the form "
                                            "owner/name (letters, digits, . _ -)")
        name = model
        checkpoint = open_hub(model, request.revision)
    if name in reserved_names():
        raise SubmissionRefused("name", f"the name '{name}' belongs to a registry model or a paper row; "
                                        "rename the folder (or repository) so the results are not mixed up")
    return checkpoint, name, looks_like_local_path(model)


def _inside_root(path: Path, root: Path) -> Path:
    root = root.expanduser()
    if not root.is_dir():
        raise SubmissionRefused("root", f"the submission root {root} does not exist; create it or set {ROOT_ENV}")
    try:
        folder = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise SubmissionRefused("path", f"{path} does not exist") from None
    if not folder.is_relative_to(root.resolve()):
        raise SubmissionRefused("root", f"{path} resolves to {folder}, outside the submission root {root.resolve()}"
                                        f" ({ROOT_ENV}); copy the checkpoint there")
    if not folder.is_dir():
        raise SubmissionRefused("path", f"{path} is not a folder: submit the checkpoint folder")
    return folder


def _check_weights(checkpoint: CheckpointFiles, files: dict[str, int], weights: str) -> None:
    pickled = sorted(name for name in files if name.lower().endswith(PICKLE_SUFFIXES))
    if pickled:
        raise SubmissionRefused("safetensors", f"{checkpoint.where} has pickle weight files ({', '.join(pickled)}), "
                                               "which are never loaded: convert them to safetensors and remove them")
    tensors = sorted(name for name in files if name.endswith(".safetensors"))
    if weights == "adapter":
        tensors = [name for name in tensors if Path(name).name == "adapter_model.safetensors"]
    if not tensors:
        wanted = "adapter_model.safetensors" if weights == "adapter" else "*.safetensors weights"
        raise SubmissionRefused("safetensors", f"{checkpoint.where} has no {wanted}")
    for name in tensors:
        try:
            checkpoint.safetensors_header(name)
        except (OSError, ValueError) as exc:
            raise SubmissionRefused("safetensors", f"{checkpoint.where}: {name} is not a readable safetensors file "
                                                   f"({exc})") from None


def _check_config(checkpoint: CheckpointFiles, files: dict[str, int], weights: str, policy: SubmissionPolicy) -> None:
    config_name = "adapter_config.json" if weights == "adapter" else "config.json"
    if config_name not in files:
        raise SubmissionRefused("config", f"{checkpoint.where} has no {config_name}")
    try:
        config = json.loads(checkpoint.read_text(config_name))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SubmissionRefused("config", f"{checkpoint.where}: {config_name} is not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise SubmissionRefused("config", f"{checkpoint.where}: {config_name} is not a JSON object")
    if weights == "full":
        _check_remote_code(checkpoint, files, config, policy)


def _check_remote_code(checkpoint: CheckpointFiles, files: dict[str, int], config: dict[str, Any],
                       policy: SubmissionPolicy) -> None:
    """A checkpoint that ships its own model code runs the submitter's Python: only reviewed code, by hash."""
    model_type = config.get("model_type")
    auto_map = config.get("auto_map") or {}
    if not auto_map:
        if not isinstance(model_type, str) or not model_type:
            raise SubmissionRefused("config", f"{checkpoint.where}: config.json has no model_type")
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        if model_type not in CONFIG_MAPPING_NAMES:
            raise SubmissionRefused("remote_code", f"{checkpoint.where}: model_type '{model_type}' is not a "
                                                   "transformers architecture, so it would need remote code, which "
                                                   "this checkpoint does not declare (auto_map)")
        return
    references = [ref for value in auto_map.values() for ref in (value if isinstance(value, list) else [value]) if ref]
    if any("--" in str(ref) for ref in references):
        raise SubmissionRefused("remote_code", f"{checkpoint.where}: auto_map loads code from another repository "
                                               f"({', '.join(map(str, references))}), which is never allowed")
    code_files = sorted(name for name in files if name.endswith(".py"))
    digests = {name: hashlib.sha256(checkpoint.read_text(name).encode()).hexdigest() for name in code_files}
    unreviewed = {name: digest for name, digest in digests.items() if digest not in policy.remote_code_allowlist}
    if not code_files or unreviewed:
        listed = ", ".join(f"{name} sha256={digest}" for name, digest in unreviewed.items()) or "no code files"
        raise SubmissionRefused("remote_code", f"{checkpoint.where}: architecture '{model_type}' needs remote code "
                                               f"that is not allow-listed ({listed}). After reviewing the code, an "
                                               f"admin can add its sha256 to {ALLOWLIST_ENV}")
