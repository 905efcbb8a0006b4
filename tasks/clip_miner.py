"""Hard-negative options mined with CLIP, as the Finedefics paper built its choice files.

For every test image: the k classes whose text embedding ("an image of a {}") is most similar to
the image embedding, with the ground truth forced in. The paper used open_clip ViT-L-14
`laion2b_s32b_b82k`; any open_clip model (`open_clip:ARCH:PRETRAINED`) or transformers CLIP
checkpoint (`hf:HUB_ID_OR_PATH`) can be selected. Image embeddings are computed in batches with a
progress bar and cached per (encoder, image file) so re-mining with another k costs nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from harness.core.errors import UserError
from harness.core.paths import harness_home
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.options import check_k

DEFAULT_CLIP = "open_clip:ViT-L-14:laion2b_s32b_b82k"
PROMPT = "an image of a {}"


class ClipEncoder:
    """Image and text embeddings (L2-normalised) from one CLIP model."""

    name: str

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


def _normalise(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


class HFClipEncoder(ClipEncoder):
    """A transformers CLIP or SigLIP checkpoint (whatever AutoModel loads with image and text features)."""

    def __init__(self, model_id: str, device: str = "cpu"):
        from transformers import AutoModel, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(model_id)
            self.model = AutoModel.from_pretrained(model_id).to(device).eval()
        except (OSError, ValueError) as error:  # missing folder, or an id the hub cannot resolve offline
            raise UserError(
                f"CLIP model '{model_id}' could not be loaded ({error}); pass --clip-model hf:/local/clip/folder "
                "or download it first on a connected machine"
            ) from error
        self.device = device
        self.name = f"hf:{model_id}"
        # SigLIP's text tower was trained on text padded to its full length, CLIP's on the text alone
        self.text_padding = "max_length" if self.model.config.model_type.startswith("siglip") else True

    @torch.inference_mode()
    def encode_images(self, images):
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        return _normalise(_as_tensor(self.model.get_image_features(pixel_values=pixels)))

    @torch.inference_mode()
    def encode_texts(self, texts):
        tokens = self.processor(
            text=texts, return_tensors="pt", padding=self.text_padding, truncation=True
        ).to(self.device)
        return _normalise(_as_tensor(self.model.get_text_features(**tokens)))


def _as_tensor(output) -> torch.Tensor:
    """transformers 5 may return a model output object instead of a bare tensor."""
    if torch.is_tensor(output):
        return output
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, attr, None)
        if torch.is_tensor(value):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")


class OpenClipEncoder(ClipEncoder):
    def __init__(self, arch: str, pretrained: str, device: str = "cpu"):
        try:
            import open_clip
        except ImportError as error:
            raise UserError(
                f"open_clip cannot be imported ({error}). Install it with `pip install 'fgvr-harness[clip]'` "
                "(it needs a torchvision that matches your torch), or mine with a transformers CLIP: "
                "--clip-model hf:openai/clip-vit-large-patch14"
            ) from error
        try:
            model, _, self.preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, device=device
            )
        except Exception as error:  # noqa: BLE001 - open_clip raises several types for missing weights
            raise UserError(
                f"open_clip weights {arch}/{pretrained} are not available ({error}); download them on a connected "
                "machine, or pass --clip-model hf:/local/clip/folder"
            ) from error
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.device = device
        self.name = f"open_clip:{arch}:{pretrained}"

    @torch.inference_mode()
    def encode_images(self, images):
        batch = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        return _normalise(self.model.encode_image(batch))

    @torch.inference_mode()
    def encode_texts(self, texts):
        return _normalise(self.model.encode_text(self.tokenizer(texts).to(self.device)))


def load_encoder(spec: str = DEFAULT_CLIP, device: str = "cpu") -> ClipEncoder:
    kind, _, rest = spec.partition(":")
    if kind == "hf" and rest:
        return HFClipEncoder(rest, device)
    if kind == "open_clip" and rest.count(":") == 1:
        arch, pretrained = rest.split(":")
        return OpenClipEncoder(arch, pretrained, device)
    raise UserError(
        f"--clip-model {spec}: expected open_clip:ARCH:PRETRAINED or hf:HUB_ID_OR_PATH (default {DEFAULT_CLIP})"
    )


class ChoiceMiner:
    """Mines the k most CLIP-similar classes per test image (ground truth forced in)."""

    def __init__(
        self,
        encoder: ClipEncoder,
        *,
        batch_size: int = 32,
        cache_dir: Path | None = None,
        prompt: str = PROMPT,
    ):
        self.encoder = encoder
        self.batch_size = batch_size
        self.prompt = prompt
        digest = hashlib.sha256(encoder.name.encode()).hexdigest()[:16]
        self.cache_dir = (cache_dir or harness_home() / "clip-cache") / digest

    def class_embeddings(self, class_names: Sequence[str]) -> np.ndarray:
        texts = [self.prompt.format(name.replace("_", " ")) for name in class_names]
        return np.concatenate(
            [
                self.encoder.encode_texts(texts[i : i + self.batch_size])
                for i in range(0, len(texts), self.batch_size)
            ]
        )

    def _cache_key(self, item: TestItem) -> str:
        stat = item.image.stat()
        return hashlib.sha256(
            f"{item.image.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        ).hexdigest()

    def image_embeddings(self, items: Sequence[TestItem]) -> np.ndarray:
        """Embeddings in item order; cached ones are read, the rest computed in batches."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        keys = [self._cache_key(item) for item in items]
        found: dict[int, np.ndarray] = {}
        for index, key in enumerate(keys):
            path = self.cache_dir / f"{key}.npy"
            if path.is_file():
                found[index] = np.load(path)
        todo = [i for i in range(len(items)) if i not in found]
        with tqdm(
            total=len(todo), desc=f"CLIP image embeddings ({self.encoder.name})", unit="img", disable=not todo
        ) as bar:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                images = [Image.open(items[i].image).convert("RGB") for i in chunk]
                for index, vector in zip(chunk, self.encoder.encode_images(images)):
                    found[index] = vector
                    tmp = self.cache_dir / f".{keys[index]}.tmp.npy"
                    np.save(tmp, vector)
                    tmp.replace(self.cache_dir / f"{keys[index]}.npy")
                bar.update(len(chunk))
        return np.stack([found[i] for i in range(len(items))])

    def mine(self, split: DatasetSplit, k: int) -> list[tuple[TestItem, list[str], list[int]]]:
        check_k(k, split)
        similarity = self.image_embeddings(split.items) @ self.class_embeddings(split.class_names).T
        mined = []
        for item, scores in zip(split.items, similarity):
            ranked = [int(label) for label in np.argsort(-scores, kind="stable")]
            labels = ranked[:k] if item.label in ranked[:k] else [*ranked[: k - 1], item.label]
            mined.append((item, [split.class_names[label] for label in labels], labels))
        return mined
