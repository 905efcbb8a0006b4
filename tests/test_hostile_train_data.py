"""Hostile but realistic use of `harness train data` (issue 17, items 5-6 and the data-builder bullets):
a re-run killed midway leaves a consistent set, replaced images are described again, negatives come from
described classes, bad flags and a busy folder are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from PIL import Image, ImageOps

from harness.cli import main
from tasks.fixtures import datasets as synthetic
from tests.conftest import refused


def human_argv(cub: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "data", "bird200", "--source", str(cub), "--attributes", "human", "--negatives", "random",
            "--out", str(out), *extra]  # fmt: skip


def rows(folder: Path) -> list[dict]:
    return list(datasets.load_from_disk(str(folder)).remove_columns("image"))


def test_a_rebuild_killed_midway_leaves_the_old_set_whole(tmp_path, monkeypatch):
    """Item 5: another --seed, killed while the second dataset is written: the folder still holds one
    consistent set (the old one), never a new stage1/ beside the old stage2/ and manifest.json."""
    from finedefics_train.training_data import load_stage

    cub = synthetic.make_cub(tmp_path / "cub", n_classes=6, per_class_test=1, per_class_train=3, seed=1)
    out = tmp_path / "out"
    assert main(human_argv(cub, out, "--seed", "0")) == 0
    before = {name: rows(out / name) for name in ("stage1", "stage2")}
    real = datasets.Dataset.save_to_disk
    calls = []

    def killed_at_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(datasets.Dataset, "save_to_disk", killed_at_the_second)
        assert main(human_argv(cub, out, "--seed", "1")) != 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 0
    for name, old in before.items():
        assert rows(out / name) == old, name
        load_stage(out, name)  # and training accepts the set


def test_a_mixed_set_is_refused_by_training(tmp_path, capsys):
    """Killed in the middle of the swap: the parts carry different build ids, which training refuses."""
    from finedefics_train.training_data import BUILD_FILE

    cub = synthetic.make_cub(tmp_path / "cub", n_classes=5, per_class_test=1, per_class_train=2, seed=1)
    out = tmp_path / "out"
    assert main(human_argv(cub, out)) == 0
    (out / "stage2" / BUILD_FILE).write_text(json.dumps({"build_id": "another-run"}))
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": ["Idefics2ForConditionalGeneration"]}))
    refused(capsys, ["train", "stage2", "--data", str(out), "--base", str(base), "--out", str(tmp_path / "a")],
            "come from different `harness train data` runs")  # fmt: skip


def test_a_replaced_training_image_is_described_again(tmp_path, capsys):
    """Item 6: same path, other pixels: the cached VQA answers about the old picture are not reused."""
    from models.fixtures.tiny_chat_lm import build_tiny_chat_lm
    from models.fixtures.tiny_models import build_tiny_model

    chat = build_tiny_chat_lm(tmp_path / "chat")
    vqa = build_tiny_model("idefics2", tmp_path / "idefics2")
    root = synthetic.make_pets(tmp_path / "pets", n_classes=4, per_class_test=1, per_class_train=1, seed=5)
    argv = ["train", "data", "pet37", "--source", str(root), "--attributes", "llm-vqa", "--llm", f"hf:{chat}",
            "--vqa", f"model:idefics2,pretrained={vqa}", "--negatives", "random", "--max-attributes", "1",
            "--llm-max-new-tokens", "8", "--vqa-max-new-tokens", "4", "--out", str(tmp_path / "out"),
            "--stop-after", "extraction", "--json"]  # fmt: skip
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]["extraction"]
    assert first["asked"] == 8  # 4 images x (1 general question + 1 attribute)
    from finedefics_train.data.sources import read_source

    victim = read_source("pet37", root).train.items[0].image
    with Image.open(victim) as image:
        ImageOps.invert(image.convert("RGB")).save(victim)
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]["extraction"]
    assert (again["cached"], again["asked"]) == (6, 2)


def test_random_negatives_come_from_classes_with_described_images(tmp_path, capsys):
    """A subset of CUB (classes.txt lists 8 classes, 3 have no train image): before, negatives drawn from
    those 3 left rows out; now every train image keeps its row and its negatives are described classes."""
    cub = synthetic.make_cub(tmp_path / "cub", n_classes=8, per_class_test=1, per_class_train=2, seed=3)
    labels = dict(line.split() for line in (cub / "image_class_labels.txt").read_text().splitlines())
    split = [line.split() for line in (cub / "train_test_split.txt").read_text().splitlines()]
    no_train = {"6", "7", "8"}
    (cub / "train_test_split.txt").write_text(
        "".join(f"{i} {'0' if labels[i] in no_train else t}\n" for i, t in split)
    )
    assert main([*human_argv(cub, tmp_path / "out"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["left_out"] == 0 and summary["n_stage1"] == 10
    described = {row["category"] for row in rows(tmp_path / "out" / "stage1")}
    assert len(described) == 5
    for row in rows(tmp_path / "out" / "stage1"):
        assert set(row["neg_categories"]) <= described - {row["category"]}
    # too few described classes for three negatives: the real reason, not a cache folder
    (cub / "train_test_split.txt").write_text(
        "".join(f"{i} {'0' if labels[i] not in {'1', '2', '3'} else t}\n" for i, t in split)
    )
    refused(capsys, human_argv(cub, tmp_path / "out2"), "only 3 of 8 classes have a training image")


def test_bad_builder_flags_are_one_line(tmp_path, capsys):
    cub = synthetic.make_cub(tmp_path / "cub", n_classes=4, per_class_test=1, per_class_train=1, seed=1)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    refused(capsys, human_argv(cub, a_file), "is a file")
    for flag in ("--batch-size", "--concurrency", "--max-attributes"):
        refused(capsys, human_argv(cub, tmp_path / "o", flag, "0"), f"{flag} must be at least 1")


def test_a_second_build_into_a_busy_folder_is_refused(tmp_path, capsys):
    from tests.conftest import lock_held_elsewhere

    cub = synthetic.make_cub(tmp_path / "cub", n_classes=4, per_class_test=1, per_class_train=1, seed=1)
    (tmp_path / "out").mkdir()
    with lock_held_elsewhere(tmp_path / "out" / ".lock"):  # what another `harness train data` into OUT holds
        refused(capsys, human_argv(cub, tmp_path / "out"), "is in use by another")


def test_a_torn_last_line_is_not_glued_to_the_next(tmp_path):
    """The data builder's reply cache (build-qa's journal has its own test, tests/test_build_qa.py)."""
    from finedefics_train.data.cache import Reply, ReplyCache

    path = tmp_path / "replies.jsonl"
    ReplyCache(path).add([Reply("k1", "s", "p", "b", "text", True, "text")])
    path.write_text(path.read_text() + '{"key": "k2", "subj')  # killed mid-line
    ReplyCache(path).add([Reply("k3", "s", "p", "b", "more", True, "more")])
    assert set(ReplyCache(path).replies) == {"k1", "k3"}


def smooth_photo(seed: int) -> Image.Image:
    """A 256-pixel picture with the smooth structure of a photograph (gradients and blobs, no pixel noise)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:256, 0:256] / 255.0
    channels = []
    for _ in range(3):
        field = rng.uniform(0.2, 0.8) * x + rng.uniform(0.2, 0.8) * y
        for _ in range(4):
            cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
            field += rng.uniform(-1, 1) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / r**2)
        channels.append((255 * (field - field.min()) / np.ptp(field)).astype("uint8"))
    return Image.fromarray(np.stack(channels, axis=-1), "RGB")


