"""Hostile inputs, each with the refusal it must get: one clear line on stderr, exit code 2 (or a
counted skip under --skip-missing), never a traceback. Issue 9, "No traceback for any input"."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.results import SCHEMA_VERSION
from tests.leaderboard.lb_factories import make_summary


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A PNG whose header claims side x side pixels (a decompression bomb); the file itself is tiny."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def bomb_cub(cub_root, tmp_path) -> tuple[Path, Path]:
    """A copy of the small CUB with one test image replaced by a decompression bomb."""
    root = Path(shutil.copytree(cub_root, tmp_path / "cub"))
    archive = next(p for p in (root, *root.iterdir()) if (p / "images.txt").is_file())
    split = dict(line.split() for line in (archive / "train_test_split.txt").read_text().splitlines())
    images = dict(line.split() for line in (archive / "images.txt").read_text().splitlines())
    victim = archive / "images" / images[next(i for i, is_train in split.items() if is_train == "0")]
    return root, bomb_png(victim)


def repeated_choice_file(cub_choices: Path, tmp_path: Path) -> Path:
    """The choice file with its first entry asked a second time (as the real dog-120 file does)."""
    data = json.loads(cub_choices.read_text())
    first_class = next(iter(data))
    data[first_class].append(dict(data[first_class][0]))
    path = tmp_path / "repeated.json"
    path.write_text(json.dumps(data))
    return path


def run_args(tiny, cub, choices, *extra) -> list[str]:
    return [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny}",
        "--data-root",
        str(cub),
        "--choices",
        str(choices),
        "--no-record",
        *extra,
    ]


def build_qa_args(f, *extra) -> list[str]:
    return ["probe", "build-qa", "bird200", "--source", str(f["cub"]), "--knowledge", str(f["file"]),
            "--llm", "openai:http://127.0.0.1:9#m", *extra, "--out", str(f["folder"] / "bank.jsonl")]  # fmt: skip


def probe_args(f) -> list[str]:
    return ["probe", "repr", "--model", "idefics2", "--task", "bird200", "--data-root", str(f["cub"]), "--no-record"]  # fmt: skip


def qa_run_args(f) -> list[str]:
    return ["run", "--model", "idefics2", "--task", "bird200_wikiqa", "--model-args", f"pretrained={f['tiny']}",
            "--data-root", str(f["cub"]), "--questions", str(f["file"]), "--no-record"]  # fmt: skip


# id -> (argv builder, environment, expected exit code, the refusal's text)
CASES = {
    "decompression bomb image": (
        lambda f: ["prepare", "bird200", "--source", str(f["bomb"][0])],
        {},
        2,
        r"\.jpg: unreadable image \(Image size \(900000000 pixels\) exceeds limit",
    ),
    "output dir is a file": (
        lambda f: run_args(f["tiny"], f["cub"], f["choices"], "--output-dir", str(f["file"])),
        {},
        2,
        r"--output-dir .*: .* is a file, not a folder",
    ),
    "variant k0": (
        lambda f: ["prepare", "bird200", "--source", str(f["cub"]), "--variant", "k0"],
        {},
        2,
        r"--variant k0: a question needs at least 2 options",
    ),
    "CUB folder for car196": (
        lambda f: ["data", "info", "car196", "--source", str(f["cub"])],
        {},
        2,
        r"holds the CUB-200-2011 archive \(images.txt\), not Stanford Cars: car196 reads devkit/cars_meta.mat",
    ),
    "max_new_tokens=abc": (
        lambda f: (
            run_args(f["tiny"], f["cub"], f["choices"])
            + ["--model-args", f"pretrained={f['tiny']},max_new_tokens=abc"]
        ),
        {},
        2,
        r"--model-args max_new_tokens=abc must be a positive whole number",
    ),
    "wrong architecture for the folder": (
        lambda f: [
            *run_args(f["tiny"], f["cub"], f["choices"])[:2],
            "llava15",
            *run_args(f["tiny"], f["cub"], f["choices"])[3:],
        ],
        {},
        2,
        r"is a 'idefics2' checkpoint, but --model llava15 loads llava checkpoints\. "
        r"Did you mean --model idefics2 or finedefics\?",
    ),
    "--name held by a registry model": (
        lambda f: (
            run_args(f["tiny"], f["cub"], f["choices"])[:-1] + ["--name", "idefics2", "--db-url", f["db"]]
        ),
        {},
        2,
        r"the name 'idefics2' belongs to a registry model or a paper row",
    ),
    "--name with a slash": (
        lambda f: (
            run_args(f["tiny"], f["cub"], f["choices"])[:-1] + ["--name", "org/model", "--db-url", f["db"]]
        ),
        {},
        2,
        r"--name 'org/model': use letters, digits",
    ),
    "--db-url with an unknown scheme": (
        lambda f: ["queue", "--db-url", "mysqlx://db/fgvr"],
        {},
        2,
        r"--db-url: 'mysqlx' is not a database this store runs on",
    ),
    "unreachable PostgreSQL": (
        lambda f: ["queue", "--db-url", "postgresql+psycopg://nobody@127.0.0.1:1/fgvr"],
        {},
        2,
        r"cannot open the leaderboard store postgresql\+psycopg://nobody@127.0.0.1:1/fgvr: .*refused",
    ),
    "HARNESS_SUBMISSIONS_PER_DAY=abc": (
        lambda f: ["submit", "--db-url", f["db"], "--model", "org/model", "--base", "idefics2"],
        {"HARNESS_SUBMISSIONS_PER_DAY": "abc"},
        2,
        r"HARNESS_SUBMISSIONS_PER_DAY='abc' is not a non-negative whole number",
    ),
    "HARNESS_SUBMISSIONS_PER_DAY=-1": (
        lambda f: ["submit", "--db-url", f["db"], "--model", "org/model", "--base", "idefics2"],
        {"HARNESS_SUBMISSIONS_PER_DAY": "-1"},
        2,
        r"HARNESS_SUBMISSIONS_PER_DAY='-1' is not a non-negative whole number",
    ),
    # issue 17: probes, build-qa and the QA tasks
    "build-qa --per-class 0": (
        lambda f: build_qa_args(f, "--per-class", "0"),
        {},
        2,
        r"--per-class must be at least 1, got 0",
    ),
    "build-qa --out a folder": (
        lambda f: [*build_qa_args(f)[:-2], "--out", str(f["folder"])],
        {},
        2,
        r"--out .* is a folder; give the question bank's file name",
    ),
    "probe repr --out a file": (
        lambda f: [*probe_args(f), "--out", str(f["file"])],
        {},
        2,
        r"--out .*not-a-folder is a file; pass a folder for the report",
    ),
    "probe repr --out not empty": (
        lambda f: [*probe_args(f), "--out", str(f["folder"])],
        {},
        2,
        r"--out .* is not empty; choose a new folder, or pass --overwrite",
    ),
    "probe repr max_pixels=0": (
        lambda f: [*probe_args(f)[:3], "qwen2_5_vl", "--model-args", "max_pixels=0", *probe_args(f)[4:]],
        {},
        2,
        r"--model-args max_pixels=0: must be a positive whole number",
    ),
    "run max_pixels=0": (
        lambda f: [
            "run",
            "--model",
            "qwen2_5_vl",
            "--task",
            "bird200",
            "--model-args",
            "max_pixels=0",
            "--data-root",
            str(f["cub"]),
            "--no-record",
        ],
        {},
        2,
        r"--model-args max_pixels=0: must be a positive whole number",
    ),  # fmt: skip
    "run longest_edge=0": (
        lambda f: [
            "run",
            "--model",
            "smolvlm2",
            "--task",
            "bird200",
            "--model-args",
            "longest_edge=0",
            "--data-root",
            str(f["cub"]),
            "--no-record",
        ],
        {},
        2,
        r"--model-args longest_edge=0: must be a positive whole number",
    ),  # fmt: skip
    "run thinking_tokens=-5": (
        lambda f: [
            "run",
            "--model",
            "fine_r1",
            "--task",
            "bird200",
            "--model-args",
            "thinking_tokens=-5",
            "--data-root",
            str(f["cub"]),
            "--no-record",
        ],
        {},
        2,
        r"--model-args thinking_tokens=-5: must be a whole number, 0 or more",
    ),  # fmt: skip
    "--questions for an image-classification task": (
        lambda f: run_args(f["tiny"], f["cub"], f["choices"], "--questions", str(f["file"])),
        {},
        2,
        r"--questions is for the knowledge-QA tasks .*--task bird200 asks about its own classes",
    ),
    "--circular --choices --options clip for a QA task": (
        lambda f: [*qa_run_args(f), "--circular", "--choices", str(f["choices"]), "--options", "clip"],
        {},
        2,
        r"--task bird200_wikiqa is a knowledge-QA task: .* --choices, --circular, --options clip would do "
        r"nothing",
    ),
    "import of NaN, out-of-range and task-less summaries": (
        lambda f: ["import", str(f["summaries"]), "--db-url", f["db"]],
        {},
        1,
        r"refused .*nan.*: 'accuracy' is nan: accuracies are fractions between 0 and 1",
    ),
}


@pytest.fixture
def inputs(tmp_path, cub_root, cub_choices, tiny_idefics2, bomb_cub, monkeypatch) -> dict:
    monkeypatch.setenv("HARNESS_SUBMISSION_ROOT", str(tmp_path))
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    summaries = tmp_path / "summaries"
    for name, overrides in (("nan", {"accuracy": float("nan")}), ("big", {"accuracy": 57.1}), ("good", {})):
        (summaries / name).mkdir(parents=True)
        (summaries / name / "summary.json").write_text(json.dumps(make_summary(**overrides)))
    taskless = make_summary()
    taskless.pop("task")
    (summaries / "taskless").mkdir()
    (summaries / "taskless" / "summary.json").write_text(json.dumps(taskless))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    (folder / "something").write_text("x")
    return {
        "folder": folder,
        "cub": cub_root,
        "choices": cub_choices,
        "tiny": tiny_idefics2,
        "bomb": bomb_cub,
        "file": a_file,
        "db": f"sqlite:///{tmp_path / 'lb.db'}",
        "summaries": summaries,
    }


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_gets_one_clear_line(case, inputs, capsys, monkeypatch):
    argv, environment, code, refusal = CASES[case]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(argv(inputs)) == code
    captured = capsys.readouterr()
    output = captured.err + captured.out
    assert "Traceback" not in output
    assert pytest.importorskip("re").search(refusal, output), output
    if code == 2:
        assert len([line for line in captured.err.splitlines() if line.startswith("error:")]) == 1


def test_import_keeps_the_good_summary_and_names_every_bad_one(inputs, capsys):
    assert main(["import", str(inputs["summaries"]), "--db-url", inputs["db"], "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 1
    reasons = {Path(entry["file"]).parent.name: entry["reason"] for entry in report["refused"]}
    assert reasons["big"] == "'accuracy' is 57.1: accuracies are fractions between 0 and 1"
    assert reasons["nan"] == "'accuracy' is nan: accuracies are fractions between 0 and 1"
    # the schema check (harness.core.results.validate_summary) refuses it first, naming the file and field
    assert reasons["taskless"].endswith(
        f"taskless/summary.json: not a valid version-{SCHEMA_VERSION} summary: field 'task': Field required"
    )
    assert len(reasons) == 3


def test_a_decompression_bomb_is_skipped_and_counted_under_skip_missing(bomb_cub, capsys):
    root, bomb = bomb_cub
    assert main(["prepare", "bird200", "--source", str(root), "--skip-missing", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == 1


def test_data_info_and_prepare_agree_on_a_repeated_entry(cub_root, cub_choices, tmp_path, capsys):
    choices = repeated_choice_file(cub_choices, tmp_path)
    assert (
        main(["data", "info", "bird200", "--source", str(cub_root), "--choices", str(choices), "--json"]) == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert main(["prepare", "bird200", "--source", str(cub_root), "--choices", str(choices), "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out)
    assert len(info["items"]) == info["n_questions"] == prepared["n_questions"]
    assert info["repeated_images"] == prepared["repeated_images"] == 1
    assert main(["data", "info", "bird200", "--source", str(cub_root), "--choices", str(choices)]) == 0
    assert "(1 image(s) asked twice)" in capsys.readouterr().out


def test_an_admin_action_on_an_id_beyond_the_database(tmp_path, monkeypatch):
    from leaderboard.app import LeaderboardApp
    from leaderboard.store import ResultStore

    monkeypatch.setenv("HARNESS_ADMIN_TOKEN", "admin-token-123")
    store = ResultStore.open(f"sqlite:///{tmp_path / 'lb.db'}")
    try:
        app = LeaderboardApp(store)
        for target, reason in (
            ("99999999999999999999", "no submission #99999999999999999999"),
            ("#-5", "'#-5' is not a submission id"),
            ("abc", "'abc' is not a submission id"),
        ):
            assert app.admin("admin-token-123", "requeue submission", target).startswith(
                f"**Refused:** {reason}"
            )
    finally:
        store.close()


def test_stanford_dogs_classes_come_from_the_lists(tmp_path):
    from tasks.fixtures.datasets import make_dogs
    from tasks.registry import get_task

    root = make_dogs(tmp_path / "dogs", n_classes=5)
    images = next(p for p in (root, *root.rglob("Images")) if p.name == "Images")
    (images / "n09999999-Stray_folder").mkdir()
    (images / "n09999998-Linked").symlink_to(images / "n09999999-Stray_folder", target_is_directory=True)
    split = get_task("dog120").read(root)
    assert split.n_classes == 5 and "Stray_folder" not in split.class_names


def test_pet_classes_come_from_every_annotation_file(tmp_path):
    from tasks.fixtures.datasets import make_pets
    from tasks.registry import get_task

    root = make_pets(tmp_path / "pets", n_classes=5)
    test_list = root / "annotations" / "test.txt"
    lines = test_list.read_text().splitlines()
    test_list.write_text(
        "\n".join(line for line in lines if line.split()[1] != "5") + "\n"
    )  # no test image of 5
    split = get_task("pet37").read(root)
    assert split.n_classes == 5  # class 5 is still a class: trainval.txt and list.txt name it


def test_safetensors_only_never_falls_back_to_pickled_weights(tiny_idefics2, tmp_path):
    """The worker's use_safetensors=true: a folder whose weights are pickled does not load."""
    import torch
    from safetensors.torch import load_file

    from harness.core.errors import UserError
    from tests.model_fixtures import load

    folder = Path(shutil.copytree(tiny_idefics2, tmp_path / "pickled"))
    for weights in folder.glob("*.safetensors"):
        torch.save(load_file(str(weights)), folder / "pytorch_model.bin")
        weights.unlink()
    for index in folder.glob("*.safetensors.index.json"):
        index.unlink()
    assert load("idefics2", folder).model is not None  # transformers itself would load the pickle
    with pytest.raises(UserError, match="cannot load a checkpoint from this folder"):
        load("idefics2", folder, use_safetensors="true")


