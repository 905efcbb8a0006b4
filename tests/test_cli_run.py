"""`harness run` end to end on the tiny Idefics2 and a synthetic CUB layout, and every user error."""

from __future__ import annotations

import json

import pytest

from harness.cli import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _base(tiny, cub, choices, scoring: str, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny},dtype=float32,device=cpu",
        "--data-root",
        str(cub),
        "--choices",
        str(choices),
        "--scoring",
        scoring,
        "--json",
        "--no-record",
        *extra,
    ]


def _n_choice_questions(choices) -> int:
    return sum(len(entries) for entries in json.loads(choices.read_text()).values())


@pytest.mark.parametrize("scoring", ["generate", "loglik"])
def test_run_end_to_end(capsys, tmp_path, tiny_idefics2, cub_root, cub_choices, scoring):
    code, out, err = _run(
        capsys,
        *_base(
            tiny_idefics2, cub_root, cub_choices, scoring, "--output-dir", str(tmp_path), "--batch-size", "2"
        ),
    )
    assert code == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["model"] == "idefics2" and line["task"] == "bird200" and line["scoring"] == scoring
    assert line["n"] == _n_choice_questions(cub_choices)
    assert 0.0 <= line["accuracy"] <= 1.0
    summary = json.loads(open(line["summary_file"]).read())
    assert summary["option_source"] == "choice_file"
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict) and k != "confusions"}
    assert {k: v for k, v in line.items() if k != "summary_file"} == flat  # every flat field, nothing nested
    assert summary["provenance"]["packages"]["lmms_eval"]
    assert summary["provenance"]["batch_size"] == 2
    assert summary["task_version"] and summary["model_revision"].startswith("local-sha256:")
    assert sum(1 for _ in open(line["samples_file"])) == line["n"]
    results = json.loads(open(line["results_file"]).read())
    assert f"fgvr_bird200_{'gen' if scoring == 'generate' else 'loglik'}" in results["results"]
    assert "accuracy" in out  # the readable table


def test_loglik_is_reproducible_with_the_same_seed(capsys, tmp_path, tiny_idefics2, cub_root, cub_choices):
    lines = []
    for attempt in range(2):
        code, out, err = _run(
            capsys,
            *_base(
                tiny_idefics2,
                cub_root,
                cub_choices,
                "loglik",
                "--output-dir",
                str(tmp_path / str(attempt)),
                "--seed",
                "3",
            ),
        )
        assert code == 0, err
        lines.append(json.loads(out.strip().splitlines()[-1]))
    samples = [[json.loads(row)["resps"] for row in open(line["samples_file"])] for line in lines]
    assert samples[0] == samples[1]
    assert lines[0]["accuracy"] == lines[1]["accuracy"]


def test_random_negatives_without_a_choice_file(capsys, tmp_path, tiny_idefics2, cub_root):
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny_idefics2}",
        "--data-root",
        str(cub_root),
        "--scoring",
        "loglik",
        "--limit",
        "3",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
    ]
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["n"] == 3 and line["option_source"] == "random"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--model", "idefics"), "unknown model 'idefics'. Did you mean 'idefics2'?"),
        (("--task", "bird20"), "unknown task 'bird20'. Did you mean 'bird200'?"),
        (("--data-root", "/no/such/CUB_200_2011"), "--data-root /no/such/CUB_200_2011 does not exist"),
        (
            ("--model-args", "pretrained=SomeOrg/not-cached-model"),
            "'SomeOrg/not-cached-model' are not available offline",
        ),
        (("--model-args", "pretrained"), "'pretrained' is not key=value"),
        (("--choices", "/no/such/choices.json"), "--choices /no/such/choices.json does not exist"),
    ],
)
def test_user_errors_exit_2_with_a_clear_message(
    capsys, tiny_idefics2, cub_root, cub_choices, change, message
):
    args = _base(tiny_idefics2, cub_root, cub_choices, "generate")
    flag, value = change
    args[args.index(flag) + 1] = value
    code, _, err = _run(capsys, *args)
    assert code == 2
    assert message in err


def test_hub_error_names_pretrained(capsys, tiny_idefics2, cub_root, cub_choices):
    args = _base(tiny_idefics2, cub_root, cub_choices, "generate")
    args[args.index("--model-args") + 1] = "dtype=float32"  # default hub id, not cached here
    code, _, err = _run(capsys, *args)
    assert code == 2
    assert "HuggingFaceM4/idefics2-8b" in err and "pretrained=" in err


