"""Knowledge-QA tasks: the ImageWikiQA reader, banks, oracle questions, the CoT parser, and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core.errors import UserError
from tasks.answers import cot_letter
from tasks.fixtures.knowledge_qa import CLASSES, make_bank, make_imagenet_val, make_imagewikiqa
from tasks.knowledge_qa import (
    ImageIndex,
    load_qa_questions,
    oracle_question,
    parse_question_text,
    qa_variant,
    read_question_file,
)
from tasks.registry import get_task

TEXT = "Which position is used for this object?\nA. Fowler's\nB. Upright\nC. Trendelenburg\nD. Flat\nChoose A, B, C, or D."


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("qa")
    return make_imagenet_val(root, per_class=1), make_imagewikiqa(root / "imagewikiqa.jsonl", per_class=1)


def test_released_text_is_parsed_into_question_and_options():
    question, options = parse_question_text(TEXT, "f line 1")
    assert question == "Which position is used for this object?"
    assert options == ("Fowler's", "Upright", "Trendelenburg", "Flat")
    with pytest.raises(UserError, match="f line 3: .*found 3 options"):
        parse_question_text("Q?\nA. a\nB. b\nC. c\nChoose A, B, C, or D.", "f line 3")


def test_question_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text(
        json.dumps({"image": "images/x.JPEG", "text": TEXT, "label": "C", "classname": "stretcher"})
        + "\n"
        + json.dumps({"image": "images/y.JPEG", "text": TEXT, "label": "E", "classname": "stretcher"})
        + "\n"
    )
    with pytest.raises(UserError, match=r"q.jsonl line 2: `label` must be one of A, B, C, D"):
        read_question_file(bad)
    first_release = tmp_path / "old.jsonl"
    first_release.write_text(
        json.dumps(
            {
                "image": "./val/n1/a.JPEG",
                "text": TEXT,
                "label": "C",
                "question_id": "hen of the woods_C_question670_image7",
            }
        )
        + "\n"
    )
    (record,) = read_question_file(first_release, require_image=True)
    assert (record.classname, record.answer_index, record.wiki) == ("hen of the woods", 2, "")


def test_images_are_found_by_name_flat_or_in_synset_folders(tmp_path, qa_data):
    val, questions = qa_data
    flat = make_imagenet_val(tmp_path / "flat", per_class=1, flat=True)
    for root in (val, flat):
        found, names, skipped = load_qa_questions(get_task("imagewikiqa"), root, questions)[:3]
        assert [q.item.image.name for q in found] == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in (1, 2, 3)]
        assert sorted(names) == names and {names[q.item.label] for q in found} == {c for _, c in CLASSES}
    (flat / "n0").mkdir()
    (flat / "n0" / "ILSVRC2012_val_00000001.JPEG").write_bytes(
        (flat / "ILSVRC2012_val_00000001.JPEG").read_bytes()
    )
    with pytest.raises(UserError, match="found 2 times"):
        ImageIndex(flat).find("images/ILSVRC2012_val_00000001.JPEG", "q line 1")
    with pytest.raises(UserError, match="line 1: image ILSVRC2012_val_00000001.JPEG is not under"):
        load_qa_questions(
            get_task("imagewikiqa"),
            tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None,
            questions,
        )


def test_bank_asks_every_test_image_of_its_class(tmp_path, cub_root):
    from tasks.fixtures.datasets import BIRDS

    bank = make_bank(tmp_path / "bank.jsonl", BIRDS[:2], per_class=2)
    questions, names, _, source = load_qa_questions(get_task("bird200_wikiqa"), cub_root, bank)
    split = get_task("bird200").read(cub_root)
    per_class = split.class_counts()
    assert len(questions) == 2 * (per_class[BIRDS[0]] + per_class[BIRDS[1]])
    assert all(names[q.item.label] == q.record.classname for q in questions) and source.endswith("+qa-bank")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"text": TEXT, "label": "A", "classname": "Dodo"}) + "\n")
    with pytest.raises(UserError, match="wrong.jsonl line 1: class 'Dodo' is not a bird200 class"):
        load_qa_questions(get_task("bird200_wikiqa"), cub_root, wrong)


def test_oracle_names_the_class():
    assert (
        oracle_question("What is the coat of this object's puppies?", "Welsh_Springer")
        == "What is the coat of this Welsh Springer's puppies?"
    )
    assert (
        oracle_question("Where does it live?", "jacamar")
        == "The object in the image is a jacamar. Where does it live?"
    )


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("The stretcher is tilted, so the answer is (C).", "C"),
        ("Patients in shock are raised. Answer: B", "B"),
        ("A stretcher carries patients... I would pick C. Trendelenburg", "C"),
        ("A stretcher in shock care uses the trendelenburg position.", "C"),
        ("(A) is wrong because... (D) fits best", "D"),
        ("A stretcher is a device for carrying people.", None),
        ("", None),
    ],
)
def test_cot_parser(answer, letter):
    assert cot_letter(answer, ("Fowler's", "Upright", "Trendelenburg", "Flat")) == letter


def test_variants_and_task_names():
    assert qa_variant("k4", "loglik") == "direct" and qa_variant("oracle_cot", "generate") == "oracle_cot"
    with pytest.raises(UserError, match="chain of thought"):
        qa_variant("cot", "loglik")
    with pytest.raises(UserError, match="knowledge-QA tasks take direct, cot"):
        qa_variant("k5", "generate")
    assert get_task("imagewikiqa").lmms_task_name("loglik", "oracle") == "fgvr_imagewikiqa_oracle_loglik"
    with pytest.raises(UserError, match="Did you mean 'imagewikiqa'"):
        get_task("imagewikqa")


def test_cot_outcome_is_read_with_the_cot_parser():
    from tasks.scoring import score_row

    row = {
        "options": ["x", "y", "z", "w"],
        "answer_index": 2,
        "label": 0,
        "group": 0,
        "class_name": "stretcher",
        "protocol": "cot",
    }
    right = score_row(row, ["Long reasoning. The answer is C."], "generate")
    vague = score_row(row, ["Can't tell."], "generate")
    assert right.correct and right.robust_correct
    assert (
        vague.predicted is None and vague.unparseable and not vague.correct and vague.robust_correct is False
    )
    assert (
        right.predicted_label is None
    )  # a knowledge-QA option is an answer, not a class (no confusion pair)


def _run(model_path, task, root, questions, *extra) -> dict:
    from harness.cli import build_parser, cmd_run

    argv = [
        "run",
        "--model",
        "idefics2",
        "--model-args",
        f"pretrained={model_path},dtype=float32,device=cpu",
        "--task",
        task,
        "--data-root",
        str(root),
        "--questions",
        str(questions),
        "--no-record",
        "--batch-size",
        "4",
        *extra,
    ]
    args = build_parser().parse_args(argv)
    args.argv = argv
    assert cmd_run(args) == 0
    run_dir = max(
        (Path(__import__("os").environ["HARNESS_HOME"]) / "runs").glob(f"idefics2__{task}-*"),
        key=lambda p: p.stat().st_mtime,
    )
    return json.loads((run_dir / "summary.json").read_text())


def _lmms_accuracy(summary: dict) -> float:
    results = json.loads(Path(summary["results_file"]).read_text())["results"][summary["lmms_task"]]
    return results["accuracy,none"]


@pytest.mark.parametrize("scoring", ["generate", "loglik"])
def test_imagewikiqa_runs_from_the_released_format(tiny_idefics2, qa_data, scoring):
    val, questions = qa_data
    summary = _run(tiny_idefics2, "imagewikiqa", val, questions, "--scoring", scoring)
    assert (
        summary["n"] == 3 and summary["variant"] == "direct" and summary["option_source"] == "question_file"
    )
    assert summary["accuracy"] == pytest.approx(_lmms_accuracy(summary))  # our outcomes = lmms-eval's metric
    assert set(summary["per_class_accuracy"]) == {name for _, name in CLASSES}  # per class, not per answer
    samples = [json.loads(line) for line in Path(summary["samples_file"]).read_text().splitlines()]
    assert samples[0]["arguments"][0].startswith(
        "What does this object mainly eat in winter?\nChoices:\nA. Seeds"
    )


def test_bank_runs_with_its_oracle_score(tiny_idefics2, cub_root, tmp_path):
    from tasks.fixtures.datasets import BIRDS

    bank = make_bank(tmp_path / "bank.jsonl", BIRDS[:2], per_class=1)
    summary = _run(
        tiny_idefics2, "bird200_wikiqa", cub_root, bank, "--scoring", "loglik", "--variant", "oracle"
    )
    assert summary["task"] == "bird200_wikiqa" and summary["variant"] == "oracle" and summary["n"] == 4
    assert summary["accuracy"] == pytest.approx(_lmms_accuracy(summary))
    from datasets import load_from_disk

    rows = load_from_disk(str(Path(summary["option_source_detail"]["prepared"]) / "data"))["test"]
    assert all(f"this {BIRDS[r['label']].replace('_', ' ')}" in r["question"] for r in rows)


@pytest.mark.slow  # chain-of-thought generation runs to 1,024 new tokens on the random tiny model
def test_imagewikiqa_cot_protocol_end_to_end(tiny_idefics2, qa_data):
    """The default protocol of chain of thought is VLMClassifier's: the question without the trigger
    (the wrapper opens the assistant's turn with it), its parser with the seeded guess, ours beside."""
    import random

    from harness.core.protocols import VLMCLASSIFIER_SEED
    from tasks.answers import cot_letter as parse
    from tasks.scoring import mmmu_letter

    val, questions = qa_data
    summary = _run(tiny_idefics2, "imagewikiqa", val, questions, "--variant", "cot")
    assert summary["protocol"] == "vlmclassifier"
    samples = sorted(
        (json.loads(line) for line in Path(summary["samples_file"]).read_text().splitlines()),
        key=lambda s: s["doc_id"],
    )
    assert all(s["arguments"][0].endswith("Choose A, B, C, or D.") for s in samples)
    guesses, right, ours = random.Random(VLMCLASSIFIER_SEED), 0, 0
    for s in samples:
        response, options = s["resps"][0][0], s["doc"]["options"]
        letter = mmmu_letter(response, options) or guesses.choice("ABCD")
        right += letter == "ABCD"[s["doc"]["answer_index"]]
        ours += parse(response, options) == "ABCD"[s["doc"]["answer_index"]]
    assert (
        summary["accuracy"] == pytest.approx(right / len(samples)) == pytest.approx(_lmms_accuracy(summary))
    )
    assert summary["robust_accuracy"] == pytest.approx(ours / len(samples))


def test_prepare_and_data_info_take_questions(qa_data, capsys):
    from harness.cli import main

    val, questions = qa_data
    assert (
        main(["data", "info", "imagewikiqa", "--source", str(val), "--questions", str(questions), "--json"])
        == 0
    )
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (info["n_questions"], info["n_classes"]) == (3, 3)
    assert info["items"][0]["options"][0] == "Seeds of beech trees" and info["items"][0]["answer"] == "A"
    argv = [
        "prepare",
        "imagewikiqa",
        "--source",
        str(val),
        "--questions",
        str(questions),
        "--variant",
        "oracle_cot",
    ]
    assert main([*argv, "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert prepared["variant"] == "oracle_cot" and prepared["lmms_tasks"] == {
        "gen": "fgvr_imagewikiqa_oracle_cot_gen"
    }
    assert main(["prepare", "imagewikiqa", "--source", str(val)]) == 2  # no --questions


def test_qa_prepared_json_is_a_typed_record_and_the_cache_reads_it_back(qa_data, tmp_path):
    from tasks.knowledge_qa import prepare_qa_task
    from tasks.prepare import META_FILE, PreparedMeta

    val, questions = qa_data
    task = get_task("imagewikiqa")
    first = prepare_qa_task(task, val, questions, variant="oracle", cache_root=tmp_path)
    on_disk = json.loads((first.path / META_FILE).read_text())
    assert on_disk["option_source"] == "question_file" and on_disk["choice_file"] == str(questions)
    assert on_disk["n_question_records"] == 3 == first.n_questions
    assert PreparedMeta.read(first.path) == first.meta
    again = prepare_qa_task(task, val, questions, variant="oracle", cache_root=tmp_path)
    assert again.path == first.path and again.meta == first.meta and again.variant == "oracle"
    assert {"protocol", "wiki", "source"} <= set(again.load().column_names)


def test_qa_tasks_are_rows_of_the_task_table():
    from leaderboard import spec
    from tasks.registry import FGVR_TASKS, TASKS

    qa = {key: task for key, task in TASKS.items() if task.kind == "qa"}
    assert set(qa) == {"imagewikiqa", *(f"{key}_wikiqa" for key in FGVR_TASKS)}
    wiki, bank = qa["imagewikiqa"], qa["bird200_wikiqa"]
    assert (wiki.base, wiki.column, wiki.n_classes, wiki.n_test) == (None, "ImageWikiQA", 1000, 2000)
    assert (bank.base, bank.column, bank.n_classes) == ("bird200", "Bird-200 QA", 200)
    assert not any(task.in_average for task in qa.values())
    assert bank.lmms_task_name("generate") == "fgvr_bird200_wikiqa_gen"  # direct: no middle part
    assert [c.key for c in spec.QA_COLUMNS] == ["imagewikiqa", *(f"{key}_wikiqa" for key in spec.TASK_KEYS)]
    assert all(c.main_variant == "direct" and not c.in_average for c in spec.QA_COLUMNS)
    with pytest.raises(
        UserError, match="bird200_wikiqa is a knowledge-QA task: its questions come from --questions"
    ):
        bank.read(Path("."))