def test_flower_classes_come_from_every_image_not_only_the_test_split(tmp_path):
    """Flowers-102 counts its classes in imagelabels.mat (every image): a test split without the last
    class still has every class, so --classnames and the choice file's names line up."""
    import numpy as np
    import scipy.io

    from tasks.fixtures.datasets import FLOWERS_CLASSNAMES, make_flowers
    from tasks.registry import get_task

    folder = make_flowers(tmp_path / "flowers", n_classes=5)
    labels = scipy.io.loadmat(str(folder / "imagelabels.mat"), squeeze_me=True)["labels"]
    setid = scipy.io.loadmat(str(folder / "setid.mat"), squeeze_me=True)
    kept = np.array([[i for i in np.atleast_1d(setid["tstid"]) if labels[i - 1] != 5]], dtype=np.uint16)
    scipy.io.savemat(
        str(folder / "setid.mat"),
        {
            "tstid": kept,
            "trnid": np.array([np.atleast_1d(setid["trnid"])]),
            "valid": np.array([np.atleast_1d(setid["valid"])]),
        },
    )
    split = get_task("flower102").read(folder, classnames=tmp_path / "flowers" / FLOWERS_CLASSNAMES)
    assert split.n_classes == 5 and 4 not in {item.label for item in split.items}


# ---- issue 17: probes, build-qa, QA tasks, logged samples, submitted sizes -----------------------