def test_malformed_choice_file_names_the_entry(capsys, tmp_path, tiny_idefics2, cub_root, cub_choices):
    data = json.loads(cub_choices.read_text())
    first_class = next(iter(data))
    data[first_class][1]["options"] = "not a list"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, _, err = _run(capsys, *_base(tiny_idefics2, cub_root, bad, "generate"))
    assert code == 2
    assert "bad.json" in err and first_class in err and "entry 1" in err.replace("entry #1", "entry 1")


def test_model_crash_is_an_evaluation_failure(
    capsys, monkeypatch, tmp_path, tiny_idefics2, cub_root, cub_choices
):
    from models.idefics2 import Idefics2FGVR

    def crash(self, batch):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(Idefics2FGVR, "generate_batch", crash)
    code, out, err = _run(
        capsys, *_base(tiny_idefics2, cub_root, cub_choices, "generate", "--output-dir", str(tmp_path))
    )
    assert code == 1
    assert "device-side assert" in err
    assert not list(tmp_path.glob("*/summary.json"))


def test_corrupt_checkpoint_is_reported(capsys, tmp_path, tiny_idefics2, cub_root, cub_choices):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in tiny_idefics2.iterdir():
        if file.is_file() and file.suffix != ".safetensors":
            (broken / file.name).write_bytes(file.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    code, _, err = _run(capsys, *_base(broken, cub_root, cub_choices, "generate"))
    assert code != 0
    assert "broken" in err


def test_task_path_pairs_pick_the_running_task(capsys, tmp_path, tiny_idefics2, cub_root, cub_choices):
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny_idefics2}",
        "--data-root",
        "car196=/no/cars",
        "--data-root",
        f"bird200={cub_root}",
        "--choices",
        f"bird200={cub_choices}",
        "--scoring",
        "loglik",
        "--limit",
        "2",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
    ]
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["option_source"] == "choice_file"
    code, _, err = _run(capsys, *[a if a != "car196=/no/cars" else "carr196=/no/cars" for a in args])
    assert code == 2 and "Did you mean 'car196'?" in err


def test_a_run_is_recorded_by_the_leaderboard_plugin_unless_no_record(
    capsys, tmp_path, tiny_idefics2, cub_root, cub_choices
):
    """`harness run` never imports the leaderboard: its plugin's `after_run` hook records the run."""
    from leaderboard.store import ResultStore

    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    args = [a for a in _base(tiny_idefics2, cub_root, cub_choices, "loglik") if a != "--no-record"]
    code, _, err = _run(
        capsys, *args, "--limit", "2", "--output-dir", str(tmp_path / "a"), "--db-url", db_url
    )
    assert code == 0, err
    code, _, err = _run(
        capsys, *args, "--limit", "2", "--output-dir", str(tmp_path / "b"), "--db-url", db_url, "--no-record"
    )
    assert code == 0, err
    frame = ResultStore.open(db_url).result_frame()
    recorded = frame[frame["source"] == "reproduced"]
    assert len(recorded) == 1 and list(recorded["task"]) == ["bird200"]  # the --no-record run is not there


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        ("dtyp=bfloat16", "unknown --model-args for idefics2: dtyp. Known: pretrained, revision, dtype"),
        ("dtype=bfloat61", "dtype=bfloat61 is not supported; use one of auto, float32, bfloat16, float16"),
        ("load_in_4bit=ture", "load_in_4bit=ture is not true or false"),
    ],
)
def test_bad_model_args_fail_when_the_run_is_planned_before_any_data_work(
    capsys, monkeypatch, tiny_idefics2, cub_root, model_args, message
):
    import harness.runner

    def never(*args, **kwargs):
        raise AssertionError("data preparation started before the model args were checked")

    monkeypatch.setattr(harness.runner, "read_split", never)
    monkeypatch.setattr(harness.runner, "prepare_task", never)
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny_idefics2},{model_args}",
        "--data-root",
        str(cub_root),
        "--options",
        "clip",
        "--no-record",
    ]
    code, _, err = _run(capsys, *args)
    assert code == 2 and message in err, err


def test_finedefics_adapter_args_are_known(capsys, monkeypatch, tiny_idefics2, cub_root):
    from harness.config import RunConfig
    from harness.runner import plan_run

    config = RunConfig(
        model="finedefics",
        task="bird200",
        data_root=cub_root,
        options="random",
        model_args={"pretrained": str(tiny_idefics2), "merge_adapter": "false", "adapter_typo": "x"},
    )
    with pytest.raises(
        Exception, match="unknown --model-args for finedefics: adapter_typo. Known: .*adapter, merge_adapter"
    ):
        plan_run(config)