def plant_near_duplicate(cub: Path) -> tuple[str, str]:
    """A test image, and a train image that is the same picture resized and re-saved as a lower-quality
    JPEG (different pixels, so the exact check passes it)."""
    from finedefics_train.data.sources import read_source

    source = read_source("bird200", cub)
    test, train = source.test.items[0], source.train.items[-1]
    photo = smooth_photo(7)
    photo.save(test.image, "JPEG", quality=95)
    photo.resize((200, 200), Image.Resampling.BICUBIC).save(train.image, "JPEG", quality=70)
    return test.key, train.key


def test_a_resaved_test_image_in_the_train_split_is_found(tmp_path, capsys):
    cub = synthetic.make_cub(tmp_path / "cub", n_classes=4, per_class_test=1, per_class_train=2, seed=3)
    test_key, train_key = plant_near_duplicate(cub)
    refused(capsys, human_argv(cub, tmp_path / "out"), "near duplicate", test_key, train_key)
    assert main([*human_argv(cub, tmp_path / "out"), "--allow-overlap"]) == 0
    [pair] = json.loads((tmp_path / "out" / "manifest.json").read_text())["overlap"]["pairs"]
    assert (pair["test_key"], pair["train_key"]) == (test_key, train_key) and pair["differing_bits"] <= 4


