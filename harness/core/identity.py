"""What identifies a computation: the one definition behind every cache, journal, record and name.

A computation is identified by
- its weights: the base checkpoint's content fingerprint (a hub id: its cached commit) and, with an
  adapter, the adapter's content fingerprint, combined (`weights_fingerprint`);
- every model-arg that can change outputs: all of them except `NON_OUTPUT_ARGS` (`output_args`);
- its data: a content fingerprint of the inputs (a prepared task's, or the images' bytes);
- its protocol: the named evaluation protocol of a run, or a probe's feature recipe.

`computation_key` hashes these into the key that response journals and the probe feature cache are
filed under, and that summaries and probe reports record; `model_name` is the one leaderboard name of
a model's weights (`harness run`, `harness probe repr`, the importer and the store all call it).
See docs/identity.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.core.errors import UserError
from harness.core.paths import looks_like_local_path

FINGERPRINT_PREFIX = "local-sha256:"

# Model-args that cannot change what a model answers or the features it gives, each with the reason.
# Every other model-arg is part of the identity (an unknown new one too: the safe default).
NON_OUTPUT_ARGS: dict[str, str] = {
    "pretrained": "named by the weights fingerprint (content), not by its path",
    "adapter": "named by the weights fingerprint (content), not by its path",
    "revision": "named by the weights fingerprint (the hub commit it resolves to)",
    "batch_size": "answers agree across batch sizes and orders (tests/test_batch_invariance.py, float32 "
    "scores within 1e-4); the batch size is still recorded in provenance.batch_size (docs/batching.md)",
    "num_workers": "where the images are decoded and processed (worker processes or a thread), never how "
    "(tests/test_prefetch.py compares the answers)",
    "use_safetensors": "chooses which file of the same tensors is read (never other weights)",
}


@dataclass(frozen=True)
class ComputationIdentity:
    """The inputs that decide a computation's outputs (see the module docstring)."""

    model: str  # registry name, or "clip:SPEC"
    weights: str | None  # weights_fingerprint(...): the base's and the adapter's content
    checkpoint: str | None  # the checkpoint reference, only where no fingerprint could be taken
    model_args: dict[str, str] = field(default_factory=dict)  # output_args(...)
    data: str | None = None  # content fingerprint of the inputs (None: keyed per input, as in a cache)
    protocol: str | None = None  # a run's protocol name, or a probe's feature recipe

    def as_dict(self) -> dict:
        return asdict(self)


def output_args(model_args: dict[str, str]) -> dict[str, str]:
    """The model-args that can change outputs, sorted, values as strings (`NON_OUTPUT_ARGS` left out)."""
    return {k: str(v) for k, v in sorted(model_args.items()) if k not in NON_OUTPUT_ARGS}


def identify(
    model: str,
    pretrained: str,
    model_args: dict[str, str],
    *,
    data: str | None = None,
    protocol: str | None = None,
) -> ComputationIdentity:
    """The identity of running `model` on `pretrained` (+ `model_args['adapter']`) over `data`."""
    weights = weights_fingerprint(pretrained, model_args.get("revision"), model_args.get("adapter"))
    checkpoint = None if weights else f"{pretrained}|adapter={model_args.get('adapter')}"
    return ComputationIdentity(model, weights, checkpoint, output_args(model_args), data, protocol)


