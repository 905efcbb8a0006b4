"""CLIP hard-negative mining with a tiny random transformers CLIP built offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.core.errors import UserError
from tasks.clip_miner import ChoiceMiner, load_encoder
from tasks.datasets.base import DatasetSplit, TestItem

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from tasks.fixtures.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> DatasetSplit:
    root = tmp_path_factory.mktemp("colours")
    items = []
    for label, colour in enumerate(COLOURS):
        for i in range(2):
            path = root / f"{colour}_{i}.png"
            Image.new("RGB", (36 + 4 * i, 30), colour).save(path)
            items.append(TestItem(path, label, path.name))
    return DatasetSplit("bird200", "test", root, [f"{c} bird" for c in COLOURS], items)


def test_mined_options_are_the_top_k_by_similarity_with_the_truth_forced_in(tiny_clip, split, tmp_path):
    encoder = load_encoder(f"hf:{tiny_clip}")
    mined = ChoiceMiner(encoder, batch_size=4, cache_dir=tmp_path).mine(split, k=3)
    images = encoder.encode_images([Image.open(item.image).convert("RGB") for item in split.items])
    texts = encoder.encode_texts([f"an image of a {name}" for name in split.class_names])
    similarity = images @ texts.T
    for (item, names, labels), scores in zip(mined, similarity):
        assert len(set(labels)) == 3 and item.label in labels
        assert names == [split.class_names[label] for label in labels]
        top = list(np.argsort(-scores, kind="stable")[:3])
        expected = top if item.label in top else [*top[:2], item.label]
        assert labels == [int(x) for x in expected]


def test_embeddings_are_cached(tiny_clip, split, tmp_path, monkeypatch):
    encoder = load_encoder(f"hf:{tiny_clip}")
    first = ChoiceMiner(encoder, cache_dir=tmp_path).mine(split, k=4)
    calls = []
    original = encoder.encode_images
    monkeypatch.setattr(
        encoder, "encode_images", lambda images: calls.append(len(images)) or original(images)
    )
    again = ChoiceMiner(encoder, cache_dir=tmp_path).mine(split, k=4)
    assert calls == []
    assert [labels for _, _, labels in again] == [labels for _, _, labels in first]


def test_bad_clip_specs_are_user_errors():
    with pytest.raises(UserError, match="expected open_clip:ARCH:PRETRAINED or hf:"):
        load_encoder("clip-large")
    with pytest.raises(UserError, match="could not be loaded"):
        load_encoder("hf:/no/such/clip")
    with pytest.raises(UserError, match="open_clip"):  # not importable here, or its weights are not cached
        load_encoder("open_clip:ViT-L-14:laion2b_s32b_b82k")


def test_run_with_clip_options(capsys, tmp_path, tiny_idefics2, tiny_clip, cub_root):
    import json

    from harness.cli import main

    code = main(
        [
            "run",
            "--model",
            "idefics2",
            "--task",
            "bird200",
            "--model-args",
            f"pretrained={tiny_idefics2}",
            "--data-root",
            str(cub_root),
            "--options",
            "clip",
            "--clip-model",
            f"hf:{tiny_clip}",
            "--variant",
            "k3",
            "--scoring",
            "loglik",
            "--json",
            "--no-record",
            "--output-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    line = json.loads(out.out.strip().splitlines()[-1])
    assert line["option_source"] == "clip" and line["variant"] == "k3"
    summary = json.loads(Path(line["summary_file"]).read_text())
    assert summary["option_source_detail"]["clip_model"] == f"hf:{tiny_clip}"
