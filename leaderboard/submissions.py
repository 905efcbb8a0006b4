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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.config import SCORINGS
from harness.core.errors import UserError, did_you_mean
from harness.core.paths import LOCAL_PATH_PREFIXES, harness_home
from leaderboard import spec

WEIGHTS = ("full", "adapter")
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
SUBMITTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")

ROOT_ENV = "HARNESS_SUBMISSION_ROOT"
MAX_GB_ENV = "HARNESS_SUBMISSION_MAX_GB"
PER_DAY_ENV = "HARNESS_SUBMISSIONS_PER_DAY"
ALLOWLIST_ENV = "HARNESS_REMOTE_CODE_ALLOWLIST"
ANONYMOUS_WEB = (
    "web-"  # submitter prefix of anonymous web submitters (web-<address>); their models go under local/web/
)
LOCAL_PREFIX = (
    "local"  # local submissions are named local/<submitter>/<folder>: never a hub id, never a registry name
)
ADAPTER_BASES = ("finedefics", "idefics2")  # the wrappers that load a LoRA adapter (run as finedefics)


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
            max_bytes=int(_env_number(MAX_GB_ENV, "40", float) * 2**30),
            per_day=_env_number(PER_DAY_ENV, "5", int),
            remote_code_allowlist=frozenset(
                part.strip().lower() for part in allow.split(",") if part.strip()
            ),
        )


def _env_number(name: str, default: str, kind: type[int] | type[float]) -> Any:
    """A non-negative number from the environment; anything else is the operator's error, named."""
    text = os.environ.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        value = -1
    if not value >= 0 or value == float("inf"):
        raise UserError(
            f"{name}={text!r} is not a non-negative {'whole ' if kind is int else ''}number; "
            f"fix or unset it (default {default})"
        )
    return value


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
    adapter_base: str | None = None  # an adapter's base: a resolved folder inside the root, or a hub id

    @property
    def dedupe_key(self) -> str:
        """Same checkpoint, revision, precision and base: the same submission."""
        key = f"{self.checkpoint}\0{self.revision}\0{self.precision}\0{self.base}"
        return hashlib.sha256(key.encode()).hexdigest()


class CheckpointFiles(Protocol):
    """Read access to a checkpoint's files, local or on the hub."""

    where: str

    def files(self) -> dict[str, int]: ...  # relative path -> size in bytes

    def read_text(self, name: str) -> str: ...

    def read_bytes(self, name: str) -> bytes: ...

    def safetensors_header(self, name: str) -> dict[str, Any]: ...


@dataclass
class LocalCheckpoint:
    folder: Path  # already resolved
    root: Path  # already resolved
    where: str = field(init=False)

    def __post_init__(self) -> None:
        self.where = self.folder.relative_to(self.root).as_posix()  # messages never show server paths

    def files(self) -> dict[str, int]:
        """Every file with its size; links may only point at files inside the root (never folders)."""
        found: dict[str, int] = {}
        for dirpath, dirnames, filenames in os.walk(self.folder):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                shown = f"{self.where}/{path.relative_to(self.folder).as_posix()}"
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise SubmissionRefused(
                        "path",
                        f"{shown} is a broken symlink or a symlink loop; remove it or "
                        "copy the file it should point at",
                    ) from None
                if not target.is_relative_to(self.root):
                    raise SubmissionRefused(
                        "root",
                        f"{shown} links outside the submission root ({ROOT_ENV}); copy "
                        "the file into the checkpoint folder",
                    )
                if name in dirnames and path.is_symlink():
                    raise SubmissionRefused(
                        "path", f"{shown} is a symlinked folder; copy its files into the checkpoint folder"
                    )
                if name in filenames:
                    found[path.relative_to(self.folder).as_posix()] = target.stat().st_size
        return found

    def read_text(self, name: str) -> str:
        return (self.folder / name).read_text(encoding="utf-8")

    def read_bytes(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def safetensors_header(self, name: str) -> dict[str, Any]:
        from leaderboard.weights import safetensors_header

        return safetensors_header(self.folder / name)

    def fingerprint(self, files: dict[str, int]) -> str:
        """The folder's content fingerprint, computed as `harness run` computes it for its summary."""
        from harness.core.identity import checkpoint_fingerprint

        return checkpoint_fingerprint(self.folder)


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
            raise SubmissionRefused(
                "hub", f"cannot read {self.where} on the Hugging Face hub: {exc}"
            ) from exc
        return {sibling.rfilename: sibling.size or 0 for sibling in info.siblings}

    def read_text(self, name: str) -> str:

        return self.read_bytes(name).decode("utf-8")

    def read_bytes(self, name: str) -> bytes:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(self.repo, name, revision=self.revision)).read_bytes()

    def safetensors_header(self, name: str) -> dict[str, Any]:
        from huggingface_hub import get_safetensors_metadata

        get_safetensors_metadata(
            self.repo, revision=self.revision
        )  # raises on a file that is not safetensors
        return {}


