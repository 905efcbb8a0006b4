"""Hostile inputs, each with the refusal it must get: one clear line on stderr, exit code 2 (or a
counted skip under --skip-missing), never a traceback. Issue 9, "No traceback for any input"."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
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
    return {
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
