"""Feature extraction for the probes: an MLLM's last-layer hidden states, or CLIP/SigLIP embeddings.

Features are computed in batches with a progress bar and cached on disk, one file per image (keyed by
its pixels) or text, under a folder named by the extractor's identity (harness.core.identity: the
weights with the adapter, every output-changing model-arg, the feature recipe), so an interrupted
extraction resumes where it stopped and a second probe run of the same computation reads everything
back, while any other weights or model-args compute afresh."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from harness.core import identity
from harness.core.errors import UserError
from harness.core.identity import ComputationIdentity
from harness.core.io import atomic_path, write_json_atomic
from harness.core.paths import harness_home
from tasks.datasets.base import TestItem

CLIP_PREFIX = "clip:"
CLIP_VIEWS = ("embed",)


class FeatureExtractor:
    """What a probe needs from a model: named views of image and text features (rows = inputs)."""

    identity: ComputationIdentity  # everything that changes the features; names the cache folder
    views: tuple[str, ...]

    def image_features(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def text_features(self, texts: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def name_text(self, class_name: str) -> str:
        """The text whose features stand for a category name."""
        return readable(class_name)


def readable(class_name: str) -> str:
    """'Black_footed_Albatross' -> 'Black footed Albatross'."""
    return class_name.replace("_", " ")


class MLLMExtractor(FeatureExtractor):
    """Hidden states of a wrapped MLLM (models.base.FGVRModel.features) for one image question."""

    def __init__(
        self, wrapper, question: str, identity: ComputationIdentity, views: Sequence[str] = ("last", "avg")
    ):
        self.wrapper, self.question, self.identity, self.views = wrapper, question, identity, tuple(views)

    def image_features(self, images):
        out = self.wrapper.features([self.question] * len(images), [[image] for image in images])
        return {view: out[view].numpy() for view in self.views}

    def text_features(self, texts):
        out = self.wrapper.text_features(list(texts))
        return {view: out[view].numpy() for view in self.views}


class ClipExtractor(FeatureExtractor):
    """CLIP/SigLIP image and text embeddings (tasks.clip_miner encoders), the papers' VLM reference.
    Category names are embedded in the miner's prompt ("an image of a {}")."""

    views = CLIP_VIEWS

    def __init__(self, encoder, identity: ComputationIdentity):
        self.encoder, self.identity = encoder, identity

    def image_features(self, images):
        return {"embed": np.asarray(self.encoder.encode_images(images))}

    def text_features(self, texts):
        return {"embed": np.asarray(self.encoder.encode_texts(list(texts)))}

    def name_text(self, class_name):
        from tasks.clip_miner import PROMPT

        return PROMPT.format(readable(class_name))


def load_clip_extractor(model: str, model_args: dict[str, str]) -> ClipExtractor:
    """`--model clip:SPEC`, SPEC as for --clip-model: hf:ID_OR_PATH or open_clip:ARCH:PRETRAINED."""
    from tasks.clip_miner import load_encoder

    spec = model.removeprefix(CLIP_PREFIX)
    encoder = load_encoder(spec, model_args.get("device", "cpu"))
    checkpoint = spec.split(":", 1)[-1]  # hf:PATH -> PATH (fingerprinted); open_clip names stay names
    return ClipExtractor(encoder, identity.identify(model, checkpoint, model_args, protocol="features:clip"))


class FeatureCache:
    """One .npz per input (all views) under `root/<computation key of the extractor's identity>/`."""

    def __init__(self, of: ComputationIdentity, root: Path | None = None):
        self.folder = Path(root or harness_home() / "features") / identity.computation_key(of)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / "identity.json", of.as_dict())

    def path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()}.npz"

    def get(self, key: str, views: Sequence[str]) -> dict[str, np.ndarray] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as stored:
                if all(view in stored for view in views):
                    return {view: stored[view] for view in views}
        except (OSError, ValueError):  # a damaged entry is recomputed
            return None
        return None

    def put(self, key: str, vectors: dict[str, np.ndarray]) -> None:
        with atomic_path(self.path(key), suffix=".npz") as tmp:
            np.savez(tmp, **vectors)


def image_key(item: TestItem) -> str:
    """An image input by its pixels (an image replaced under the same path is a new input)."""
    return f"image|{identity.pixel_hash(item.image)}"


def _cached(
    cache: FeatureCache,
    views: Sequence[str],
    keys: list[str],
    payloads: list,
    compute: Callable[[list], dict[str, np.ndarray]],
    batch_size: int,
    desc: str,
) -> dict[str, np.ndarray]:
    """Features of every payload in order: cached ones read, the rest computed in batches and stored."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for index, key in enumerate(keys):
        vectors = cache.get(key, views)
        if vectors is not None:
            found[index] = vectors
    todo = [i for i in range(len(keys)) if i not in found]
    with tqdm(total=len(todo), desc=desc, unit="in", disable=not todo) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            batch = compute([payloads[i] for i in chunk])
            for row, index in enumerate(chunk):
                found[index] = {view: np.asarray(batch[view][row], dtype=np.float32) for view in views}
                cache.put(keys[index], found[index])
            bar.update(len(chunk))
    if not keys:
        return {view: np.zeros((0, 0), dtype=np.float32) for view in views}
    return {view: np.stack([found[i][view] for i in range(len(keys))]) for view in views}


def image_features(
    extractor: FeatureExtractor,
    items: Sequence[TestItem],
    *,
    cache: FeatureCache,
    batch_size: int = 8,
    desc: str = "image features",
    keys: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Features of `items`; `keys`: their image_key values when already computed."""

    def compute(batch: list[TestItem]) -> dict[str, np.ndarray]:
        images = []
        for item in batch:
            try:
                with Image.open(item.image) as image:
                    images.append(image.convert("RGB"))
            except OSError as error:
                raise UserError(
                    f"{item.image}: unreadable image ({error}); replace the file or pass --skip-missing"
                ) from error
        return extractor.image_features(images)

    return _cached(
        cache,
        extractor.views,
        list(keys) if keys is not None else [image_key(i) for i in items],
        list(items),
        compute,
        batch_size,
        desc,
    )


def text_features(
    extractor: FeatureExtractor,
    texts: Sequence[str],
    *,
    cache: FeatureCache,
    batch_size: int = 8,
    desc: str = "text features",
) -> dict[str, np.ndarray]:
    return _cached(
        cache,
        extractor.views,
        [f"text|{t}" for t in texts],
        list(texts),
        extractor.text_features,
        batch_size,
        desc,
    )