CheckpointOpener = Callable[[str, str | None], CheckpointFiles]


def reserved_names() -> set[str]:
    """Names a submission may not take: registry models and the paper's rows."""
    from leaderboard.store import reserved_model_names

    return reserved_model_names()


def validate_submission(
    request: SubmissionRequest, policy: SubmissionPolicy, open_hub: CheckpointOpener = HubCheckpoint
) -> ValidatedSubmission:
    """Every check that needs no database; raise SubmissionRefused with the reason for the first failure.
    Messages name local checkpoints by their path inside the root, never by a server path."""
    _check_options(request)
    checkpoint, name, is_local = _locate(request, policy, open_hub)
    try:
        files, config = _check_checkpoint(checkpoint, request.weights, request.base, policy)
        adapter_base, base_size, base_revision = None, 0, ""
        if request.weights == "adapter":
            adapter_base, base_size, base_revision = _check_adapter_base(
                config, request.base, policy, open_hub
            )
        size = sum(files.values()) + base_size
        if size > policy.max_bytes:
            raise SubmissionRefused(
                "size",
                f"{checkpoint.where} holds {_human(size)}; the limit is "
                f"{_human(policy.max_bytes)} ({MAX_GB_ENV})",
            )
        revision = request.revision or "main"
        if is_local:
            revision = checkpoint.fingerprint(files)
            if base_revision:  # the adapter and the local base it goes on, as one fingerprint
                revision = "local-" + hashlib.sha256(f"{revision}\0{base_revision}".encode()).hexdigest()[:32]
    except OSError as exc:  # unreadable files, permissions: a refusal, never a traceback
        raise SubmissionRefused(
            "path", f"{checkpoint.where}: a file cannot be read ({exc.strerror or exc})"
        ) from None
    where = str(checkpoint.folder) if isinstance(checkpoint, LocalCheckpoint) else request.model
    return ValidatedSubmission(
        model_name=name,
        checkpoint=where,
        is_local=is_local,
        base=request.base,
        revision=revision,
        weights=request.weights,
        precision=request.precision,
        tasks=tuple(request.tasks),
        scoring=request.scoring,
        submitter=request.submitter,
        size_bytes=size,
        adapter_base=adapter_base,
    )


def _check_checkpoint(
    checkpoint: CheckpointFiles, weights: str, base: str, policy: SubmissionPolicy
) -> tuple[dict[str, int], dict[str, Any]]:
    files = checkpoint.files()
    _check_weights(checkpoint, files, weights)
    config = _check_config(checkpoint, files, weights, policy)
    if weights == "full":
        _check_architecture(checkpoint, config, base)
    return files, config


def _check_architecture(checkpoint: CheckpointFiles, config: dict[str, Any], base: str) -> None:
    """The checkpoint's config must be the architecture --base names (a llava config is not idefics2)."""
    from models.registry import MODELS

    expected = MODELS[base].model_types if base in MODELS else ()
    if config.get("model_type") not in expected:
        raise SubmissionRefused(
            "base",
            f"{checkpoint.where}: config.json is a '{config.get('model_type')}' "
            f"checkpoint, but --base {base} loads {' or '.join(expected) or 'nothing'}; "
            "pick the matching --base",
        )


