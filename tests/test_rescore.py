"""`harness rescore` and the protocol in a run's identity: a real tiny run (tiny Idefics2, synthetic CUB)
re-read under another protocol without a model, and FOCI-Benchmark result files read as responses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.results import load_summary
from models.registry import MODELS
from tasks.scoring import foci_answer, foci_letter, paper_letter


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _run_args(tiny, cub, choices, *extra: str) -> list[str]:
    return [
        "run", "--model", "idefics2", "--task", "bird200",
        "--model-args", f"pretrained={tiny},dtype=float32,device=cpu",
        "--data-root", str(cub), "--choices", str(choices), "--json", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory, tiny_idefics2, cub_root, cub_choices):
    """One generated run of the tiny Idefics2 under the default protocol, recorded in a store."""
    folder = tmp_path_factory.mktemp("rescore")
    db_url = f"sqlite:///{folder / 'store.db'}"
    args = _run_args(tiny_idefics2, cub_root, cub_choices, "--scoring", "generate", "--limit", "4")
    code = main([*args, "--output-dir", str(folder / "runs"), "--db-url", db_url])
    assert code == 0
    (run_dir,) = (folder / "runs").iterdir()
    return run_dir, db_url


def test_a_runs_summary_results_and_leaderboard_row_name_their_protocol(harness_run):
    from leaderboard.store import ResultStore

    run_dir, db_url = harness_run
    summary = load_summary(run_dir)
    assert summary["protocol"] == "harness" and summary["schema_version"] == 3
    assert "-harness__" in run_dir.name
    results = json.loads(Path(summary["results_file"]).read_text())
    assert results["config"]["protocol"] == "harness"
    frame = ResultStore.open(db_url).result_frame()
    assert list(frame[frame["source"] == "reproduced"]["protocol"]) == ["harness"]


def test_rescore_round_trip_on_a_real_run(capsys, harness_run):
    run_dir, _ = harness_run
    original = load_summary(run_dir)
    samples = [json.loads(line) for line in Path(original["samples_file"]).read_text().splitlines()]
    # the same protocol gives the run's own numbers back
    code, out, err = _run(capsys, "rescore", str(run_dir), "--protocol", "harness", "--json")
    assert code == 0, err
    same = json.loads(out.strip().splitlines()[-1])
    assert same["protocol"] == "harness" and same["n"] == original["n"]
    assert same["accuracy"] == original["accuracy"]
    assert set(same) >= {"summary", "records", "protocol", "n", "accuracy"}
    # foci: each record is FOCI's reading of the logged response, computed here directly
    code, out, err = _run(capsys, "rescore", str(run_dir), "--protocol", "foci", "--json")
    assert code == 0, err
    foci = json.loads(out.strip().splitlines()[-1])
    recipe = MODELS["idefics2"].foci
    records = [json.loads(line) for line in Path(foci["records"]).read_text().splitlines()]
    assert len(records) == len(samples) == original["n_rows"]
    for record, sample in zip(records, sorted(samples, key=lambda s: s["doc_id"])):
        response = sample["filtered_resps"][0]
        expected = foci_letter(foci_answer(response, recipe), len(sample["doc"]["options"]))
        gold = "ABCDEFGHIJ"[sample["doc"]["answer_index"]]
        assert record["doc_id"] == sample["doc_id"] and record["response"] == response
        assert record["letter"] == expected and record["correct"] == (expected == gold)
    rescored = load_summary(Path(foci["summary"]))
    assert rescored["protocol"] == "foci" and rescored["rescored_from"] == str(run_dir / "summary.json")
    assert rescored["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / len(records))
    assert load_summary(run_dir)["protocol"] == "harness"  # the old summary is kept as it was
    assert Path(foci["summary"]).parent == run_dir


def test_harness_import_takes_the_rescored_summary_as_its_own_row(capsys, harness_run, tmp_path):
    from leaderboard.importer import import_path
    from leaderboard.store import ResultStore

    run_dir, _ = harness_run
    assert main(["rescore", str(run_dir), "--protocol", "foci"]) == 0
    store = ResultStore.open(f"sqlite:///{tmp_path / 'store.db'}")
    report = import_path(store, run_dir)
    rescored = sorted(run_dir.glob("summary.rescored-*.json"))  # this test's and any earlier test's
    assert report.added == 1 + len(rescored) and not report.refused
    frame = store.result_frame()
    reproduced = frame[frame["source"] == "reproduced"]
    assert set(reproduced["protocol"]) == {"foci", "harness"}
    assert len(reproduced[reproduced["protocol"] == "foci"]) == 1


def test_rescore_refuses_what_a_protocol_cannot_read(capsys, harness_run, tmp_path):
    run_dir, _ = harness_run
    code, _, err = _run(capsys, "rescore", str(run_dir), "--protocol", "vlmclassifier")
    assert code == 2 and "chain-of-thought" in err
    code, _, err = _run(capsys, "rescore", str(tmp_path / "nothing.txt"), "--protocol", "foci")
    assert code == 2 and "neither a run folder nor a FOCI result" in err


# ---- FOCI-Benchmark result files ------------------------------------------------------------------

# Our own small file in the shape of FOCI-Benchmark/results/mc/*.json: `options` in the shuffled
# order the question showed them (A, B, C, D), `correct` the right option's name, `predicted_raw`
# the answer after the model class's post-processing, `predicted` its option or "NA ### ...".
FOCI_PREDICTIONS = [
    ("1.jpg", "B", ["Gull", "Tern", "Crow", "Wren"], "Tern"),  # right
    ("2.jpg", "C. Crow", ["Crow", "Gull", "Crow2", "Wren"], "Crow"),  # says C: wrong (Crow is A)
    ("3.jpg", "a", ["Wren", "Tern", "Gull", "Crow"], "Wren"),  # lower-case letter: right
    ("4.jpg", "The bird is a tern", ["Tern", "Gull", "Crow", "Wren"], "Tern"),  # "t": no letter
    ("5.jpg", " D", ["Gull", "Tern", "Crow", "Wren"], "Wren"),  # a leading space: no letter under foci
]


def write_foci_file(path: Path) -> Path:
    predictions = []
    for image, raw, options, correct in FOCI_PREDICTIONS:
        letter = foci_letter(raw, 4)
        predicted = options["ABCD".index(letter)] if letter else f"NA ### {raw}"
        predictions.append(
            {
                "image": image,
                "predicted": predicted,
                "predicted_raw": raw,
                "correct": correct,
                "options": options,
            }
        )
    right = sum(p["predicted"] == p["correct"] for p in predictions)
    failures = sum(p["predicted"].startswith("NA") for p in predictions)
    data = {
        "metrics": {"generation_failures": failures / 5, "accuracy": right / 5},
        "predictions": predictions,
        "config": {"dataset": "bird-200", "model": "/ckpt/idefics2-8b-merge", "task": "mc"},
    }
    path.write_text(json.dumps(data, indent=4))
    return path


def test_a_foci_result_file_is_read_as_responses_and_matches_its_metrics(capsys, tmp_path):
    source = write_foci_file(tmp_path / "bird-200--idefics2.json")
    code, out, err = _run(
        capsys, "rescore", str(source), "--protocol", "foci", "--model", "finedefics",
        "--output-dir", str(tmp_path / "runs"), "--json",
    )  # fmt: skip
    assert code == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    metrics = json.loads(source.read_text())["metrics"]
    assert line["accuracy"] == pytest.approx(metrics["accuracy"]) == pytest.approx(2 / 5)
    summary = load_summary(Path(line["summary"]))
    assert summary["task"] == "bird200" and summary["model"] == "finedefics" and summary["protocol"] == "foci"
    assert summary["unparseable"] == pytest.approx(metrics["generation_failures"] * 5)
    assert summary["per_class_accuracy"]["Tern"] == 0.5 and summary["per_class_accuracy"]["Wren"] == 0.5
    assert summary["position_bias"]["B"]["answered"] == 1 and summary["position_bias"]["A"]["gold"] == 3
    low, high = summary["accuracy_ci95"]
    assert low < 0.4 < high
    records = [json.loads(line) for line in Path(line["records"]).read_text().splitlines()]
    assert [r["letter"] for r in records] == ["B", "C", "A", None, None]
    # under harness the answer is stripped first: " D" is read as D (right)
    code, out, err = _run(
        capsys,
        "rescore",
        str(source),
        "--protocol",
        "harness",
        "--output-dir",
        str(tmp_path / "runs"),
        "--json",
    )
    assert code == 0, err
    harness = json.loads(out.strip().splitlines()[-1])
    expected = [paper_letter(raw, 4) == "ABCD"[o.index(c)] for _, raw, o, c in FOCI_PREDICTIONS]
    assert harness["accuracy"] == pytest.approx(sum(expected) / 5) == pytest.approx(3 / 5)


def test_a_foci_result_file_can_be_imported_into_the_leaderboard(capsys, tmp_path):
    from leaderboard.store import ResultStore

    source = write_foci_file(tmp_path / "bird-200--idefics2.json")
    code, out, err = _run(
        capsys, "rescore", str(source), "--protocol", "foci", "--model", "idefics2",
        "--output-dir", str(tmp_path / "runs"), "--json",
    )  # fmt: skip
    assert code == 0, err
    store = ResultStore.open(f"sqlite:///{tmp_path / 'store.db'}")
    assert store.record_summary(load_summary(Path(json.loads(out.strip().splitlines()[-1])["summary"])))
    frame = store.result_frame()
    row = frame[frame["source"] == "reproduced"].iloc[0]
    assert row["protocol"] == "foci" and row["accuracy"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read the FOCI result file"),
        ('{"metrics": {}}', "not a FOCI-Benchmark result file"),
        ('{"predictions": [{"image": "x"}]}', "predictions[0] lacks correct, options, predicted_raw"),
        (
            '{"predictions": [{"image": "x", "predicted_raw": "A", "correct": "Z", "options": ["A1"]}]}',
            "the correct answer is not among its options",
        ),
    ],
)
def test_a_malformed_foci_file_is_refused_naming_the_problem(capsys, tmp_path, content, message):
    source = tmp_path / "bad.json"
    source.write_text(content)
    code, _, err = _run(capsys, "rescore", str(source), "--protocol", "foci", "--task", "bird200")
    assert code == 2 and message in err and str(source) in err


def test_the_protocol_keys_the_response_journal(tiny_idefics2, cub_root, cub_choices, tmp_path):
    """Responses journalled under one protocol are never resumed under another."""
    from harness.config import RunConfig
    from harness.runner import journal_for, plan_run

    def journal(protocol):
        config = RunConfig(
            model="idefics2", task="bird200", model_args={"pretrained": str(tiny_idefics2)},
            data_root=cub_root, choices=cub_choices, protocol=protocol, output_dir=tmp_path,
        )  # fmt: skip
        return journal_for(plan_run(config)).path

    assert journal("harness") == journal(None) != journal("foci")


@pytest.mark.slow  # Idefics2 under foci generates up to 1,000 tokens: the random tiny model never stops
def test_a_foci_run_end_to_end(capsys, tmp_path, tiny_idefics2, cub_root, cub_choices):
    args = _run_args(tiny_idefics2, cub_root, cub_choices, "--scoring", "generate", "--limit", "2")
    code, out, err = _run(capsys, *args, "--protocol", "foci", "--no-record", "--output-dir", str(tmp_path))
    assert code == 0, err
    summary = load_summary(Path(json.loads(out.strip().splitlines()[-1])["summary_file"]))
    assert summary["protocol"] == "foci"
    results = json.loads(Path(summary["results_file"]).read_text())
    assert results["config"]["protocol"] == "foci"
    # lmms-eval's hooks read the answers under the same protocol as the summary
    assert results["results"][summary["lmms_task"]]["accuracy,none"] == pytest.approx(summary["accuracy"])
    samples = [json.loads(line) for line in Path(summary["samples_file"]).read_text().splitlines()]
    recipe = MODELS["idefics2"].foci
    right = {
        s["doc_id"]: foci_letter(foci_answer(s["filtered_resps"][0], recipe), 4)
        == "ABCD"[s["doc"]["answer_index"]]
        for s in samples
    }
    assert summary["accuracy"] == pytest.approx(sum(right.values()) / len(right))