def qa_line(question: str, options: list[str], qid: str = "", classname: str = "Laysan_Albatross") -> str:
    from tasks.knowledge_qa import qa_prompt_text

    return json.dumps(
        {"text": qa_prompt_text(question, options), "label": "A", "classname": classname, "question_id": qid}
    )


@pytest.mark.parametrize(
    "lines, refusal",
    [
        ([qa_line("Where does this object nest?", ["a", "b", "c", "d"], "q1")] * 2, "line 2: repeats the question"),
        (
            [qa_line("Where does this object nest?", ["a", "b", "c", "d"], "q1"),
             qa_line("What does this object eat?", ["a", "b", "c", "d"], "q1")],
            "line 2: repeats the question_id q1 of .* line 1",
        ),
        ([qa_line("Where does this object nest?", ["Cliffs"] * 4)], "the options are not all different"),
        ([qa_line("Where does this object nest?", ["Cliffs", "cliffs ", "Trees", "Sand"])], "not all different"),
        ([qa_line("Where does this object nest?", ["Cliffs", "", "Trees", "Sand"])], "option B is empty"),
    ],
    ids=["repeated line", "repeated id", "four equal options", "equal up to case", "empty option"],
)  # fmt: skip
def test_question_files_refuse_repeats_and_bad_options(lines, refusal, tmp_path):
    import re

    from harness.core.errors import UserError
    from tasks.knowledge_qa import read_question_file

    bank = tmp_path / "bank.jsonl"
    bank.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as error:
        read_question_file(bank)
    assert re.search(refusal, str(error.value)), str(error.value)