def _check_adapter_base(
    adapter_config: dict[str, Any], base: str, policy: SubmissionPolicy, open_hub: CheckpointOpener
) -> tuple[str, int, str]:
    """The base an adapter records passes the rules of a full submission: a folder inside the root or a
    hub id, safetensors, a config of the --base architecture. Returns (base, its size, its fingerprint
    when local)."""
    if base not in ADAPTER_BASES:
        raise SubmissionRefused(
            "base",
            f"adapters are evaluated on {' or '.join(ADAPTER_BASES)} bases only, "
            f"not {base}; submit merged weights instead",
        )
    recorded = adapter_config.get("base_model_name_or_path")
    if not isinstance(recorded, str) or not recorded.strip():
        raise SubmissionRefused(
            "config",
            "adapter_config.json records no base_model_name_or_path: set it to a "
            "folder inside the submission root or a hub id",
        )
    recorded = recorded.strip()
    if recorded.startswith(("/", "~")):
        folder = _inside_root(Path(recorded).expanduser(), policy.root, shown=recorded)
        checkpoint: CheckpointFiles = LocalCheckpoint(folder, policy.root.expanduser().resolve())
    elif HUB_ID.match(recorded) and not recorded.startswith("."):
        checkpoint = open_hub(recorded, None)
    else:
        raise SubmissionRefused(
            "config",
            f"the adapter's base '{recorded}' is neither an absolute folder inside "
            "the submission root nor a hub id owner/name",
        )
    files, _ = _check_checkpoint(checkpoint, "full", base, policy)
    if isinstance(checkpoint, LocalCheckpoint):
        return str(checkpoint.folder), sum(files.values()), checkpoint.fingerprint(files)
    return recorded, sum(files.values()), ""