def computation_key(identity: ComputationIdentity) -> str:
    """The key of an identity: what journals and caches are filed under and records carry."""
    text = json.dumps(identity.as_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def model_name(
    model: str,
    pretrained: str | None,
    adapter: str | None,
    revision: str | None,
    fingerprint: str | None,
    registered_hub_id: str | None,
) -> str:
    """The leaderboard name of a model's weights; different weights never share a name.

    The registry name only for the registry's own weights (`registered_hub_id`, no other revision, no
    adapter), so the run sits beside the paper's row for that model. Other hub weights: the hub id
    (with `@revision` when one was asked for). A local folder or adapter: `<folder>@<8 hex digits of
    the weights fingerprint>` (base and adapter together), so two folders called `ft` holding
    different adapters are two models, whichever command evaluated them."""
    if (
        registered_hub_id is not None
        and not adapter
        and pretrained in (None, "", registered_hub_id)
        and revision in (None, "", "main")
    ):
        return model
    weights = adapter or pretrained or model
    if looks_like_local_path(weights):
        fingerprint = fingerprint or ""
        if fingerprint.startswith("local-"):  # local-sha256:<hex> (and local-<hex> of older versions)
            suffix = re.split(r"[:-]", fingerprint)[-1][:8]
        else:  # an imported result without a fingerprint: at least its path tells folders apart
            suffix = "path-" + hashlib.sha256(weights.encode()).hexdigest()[:8]
        return f"{Path(weights).expanduser().name}@{suffix}"
    return weights if revision in (None, "", "main") or adapter else f"{weights}@{revision}"


def backend_identity(spec: str) -> str:
    """An LLM backend spec (models.chat) as an identity: `hf:PATH` of a local model becomes
    `hf:<weights fingerprint>` (its content); a hub id or a server's `openai:URL#MODEL` stays as
    written (the server's weights are not ours to fingerprint)."""
    kind, _, target = spec.partition(":")
    if kind == "hf" and Path(target).expanduser().is_dir():
        return f"hf:{weights_fingerprint(target, None)}"
    return spec


# ---- weights fingerprints ----------------------------------------------------------------------

_FILE_DIGESTS: dict[tuple, str] = {}  # (path, device, inode, size, mtime_ns, ctime_ns) -> sha256 of the bytes


def checkpoint_fingerprint(folder: Path) -> str:
    """The content hash of a local checkpoint: every file's relative path, size and bytes (symlinks are
    hashed as what they point to). Weights rewritten in place at the same size get a new fingerprint.

    A file's digest is reused within a process while its stat is unchanged, ctime included (which
    every write, rename or chmod moves and no user can set back), so the worker can check a
    checkpoint again after each task without reading it again."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        info = path.stat()
        digest.update(
            f"{path.relative_to(folder).as_posix()}\0{info.st_size}\0{_file_digest(path, info)}".encode()
        )
    return FINGERPRINT_PREFIX + digest.hexdigest()[:32]


def _file_digest(path: Path, info) -> str:
    key = (str(path.resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    if key in _FILE_DIGESTS:
        return _FILE_DIGESTS[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(2**22):
            digest.update(block)
    # a file changed in the last seconds is not remembered: file-system clocks are coarse (milliseconds),
    # so a second write in the same tick could leave its ctime unchanged
    if time.time_ns() - info.st_ctime_ns > 2 * 10**9:
        _FILE_DIGESTS[key] = digest.hexdigest()
    return digest.hexdigest()


def weights_fingerprint(pretrained: str, revision: str | None, adapter: str | None = None) -> str | None:
    """A local folder: its content fingerprint. A hub id: the cached commit (else the asked revision).
    With a local `adapter`, one fingerprint of the base's and the adapter's."""
    base = _base_revision(pretrained, revision)
    if not adapter or not Path(adapter).expanduser().is_dir():
        return base
    adapter_print = checkpoint_fingerprint(Path(adapter).expanduser())
    combined = hashlib.sha256(f"{base}\0{adapter_print}".encode()).hexdigest()
    return FINGERPRINT_PREFIX + combined[:32]


def _base_revision(pretrained: str, revision: str | None) -> str | None:
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return checkpoint_fingerprint(path)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(pretrained, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an identity must never fail a run
        cached = None
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    return revision


# ---- data fingerprints -------------------------------------------------------------------------


def pixel_hash(path: Path) -> str:
    """sha256 of an image's decoded RGB pixels and size: the same picture under another name or container
    hashes the same, while the file name plays no part (Stanford Cars reuses names across its splits).
    The identity of an image input (probe features) and of train/test leakage checks."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable image ({error}); restore the file") from error
    digest = hashlib.sha256(f"{rgb.shape}".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()


def listing_fingerprint(entries: dict[str, str]) -> str:
    """One fingerprint of a set of inputs given as {key: content hash} (e.g. a split's pixel hashes)."""
    listing = "\n".join(f"{key} {digest}" for key, digest in sorted(entries.items()))
    return hashlib.sha256(listing.encode()).hexdigest()
