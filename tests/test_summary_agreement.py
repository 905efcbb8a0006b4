"""The summary's accuracy is lmms-eval's `accuracy` for the same samples, whatever form the choice file's names take."""

from __future__ import annotations

import json

import pytest

from harness.cli import main


@pytest.fixture(scope="module")
def display_name_choices(cub_choices, tmp_path_factory):
    """The CUB choice file with every class name written as a display name ('Black footed Albatross')."""
    entries = json.loads(cub_choices.read_text())

    def shown(name: str) -> str:
        return name.split(".", 1)[-1].replace("_", " ")

    renamed = {
        shown(cls): [
            {**e, "options": [shown(o) for o in e["options"]], "groundtruth": shown(e["groundtruth"])}
            for e in rows
        ]
        for cls, rows in entries.items()
    }
    path = tmp_path_factory.mktemp("choices") / "bird-200-display.json"
    path.write_text(json.dumps(renamed))
    return path


@pytest.mark.parametrize("scoring", ["loglik", "generate"])
def test_summary_accuracy_equals_lmms_eval_accuracy(
    capsys, tmp_path, tiny_idefics2, cub_root, display_name_choices, scoring
):
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny_idefics2},device=cpu",
        "--data-root",
        str(cub_root),
        "--choices",
        str(display_name_choices),
        "--scoring",
        scoring,
        "--batch-size",
        "4",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(args) == 0, capsys.readouterr().err
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads(open(line["summary_file"]).read())
    results = json.loads(open(line["results_file"]).read())["results"][summary["lmms_task"]]
    samples = [json.loads(row) for row in open(line["samples_file"])]
    assert summary["n"] == len(samples) == 10
    assert summary["accuracy"] == pytest.approx(results["accuracy,none"])
    # and both equal a direct reading of the responses
    if scoring == "loglik":
        picked = [min(range(4), key=lambda i: s["filtered_resps"][i][0]) for s in samples]
        direct = sum(p == s["doc"]["answer_index"] for p, s in zip(picked, samples)) / len(samples)
        assert direct > 0, "the fixture must have some right answers for this test to mean anything"
    else:
        letters = "ABCD"
        direct = sum(
            s["filtered_resps"][0].strip()[:1].upper() == letters[s["doc"]["answer_index"]] for s in samples
        ) / len(samples)
    assert summary["accuracy"] == pytest.approx(direct)


@pytest.mark.parametrize("scoring", ["loglik", "generate"])
def test_a_request_that_raises_is_counted_as_an_error(
    capsys, monkeypatch, tmp_path, tiny_idefics2, cub_root, cub_choices, scoring
):
    """One question's request raises in the wrapper: the run completes, `errors` counts it, and it is
    neither unparseable nor silently a wrong answer of some option."""
    from models.idefics2 import Idefics2FGVR

    method = "generate_batch" if scoring == "generate" else "_score_naive"
    original = getattr(Idefics2FGVR, method)

    def fails_on_doc_0(self, batch):
        if any(request.doc_key[2] == 0 for request in batch):
            raise RuntimeError("CUDA out of memory")
        return original(self, batch)

    monkeypatch.setattr(Idefics2FGVR, method, fails_on_doc_0)
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny_idefics2},device=cpu,shared_prefix=false",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--scoring",
        scoring,
        "--batch-size",
        "4",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(args) == 0, capsys.readouterr().err
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads(open(line["summary_file"]).read())
    results = json.loads(open(line["results_file"]).read())["results"][summary["lmms_task"]]
    assert summary["errors"] == line["errors"] == 1 and summary["n"] == 10
    assert results["errors,none"] == pytest.approx(0.1)
    assert summary["accuracy"] == pytest.approx(results["accuracy,none"])
    failed = [json.loads(row) for row in open(line["samples_file"]) if json.loads(row)["doc_id"] == 0][0]
    assert failed["accuracy"]["score"] == 0.0 and failed["errors"] == 1 and failed.get("unparseable", 0) == 0


def test_circular_accuracy_counts_questions_in_both(capsys, tmp_path, tiny_idefics2, cub_root, cub_choices):
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny_idefics2},device=cpu",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--scoring",
        "loglik",
        "--circular",
        "--batch-size",
        "4",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(args) == 0, capsys.readouterr().err
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads(open(line["summary_file"]).read())
    results = json.loads(open(line["results_file"]).read())["results"][summary["lmms_task"]]
    samples = [json.loads(row) for row in open(line["samples_file"])]
    assert (summary["n"], summary["n_rows"], len(samples)) == (10, 40, 40)
    right: dict[int, bool] = {}
    for s in samples:
        picked = min(range(4), key=lambda i: s["filtered_resps"][i][0])
        right[s["doc"]["group"]] = right.get(s["doc"]["group"], True) and picked == s["doc"]["answer_index"]
    assert (
        summary["accuracy"]
        == pytest.approx(results["accuracy,none"])
        == pytest.approx(sum(right.values()) / 10)
    )