def _human(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _check_options(request: SubmissionRequest) -> None:
    from models.registry import MODELS

    if request.base not in MODELS:
        raise SubmissionRefused(
            "base",
            f"unknown base architecture '{request.base}'.{did_you_mean(request.base, MODELS)}"
            f" Known bases: {', '.join(sorted(MODELS))}",
        )
    for option, value, allowed in (
        ("weights", request.weights, WEIGHTS),
        ("precision", request.precision, PRECISIONS),
        ("scoring", request.scoring, SCORINGS),
    ):
        if value not in allowed:
            raise SubmissionRefused(
                "options", f"--{option} must be one of {', '.join(allowed)}, got '{value}'"
            )
    if not request.tasks:
        raise SubmissionRefused("options", "choose at least one task")
    try:
        spec.validate_tasks(request.tasks)
    except UserError as exc:
        raise SubmissionRefused("options", str(exc)) from None
    if request.revision is not None and not REVISION.match(request.revision):
        raise SubmissionRefused(
            "name", f"--revision '{request.revision}' is not a branch, tag or commit name"
        )
    if not SUBMITTER.match(request.submitter):
        raise SubmissionRefused(
            "options",
            f"submitter '{request.submitter}' is not a name: use letters, digits and "
            ". _ - (at most 64 characters)",
        )


def _locate(
    request: SubmissionRequest, policy: SubmissionPolicy, open_hub: CheckpointOpener
) -> tuple[CheckpointFiles, str, bool]:
    """The checkpoint and the leaderboard name it will carry: local/<submitter>/<folder> for a folder
    (a name no hub id, registry model or other submitter can take), the hub id for hub weights."""
    model = request.model.strip()
    if _looks_local(model, policy.root):
        path = Path(model).expanduser()
        folder = _inside_root(
            path if path.is_absolute() else policy.root.expanduser() / path, policy.root, shown=model
        )
        if not LOCAL_NAME.match(folder.name):
            raise SubmissionRefused(
                "name",
                f"folder name '{folder.name}' is not a model name: use letters, digits "
                "and . _ + - (at most 128 characters, starting with a letter or digit)",
            )
        checkpoint: CheckpointFiles = LocalCheckpoint(folder, policy.root.expanduser().resolve())
        namespace = (
            "web" if request.submitter.startswith(ANONYMOUS_WEB) else request.submitter
        )  # no address in names
        return checkpoint, f"{LOCAL_PREFIX}/{namespace}/{folder.name}", True
    if not HUB_ID.match(model):
        raise SubmissionRefused(
            "name",
            f"'{model}' is neither a folder in the submission root nor a hub id of the "
            "form owner/name (letters, digits, . _ -)",
        )
    if model in reserved_names():
        raise SubmissionRefused(
            "name",
            f"the name '{model}' belongs to a registry model or a paper row; "
            "rename the repository so the results are not mixed up",
        )
    name = model if request.revision in (None, "main") else f"{model}@{request.revision}"
    return open_hub(model, request.revision), name, False


def _looks_local(model: str, root: Path) -> bool:
    """A path (absolute, ~, ./ or ../) or a folder inside the root; anything else is a hub id. Unlike
    `looks_like_local_path`, existence is only ever asked inside the root, so the answer (a web form's)
    says nothing about the rest of the server."""
    if model in (".", "..") or model.startswith(LOCAL_PATH_PREFIXES):
        return True
    try:
        return (root.expanduser() / model).exists()
    except OSError:
        return False


def _inside_root(path: Path, root: Path, shown: str) -> Path:
    """The resolved folder; refused (naming it as the user wrote it) when it is outside the root, whether or
    not it exists there."""
    root = root.expanduser()
    if not root.is_dir():
        raise SubmissionRefused(
            "root", f"the submission root does not exist; the operator must create it or set {ROOT_ENV}"
        )
    try:
        folder = path.resolve()
    except (OSError, RuntimeError):
        raise SubmissionRefused("path", f"{shown} cannot be resolved (a symlink loop?)") from None
    if not folder.is_relative_to(root.resolve()):
        raise SubmissionRefused(
            "root", f"{shown} is outside the submission root ({ROOT_ENV}); copy the checkpoint there"
        )
    if not folder.exists():
        raise SubmissionRefused("path", f"{shown} does not exist in the submission root")
    if not folder.is_dir():
        raise SubmissionRefused("path", f"{shown} is not a folder: submit the checkpoint folder")
    return folder


def _check_weights(checkpoint: CheckpointFiles, files: dict[str, int], weights: str) -> None:
    pickled = sorted(name for name in files if name.lower().endswith(PICKLE_SUFFIXES))
    if pickled:
        raise SubmissionRefused(
            "safetensors",
            f"{checkpoint.where} has pickle weight files ({', '.join(pickled)}), "
            "which are never loaded: convert them to safetensors and remove them",
        )
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
            raise SubmissionRefused(
                "safetensors", f"{checkpoint.where}: {name} is not a readable safetensors file ({exc})"
            ) from None


def _check_config(
    checkpoint: CheckpointFiles, files: dict[str, int], weights: str, policy: SubmissionPolicy
) -> dict[str, Any]:
    config_name = "adapter_config.json" if weights == "adapter" else "config.json"
    if config_name not in files:
        raise SubmissionRefused("config", f"{checkpoint.where} has no {config_name}")
    try:
        config = json.loads(checkpoint.read_text(config_name))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SubmissionRefused(
            "config", f"{checkpoint.where}: {config_name} is not readable JSON ({exc})"
        ) from None
    if not isinstance(config, dict):
        raise SubmissionRefused("config", f"{checkpoint.where}: {config_name} is not a JSON object")
    if weights == "full":
        _check_remote_code(checkpoint, files, config, policy)
    return config


def _check_remote_code(
    checkpoint: CheckpointFiles, files: dict[str, int], config: dict[str, Any], policy: SubmissionPolicy
) -> None:
    """A checkpoint that ships its own model code runs the submitter's Python: only reviewed code, by hash."""
    model_type = config.get("model_type")
    auto_map = config.get("auto_map") or {}
    if not auto_map:
        if not isinstance(model_type, str) or not model_type:
            raise SubmissionRefused("config", f"{checkpoint.where}: config.json has no model_type")
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        if model_type not in CONFIG_MAPPING_NAMES:
            raise SubmissionRefused(
                "remote_code",
                f"{checkpoint.where}: model_type '{model_type}' is not a "
                "transformers architecture, so it would need remote code, which "
                "this checkpoint does not declare (auto_map)",
            )
        return
    references = [
        ref for value in auto_map.values() for ref in (value if isinstance(value, list) else [value]) if ref
    ]
    if any("--" in str(ref) for ref in references):
        raise SubmissionRefused(
            "remote_code",
            f"{checkpoint.where}: auto_map loads code from another repository "
            f"({', '.join(map(str, references))}), which is never allowed",
        )
    code_files = sorted(name for name in files if name.endswith(".py"))
    digests = {name: hashlib.sha256(checkpoint.read_bytes(name)).hexdigest() for name in code_files}
    unreviewed = {
        name: digest for name, digest in digests.items() if digest not in policy.remote_code_allowlist
    }
    if not code_files or unreviewed:
        listed = (
            ", ".join(f"{name} sha256={digest}" for name, digest in unreviewed.items()) or "no code files"
        )
        raise SubmissionRefused(
            "remote_code",
            f"{checkpoint.where}: architecture '{model_type}' needs remote code "
            f"that is not allow-listed ({listed}). After reviewing the code, an "
            f"admin can add its sha256 to {ALLOWLIST_ENV}",
        )
