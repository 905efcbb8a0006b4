"""`--json`, the same for every command: stdout is exactly one JSON document (one line), and all other
output goes to stderr (harness.core.output). The commands are read from the parser, so a new command
with --json must get a row here."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import pytest

from harness.cli import build_parser, main


def json_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from json_commands(sub, (*path, name))
    if any("--json" in action.option_strings for action in parser._actions):
        yield path


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_idefics2, cub_root, cub_choices) -> dict:
    """What the commands run on, built lazily (the training inputs only for the slow rows)."""
    from tests.leaderboard.lb_factories import make_checkpoint, make_summary

    root = tmp_path_factory.mktemp("cli-json")
    summary = root / "imported" / "summary.json"
    summary.parent.mkdir()
    summary.write_text(json.dumps(make_summary()))
    make_checkpoint(root / "submissions" / "ft", weights="full")
    return {
        "root": root,
        "tiny": tiny_idefics2,
        "cub": cub_root,
        "choices": cub_choices,
        "db": f"sqlite:///{root / 'lb.db'}",
        "summary": summary.parent,
    }


def training(env: dict) -> dict:
    """Synthetic training data, a tiny base and one trained adapter (built once, for the slow rows)."""
    if "adapter" not in env:
        from finedefics_train.fixtures import build_training_base, make_training_data

        data = make_training_data(env["root"] / "synthetic", n_classes=3, per_class_train=2, per_class_test=1)
        env["data"], env["base"] = data, build_training_base(env["root"] / "base")
        env["adapter"] = env["root"] / "adapter"
        argv = ["train", "stage1", "--data", str(data.data_dir), "--base", str(env["base"]), "--out",
                str(env["adapter"]), "--config", "tiny_cpu", "--max-steps", "1", "--quiet"]  # fmt: skip
        assert main(argv) == 0
    return env


def train_args(env: dict, stage: str) -> list[str]:
    env = training(env)
    out = env["root"] / f"out-{stage}"
    return ["train", stage, "--data", str(env["data"].data_dir), "--base", str(env["base"]), "--out", str(out),
            "--config", "tiny_cpu", "--max-steps", "1", "--quiet"]  # fmt: skip


def build_qa_args(env: dict) -> list[str]:
    from tasks.registry import get_task
    from tests.test_build_qa import ScriptedLLM

    server = ScriptedLLM()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    knowledge = env["root"] / "knowledge.jsonl"
    names = get_task("bird200").read(env["cub"]).class_names[:2]
    knowledge.write_text("".join(json.dumps({"classname": n, "text": f"The bird {k} is fact one of this entry for sure."}) + "\n" for k, n in enumerate(names)))  # fmt: skip
    return ["probe", "build-qa", "bird200", "--source", str(env["cub"]), "--knowledge", str(knowledge), "--llm",
            f"openai:http://127.0.0.1:{server.server_port}#m", "--out", str(env["root"] / "bank.jsonl")]  # fmt: skip


def run_args(env: dict) -> list[str]:
    return ["run", "--model", "idefics2", "--task", "bird200", "--model-args",
            f"pretrained={env['tiny']},dtype=float32,device=cpu", "--data-root", str(env["cub"]), "--choices",
            str(env["choices"]), "--limit", "2", "--no-record"]  # fmt: skip


def probe_args(env: dict) -> list[str]:
    from tasks.fixtures.tiny_clip import build_tiny_clip

    clip = build_tiny_clip(env["root"] / "clip")
    return ["probe", "repr", "--model", f"clip:hf:{clip}", "--task", "bird200", "--data-root", str(env["cub"]),
            "--probes", "alignment", "--out", str(env["root"] / "probe"), "--no-record"]  # fmt: skip


def rescore_args(env: dict) -> list[str]:
    from tests.test_rescore import write_foci_file

    source = write_foci_file(env["root"] / "bird-200--idefics2.json")
    return ["rescore", str(source), "--protocol", "foci", "--model", "finedefics", "--output-dir",
            str(env["root"] / "rescored")]  # fmt: skip


slow = pytest.mark.slow
COMMANDS = {
    ("rescore",): rescore_args,
    ("export",): lambda env: [
        "export",
        "finedefics",
        "--format",
        "every-eval-ever",
        "--out",
        str(env["root"] / "eee"),
        "--db-url",
        env["db"],
    ],  # fmt: skip
    ("run",): run_args,
    ("demo",): pytest.param(lambda env: ["demo", "--limit", "2"], marks=slow),
    ("train", "demo"): pytest.param(lambda env: ["train", "demo"], marks=slow),
    ("list",): lambda env: ["list", "models"],
    ("prepare",): lambda env: ["prepare", "bird200", "--source", str(env["cub"])],
    ("data", "info"): lambda env: ["data", "info", "bird200", "--source", str(env["cub"])],
    ("probe", "repr"): probe_args,
    ("probe", "build-qa"): build_qa_args,
    ("submit",): lambda env: [
        "submit",
        "--db-url",
        env["db"],
        "--model",
        str(env["root"] / "submissions" / "ft"),
        "--base",
        "idefics2",
    ],  # fmt: skip
    ("queue",): lambda env: ["queue", "--db-url", env["db"]],
    ("import",): lambda env: ["import", str(env["summary"]), "--db-url", env["db"]],
    ("train", "data"): pytest.param(
        lambda env: [
            "train",
            "data",
            "bird200",
            "--source",
            str(env["cub"]),
            "--attributes",
            "human",
            "--negatives",
            "random",
            "--out",
            str(env["root"] / "train-data"),
        ],
        marks=slow,
    ),  # fmt: skip
    ("train", "stage1"): pytest.param(lambda env: train_args(env, "stage1"), marks=slow),
    ("train", "stage2"): pytest.param(lambda env: train_args(env, "stage2"), marks=slow),
    ("train", "run"): pytest.param(lambda env: train_args(env, "run"), marks=slow),
    ("train", "merge"): pytest.param(
        lambda env: [
            "train",
            "merge",
            "--adapter",
            str(training(env)["adapter"]),
            "--out",
            str(env["root"] / "merged"),
        ],
        marks=slow,
    ),  # fmt: skip
}


def test_every_json_command_has_a_row():
    assert sorted(json_commands(build_parser())) == sorted(COMMANDS)


@pytest.mark.parametrize(
    "argv",
    list(COMMANDS.values()),
    ids=[" ".join(path) for path in COMMANDS],
)
def test_json_output_is_one_document_on_stdout(argv, env, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_SUBMISSION_ROOT", str(env["root"]))
    args = argv(env)  # builds the command's inputs (which may run other commands)
    capsys.readouterr()
    code = main([*args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert captured.out.count("\n") == 1, captured.out[:2000]  # one line, nothing else on stdout
    document = json.loads(captured.out)
    assert isinstance(document, (dict, list))
    if isinstance(document, dict) and "out" in document:
        assert Path(document["out"]).exists()