@pytest.mark.parametrize("name", ["foo", r"Red\1bird", r"foo\g<0>", "C:\\birds\\x"])
def test_the_oracle_names_the_class_as_written(name):
    from tasks.knowledge_qa import oracle_question

    assert oracle_question("Where does this object nest? This Object flies.", name) == (
        f"Where does this {name} nest? this {name} flies."
    )


def test_knowledge_descriptions_are_never_in_both_halves():
    from harness.probes.analysis import split_descriptions

    texts = [
        "It has a red crown.",
        "It has a red crown.",
        "it has a  RED crown.",
        "It sings at dawn.",
        "Long tail.",
    ]
    split = split_descriptions({"A": texts, "B": ["Short beak.", "Short beak."]}, ["A", "B"], seed=3)
    assert not set(split.train_texts) & set(split.test_texts)
    assert len(split.train_texts) + len(split.test_texts) == 3 and split.left_out == ["B"]  # fmt: skip


@contextmanager
def chat_server(reply: str):
    """An OpenAI-compatible endpoint on 127.0.0.1 that answers every prompt with `reply`; yields its port."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()


def test_build_qa_accepting_nothing_writes_no_bank_and_fails(cub_root, tmp_path, capsys):
    from tasks.registry import get_task

    knowledge = tmp_path / "k.jsonl"
    names = get_task("bird200").read(cub_root).class_names[:2]
    knowledge.write_text("".join(json.dumps({"classname": n, "text": "It is a large bird of the open sea. " * 3}) + "\n" for n in names))  # fmt: skip
    out = tmp_path / "bank.jsonl"
    with chat_server("I cannot write that.") as port:  # no JSON object: every reply is rejected
        argv = ["probe", "build-qa", "bird200", "--source", str(cub_root), "--knowledge", str(knowledge),
                "--llm", f"openai:http://127.0.0.1:{port}#m", "--out", str(out)]  # fmt: skip
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "no question accepted (0 of 6; rejected: unparseable 6)" in err and len(err.strip().splitlines()) == 1
    )
    assert not out.exists() and Path(f"{out}.replies.jsonl").is_file()  # the replies are kept for a retry


def test_probe_repr_refuses_train_images_with_test_pixels(tmp_path, capsys):
    from harness.core.probe_results import load_probe_report
    from tasks.fixtures.datasets import make_cub
    from tasks.fixtures.tiny_clip import build_tiny_clip

    cub = make_cub(tmp_path / "cub", n_classes=3, per_class_test=2, per_class_train=2)
    archive = next(p for p in (cub, *cub.iterdir()) if (p / "images.txt").is_file())
    split = dict(line.split() for line in (archive / "train_test_split.txt").read_text().splitlines())
    images = dict(line.split() for line in (archive / "images.txt").read_text().splitlines())
    test = next(i for i, flag in split.items() if flag == "0")
    train = next(i for i, flag in split.items() if flag == "1")
    from PIL import Image

    with Image.open(archive / "images" / images[test]) as image:  # the same picture, saved as PNG data
        image.convert("RGB").save(archive / "images" / images[train], format="PNG")
    argv = ["probe", "repr", "--model", f"clip:hf:{build_tiny_clip(tmp_path / 'clip')}", "--task", "bird200",
            "--data-root", str(cub), "--probes", "linear", "--no-record", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "1 train image(s) have the pixels of test images (train/test leakage" in err and images[test] in err
    )
    assert main([*argv, "--allow-overlap"]) == 0
    report = load_probe_report(tmp_path / "r")
    assert report["train_test_overlap"] == [[f"images/{images[test]}", f"images/{images[train]}"]]


def test_logged_samples_name_images_by_key_and_the_summary_its_identity(tiny_idefics2, cub_root, cub_choices):
    from harness.config import RunConfig
    from harness.core import identity
    from harness.runner import plan_run, run_evaluation

    args = {"pretrained": str(tiny_idefics2), "dtype": "float32", "device": "cpu"}
    config = RunConfig(model="idefics2", task="bird200", model_args=args, data_root=cub_root, choices=cub_choices, limit=3)  # fmt: skip
    summary = run_evaluation(config)
    samples = [json.loads(line) for line in Path(summary["samples_file"]).read_text().splitlines()]
    assert len(samples) == 3
    for sample in samples:
        assert sample["input_media"] == [sample["doc"]["image_key"]]  # the file under the dataset root
        assert len(json.dumps(sample)) < 4000 and "base64" not in json.dumps(sample)
    assert summary["identity"] == identity.computation_key(plan_run(config).identity)


def test_a_submitted_checkpoint_shows_its_own_parameter_count(tiny_idefics2, tmp_path):
    from safetensors.torch import load_file

    from leaderboard.store import ResultStore

    direct = sum(t.numel() for f in tiny_idefics2.glob("*.safetensors") for t in load_file(f).values())
    store = ResultStore.open(f"sqlite:///{tmp_path / 'lb.db'}")
    try:
        summary = make_summary(model_args={"pretrained": str(tiny_idefics2)}, pretrained=str(tiny_idefics2))
        store.record_summary(summary, model_name="tiny-submission")
        info, _ = store.model_info("tiny-submission")
        assert info["params_b"] == pytest.approx(direct / 1e9) and info["params_b"] < 0.01
        store.record_summary(make_summary())  # the registry's own weights keep the registry's figure
        assert store.model_info("idefics2")[0]["params_b"] == 8.0
    finally:
        store.close()


def test_a_torn_last_reply_line_is_cut_before_the_next_reply(tmp_path):
    from harness.probes.build_qa import ReplyJournal

    path = tmp_path / "bank.jsonl.replies.jsonl"
    path.write_text(json.dumps({"key": "a", "reply": "first"}) + "\n" + '{"key": "b", "rep')
    ReplyJournal(path).add({"c": "third"})
    assert ReplyJournal(path).replies == {"a": "first", "c": "third"}  # "c" is not glued onto the torn "b"


def test_an_llm_that_writes_no_description_is_refused_and_not_kept(tmp_path, capsys):
    from harness.core.paths import harness_home
    from tasks.fixtures.datasets import make_cub
    from tasks.fixtures.tiny_clip import build_tiny_clip

    cub = make_cub(tmp_path / "cub", n_classes=2, per_class_test=2, per_class_train=1)
    kept_before = set((harness_home() / "descriptions").glob("*.json"))
    with chat_server("Ok.") as port:
        argv = ["probe", "repr", "--model", f"clip:hf:{build_tiny_clip(tmp_path / 'clip')}", "--task", "bird200",
                "--data-root", str(cub), "--describe-llm", f"openai:http://127.0.0.1:{port}#m", "--no-record",
                "--out", str(tmp_path / "r")]  # fmt: skip
        assert main(argv) == 2
    assert "wrote no usable description" in capsys.readouterr().err
    assert set((harness_home() / "descriptions").glob("*.json")) == kept_before  # nothing to reuse next time
