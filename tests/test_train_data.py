"""`harness train data`: Stage I / Stage II training sets from the synthetic train splits, with CUB's human
attributes, with the LLM + VQA stages (tiny local models), CLIP or random negatives; leakage, resumption."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from finedefics_train.data.build import CSV_COLUMNS, OPEN_QUESTION
from finedefics_train.training_data import stage_one_turn
from harness.cli import main
from tasks.fixtures import datasets as synthetic
from tasks.lmms import hooks
from tasks.options import order_options
from tasks.prompts import NAME_INSTRUCTION, question_for, render_question
from tasks.registry import FGVR_TASKS, detect_and_read, get_task

STAGE1_COLUMNS = {"image", "image_id", "task", "label", "category", "superclass", "attribute", "neg_categories",
                  "neg_attributes", "neg_image_ids", "source"}  # fmt: skip
STAGE2_COLUMNS = {"image", "image_id", "task", "label", "category", "type", "question", "answer", "options"}
JSON_KEYS = {"out", "n_stage1", "n_stage2", "n_classes", "tasks", "attributes", "negatives", "overlap"}
MAKERS = {key: task.make_synthetic() for key, task in FGVR_TASKS.items()}  # every registered layout


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train-data")


@pytest.fixture(scope="module")
def cub(data_dir) -> Path:
    return synthetic.make_cub(data_dir / "cub", n_classes=5, per_class_test=1, per_class_train=3, seed=2)


@pytest.fixture(scope="module")
def tiny_clip(data_dir) -> Path:
    from tasks.fixtures.tiny_clip import build_tiny_clip

    return build_tiny_clip(data_dir / "clip")


@pytest.fixture(scope="module")
def tiny_chat(data_dir) -> Path:
    from models.fixtures.tiny_chat_lm import build_tiny_chat_lm

    return build_tiny_chat_lm(data_dir / "tiny-chat")


def run_cli(capsys, *argv: str) -> dict:
    assert main(["train", "data", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def human_run(cub, tiny_clip, data_dir):
    out = data_dir / "human-out"
    args = [
        "train",
        "data",
        "bird200",
        "--source",
        str(cub),
        "--attributes",
        "human",
        "--negatives",
        "clip",
        "--clip-model",
        f"hf:{tiny_clip}",
        "--out",
        str(out),
        "--export-csv",
        "--json",
        "--mcq-ratio",
        "0.5",
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return json.loads(printed.getvalue().strip().splitlines()[-1]), out


def test_human_run_writes_both_sets_with_the_schema(human_run, cub):
    summary, out = human_run
    assert JSON_KEYS <= set(summary) and summary["tasks"] == ["bird200"] and summary["overlap"] == []
    stage1, stage2 = (
        datasets.load_from_disk(str(out / "stage1")),
        datasets.load_from_disk(str(out / "stage2")),
    )
    assert set(stage1.column_names) == STAGE1_COLUMNS and set(stage2.column_names) == STAGE2_COLUMNS
    assert isinstance(stage1.features["image"], datasets.Image)
    assert summary["n_stage1"] == len(stage1) == len(stage2) > 0
    train = detect_and_read("bird200", cub, split="train")
    by_key = {f"bird200/{item.key}": item for item in train.items}
    for row in stage1:
        item = by_key[row["image_id"]]
        assert row["label"] == item.label and row["category"] == train.class_names[item.label]
        assert row["source"] == "human" and row["superclass"] == "bird"
        assert row["category"] not in row["neg_categories"] and len(set(row["neg_categories"])) == 3
        assert np.array_equal(
            np.asarray(row["image"]), np.asarray(__import__("PIL.Image").Image.open(item.image))
        )
    # every negative description is the one of the negative image, itself of the negative category
    attribute_of = {row["image_id"]: row["attribute"] for row in stage1}
    for row in stage1:
        for category, attribute, image_id in zip(
            row["neg_categories"], row["neg_attributes"], row["neg_image_ids"]
        ):
            assert attribute_of[image_id] == attribute
            assert train.class_names[by_key[image_id].label] == category


def test_human_descriptions_keep_only_confident_present_attributes(cub):
    from finedefics_train.data.human import read_human_attributes

    lines = (cub / "attributes" / "image_attribute_labels.txt").read_text().splitlines()
    names = dict(line.split() for line in (cub.parent / "attributes.txt").read_text().splitlines())
    paths = dict(line.split() for line in (cub / "images.txt").read_text().splitlines())
    expected: dict[str, list[str]] = {}
    for line in lines:
        image_id, attribute_id, present, certainty, _ = line.split()
        if present == "1" and int(certainty) >= 3:
            expected.setdefault(f"images/{paths[image_id]}", []).append(names[attribute_id])
    assert read_human_attributes(cub) == expected
    assert any(int(line.split()[3]) < 3 and line.split()[2] == "1" for line in lines)  # some are left out


def test_clip_negatives_are_the_direct_top3(human_run, cub, tiny_clip):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    _, out = human_run
    stage1 = datasets.load_from_disk(str(out / "stage1"))
    train = detect_and_read("bird200", cub, split="train")
    model, processor = CLIPModel.from_pretrained(tiny_clip), CLIPProcessor.from_pretrained(tiny_clip)
    texts = [f"an image of a {name.replace('_', ' ')}" for name in train.class_names]
    by_key = {f"bird200/{item.key}": item for item in train.items}
    with torch.no_grad():
        text = model.get_text_features(**processor(text=texts, return_tensors="pt", padding=True))
        text = torch.nn.functional.normalize(getattr(text, "pooler_output", text), dim=-1)
        for row in stage1:
            pixels = processor(
                images=[__import__("PIL.Image").Image.open(by_key[row["image_id"]].image).convert("RGB")],
                return_tensors="pt",
            )["pixel_values"]
            image = model.get_image_features(pixel_values=pixels)
            image = torch.nn.functional.normalize(getattr(image, "pooler_output", image), dim=-1)
            scores = (image @ text.T)[0].tolist()
            ranked = [
                label
                for label in sorted(range(len(scores)), key=lambda i: -scores[i])
                if label != row["label"]
            ]
            assert row["neg_categories"] == [train.class_names[label] for label in ranked[:3]]


def test_stage2_mcq_prompts_are_the_evaluation_prompts(human_run, cub):
    _, out = human_run
    stage1 = {
        row["image_id"]: row for row in datasets.load_from_disk(str(out / "stage1")).remove_columns("image")
    }
    stage2 = datasets.load_from_disk(str(out / "stage2")).remove_columns("image")
    train = detect_and_read("bird200", cub, split="train")
    labels = {name: label for label, name in enumerate(train.class_names)}
    by_key = {f"bird200/{item.key}": item for item in train.items}
    types = [row["type"] for row in stage2]
    assert types.count("mcq") == round(0.5 * len(stage2)) and "open" in types
    answered_by = set()
    for row in stage2:
        if row["type"] == "open":
            assert (
                row["question"]
                == OPEN_QUESTION.format(superclass="bird")
                == "What is the name of the bird in this image?"
            )
            assert row["answer"] == row["category"] and row["options"] == []
            continue
        first = stage1[row["image_id"]]
        names = [first["category"], *first["neg_categories"]]
        asked = order_options(by_key[row["image_id"]], names, [labels[n] for n in names], seed=0)
        assert row["options"] == list(asked.options)
        # what the evaluation's lmms-eval hooks show and expect for the same prepared document
        doc = {"question": question_for(get_task("bird200").noun), "options": row["options"],
               "answer_index": row["options"].index(row["category"])}  # fmt: skip
        if row["answer"] == row["category"]:  # the option-name prompt, what loglik_name scores
            assert (
                row["question"]
                == hooks.doc_to_text_name(doc)
                == render_question(doc["question"], asked.options, NAME_INSTRUCTION)
            )
            assert row["category"] in hooks.doc_to_choice_names(doc)
            answered_by.add("name")
        else:  # the letter prompt, what generate and loglik score
            assert (
                row["question"] == hooks.doc_to_text(doc) == render_question(doc["question"], asked.options)
            )
            assert row["answer"] == hooks.doc_to_target(doc) == "ABCD"[doc["answer_index"]]
            answered_by.add("letter")
    assert answered_by == {"name", "letter"}  # both evaluation prompts are trained


def test_csv_export_in_the_reference_format(human_run):
    _, out = human_run
    stage1 = datasets.load_from_disk(str(out / "stage1")).remove_columns("image")
    with (out / "stage1.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(stage1)
    for row, first in zip(rows, stage1):
        assert row["neg_category"].split("\t\n") == first["neg_categories"]
        assert row["neg_attribute"].split("\t\n") == first["neg_attributes"]
        assert Path(row["image_path"]).is_file()
        # Stage I's turn is the one the trainer generates: the description, asked for by superclass
        assert (row["question"], row["answer"]) == stage_one_turn(first)
        assert row["question"] == f"Describe the {first['superclass']} in this image."
        assert row["answer"] == first["attribute"] != first["category"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["bird200"]["n_train"] == 15 and manifest["counts"]["stage1"] == len(stage1)
    assert {"transformers", "datasets"} <= set(manifest["package_versions"])


def test_human_needs_the_attribute_files(tmp_path, capsys):
    root = synthetic.make_cub(tmp_path / "cub", n_classes=4, with_attributes=False)
    code = main(
        [
            "train",
            "data",
            "bird200",
            "--source",
            str(root),
            "--attributes",
            "human",
            "--negatives",
            "random",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2 and "image_attribute_labels.txt" in capsys.readouterr().err


def test_overlap_stops_with_the_pairs_and_is_recorded_when_allowed(tmp_path, capsys):
    root = synthetic.make_cars(tmp_path / "cars", n_classes=4, per_class_test=1, per_class_train=1, seed=3)
    # Cars reuses file names across cars_train/ and cars_test/: without a planted copy there is no overlap
    pairs = synthetic.plant_overlap("car196", root, n=1)
    args = [
        "train",
        "data",
        "car196",
        "--source",
        str(root),
        "--attributes",
        "class-tags",
        "--llm",
        "hf:/nonexistent",
        "--negatives",
        "random",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "leakage" in error and pairs[0][0] in error and pairs[0][1] in error


def test_no_false_overlap_on_reused_file_names(tmp_path):
    from finedefics_train.data.sources import find_overlap, read_source

    root = synthetic.make_cars(tmp_path / "cars", n_classes=4, per_class_test=1, per_class_train=1, seed=3)
    source = read_source("car196", root)
    assert {Path(i.key).name for i in source.train.items} & {Path(i.key).name for i in source.test.items}
    assert find_overlap(source)[0] == []


@pytest.mark.parametrize("negatives", ["random", pytest.param("clip", marks=pytest.mark.slow)])
def test_llm_vqa_on_every_layout(tmp_path, tiny_chat, tiny_idefics2, tiny_clip, capsys, negatives):
    sources = []
    for task, make in MAKERS.items():
        root = make(tmp_path / task, n_classes=4, per_class_test=1, per_class_train=1, seed=4)
        sources += ["--source", f"{task}={root}"]
        if not get_task(task).names_in_archive:  # Flowers-102: names from the writer's class-name file
            sources += ["--classnames", f"{task}={tmp_path / task / synthetic.FLOWERS_CLASSNAMES}"]
    summary = run_cli(capsys, *MAKERS, *sources, "--attributes", "llm-vqa", "--llm", f"hf:{tiny_chat}",
                      "--vqa", f"model:idefics2,pretrained={tiny_idefics2}", "--negatives", negatives,
                      "--clip-model", f"hf:{tiny_clip}",
                      "--max-attributes", "1", "--llm-max-new-tokens", "12", "--vqa-max-new-tokens", "6",
                      "--out", str(tmp_path / "out"))  # fmt: skip
    stage1 = datasets.load_from_disk(str(tmp_path / "out" / "stage1")).remove_columns("image")
    assert summary["tasks"] == sorted(MAKERS) and summary["n_stage1"] + summary["left_out"] == 24
    assert {row["task"] for row in stage1} == set(MAKERS)
    for row in stage1:
        assert row["source"] == "llm-vqa" and row["attribute"].strip()
        assert row["category"] not in row["neg_categories"]


def test_allowed_overlap_is_recorded_and_class_tags_are_shared_per_class(tmp_path, tiny_chat, capsys):
    root = synthetic.make_cars(tmp_path / "cars", n_classes=4, per_class_test=1, per_class_train=2, seed=3)
    pairs = synthetic.plant_overlap("car196", root, n=1)
    summary = run_cli(capsys, "car196", "--source", str(root), "--attributes", "class-tags", "--llm", f"hf:{tiny_chat}",
                      "--llm-max-new-tokens", "8", "--negatives", "random", "--out", str(tmp_path / "out"),
                      "--allow-overlap")  # fmt: skip
    assert summary["overlap"] == [f"car196: test {pairs[0][0]} == train {pairs[0][1]}"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["overlap"]["pairs"][0]["train_key"] == pairs[0][1]
    assert manifest["stages"]["class-tags"]["asked"] == 4  # one request per class, not per image
    stage1 = datasets.load_from_disk(str(tmp_path / "out" / "stage1")).remove_columns("image")
    per_class: dict[str, set[str]] = {}
    for row in stage1:
        assert row["source"] == "class-tags"
        per_class.setdefault(row["category"], set()).add(row["attribute"])
    assert all(len(texts) == 1 for texts in per_class.values())


def test_limit_keeps_the_first_images_of_every_class(tmp_path):
    from finedefics_train.data.sources import read_source

    root = synthetic.make_aircraft(tmp_path, n_classes=4, per_class_test=1, per_class_train=3, seed=8)
    full, limited = read_source("aircraft102", root), read_source("aircraft102", root, limit=2)
    for label in range(4):
        expected = [i.key for i in full.train.items if i.label == label][:2]
        assert [i.key for i in limited.train.items if i.label == label] == expected