def test_allowed_overlap_is_flagged_on_the_adapter_its_evaluations_and_the_leaderboard(tmp_path, capsys):
    from finedefics_train.fixtures import build_training_base
    from leaderboard.detail import results_frame
    from leaderboard.store import ResultStore, model_name_for

    cub = synthetic.make_cub(tmp_path / "cub", n_classes=4, per_class_test=1, per_class_train=3, seed=3)
    synthetic.plant_overlap("bird200", cub, n=1)
    data, adapter = tmp_path / "data", tmp_path / "adapter"
    assert main([*human_argv(cub, data), "--allow-overlap"]) == 0
    base = build_training_base(tmp_path / "base")
    capsys.readouterr()
    assert main(["train", "stage1", "--data", str(data), "--base", str(base), "--out", str(adapter), "--config",
                 "tiny_cpu", "--max-steps", "1", "--quiet", "--eval-after", "bird200", "--eval-data-root", str(cub),
                 "--eval-scoring", "loglik_name", "--json"]) == 0  # fmt: skip
    printed = capsys.readouterr()
    assert "holds 1 test image(s)" in printed.err
    flag = {"test_images_in_training": 1, "identical": 1, "near_duplicates": 0}
    assert json.loads((adapter / "finedefics_training.json").read_text())["contamination"] == flag
    summary = json.loads(
        Path(json.loads(printed.out.strip().splitlines()[-1])["eval"][0]["summary"]).read_text()
    )
    assert summary["provenance"]["training_run"]["contamination"] == flag
    store = ResultStore.open()
    try:
        _, rows = store.model_info(model_name_for(summary))
    finally:
        store.close()
    assert "⚠ trained on 1 test image(s)" in results_frame(rows).iloc[0, 1]


def spaced_choice_file(cub: Path, path: Path) -> Path:
    """A hand-made choice file writing "Black footed Albatross" where the archive has "Black_footed_Albatross"."""
    synthetic.make_choice_file("bird200", cub, path)
    data = json.loads(path.read_text())
    respell = lambda name: name.replace("_", " ")  # noqa: E731
    path.write_text(json.dumps({respell(key): [
        {**entry, "options": [respell(o) for o in entry["options"]], "groundtruth": respell(entry["groundtruth"])}
        for entry in entries] for key, entries in data.items()}))  # fmt: skip
    return path


def test_training_and_evaluation_show_one_spelling_of_each_class(tmp_path, capsys, monkeypatch):
    """Trained on the archive's 'Black_footed_Albatross' and asked about 'Black footed Albatross' (a
    hand-made choice file) is refused before training; `train data --choices` teaches the file's spelling."""
    import finedefics_train.trainer as trainer
    from harness.core.errors import UserError

    cub = synthetic.make_cub(tmp_path / "cub", n_classes=5, per_class_test=1, per_class_train=2, seed=1)
    choices = spaced_choice_file(cub, tmp_path / "choices.json")
    archive, respelt = tmp_path / "archive-data", tmp_path / "choice-data"
    assert main(human_argv(cub, archive)) == 0
    assert main([*human_argv(cub, respelt), "--choices", f"bird200={choices}"]) == 0
    taught = {row["category"] for row in rows(respelt / "stage1")} | {
        option for row in rows(respelt / "stage2") for option in row["options"]}  # fmt: skip
    assert taught and all("_" not in name for name in taught)
    inputs = json.loads((respelt / "manifest.json").read_text())["inputs"]["bird200"]
    assert inputs["class_name_form"] == f"choices:{choices}" and inputs["renamed_class_names"] == 5

    def loaded(*args, **kwargs):
        raise UserError("the plan passed: weights would load now")

    monkeypatch.setattr(trainer, "load_base", loaded)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": ["Idefics2ForConditionalGeneration"]}))
    argv = ["train", "stage1", "--base", str(base), "--out", str(tmp_path / "a"), "--eval-after", "bird200",
            "--eval-data-root", str(cub), "--eval-choices", str(choices), "--data"]  # fmt: skip
    refused(capsys, [*argv, str(archive)], "'Black footed Albatross' for 'Black_footed_Albatross'",
            f"--choices bird200={choices}")  # fmt: skip
    refused(capsys, [*argv, str(respelt)], "the plan passed")
