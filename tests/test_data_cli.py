"""`harness data info` and `harness prepare` on the six synthetic layouts."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from tasks.fixtures import datasets as synthetic
from tasks.registry import FGVR_TASKS

MAKERS = {key: task.make_synthetic() for key, task in FGVR_TASKS.items()}


@pytest.mark.parametrize("task", MAKERS)
def test_data_info_json(capsys, tmp_path, task):
    root = MAKERS[task](tmp_path, n_classes=4, per_class_test=3, seed=2)
    names = tmp_path / synthetic.FLOWERS_CLASSNAMES if task == "flower102" else None
    choices = synthetic.make_choice_file(task, root, tmp_path / "choices.json", k=3, seed=2, classnames=names)
    args = ["data", "info", task, "--source", str(root), "--choices", str(choices), "--json"]
    if names:
        args += ["--classnames", str(names)]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["task"] == task and info["n_classes"] == 4 and info["n_test"] == 12
    assert list(info["class_counts"]) == info["class_names"] and set(info["class_counts"].values()) == {3}
    assert len(info["items"]) == 12
    file_choices = json.loads(choices.read_text())
    for item in info["items"]:
        assert item["image"].startswith(str(root)) and item["class"] in info["class_names"]
        assert item["options"][0] == item["class"] and len(item["options"]) == 3
    if task == "car196":  # file names repeat between cars_train/ and cars_test/: only the test copies count
        assert all("/cars_test/" in item["image"] for item in info["items"])
    assert sum(len(v) for v in file_choices.values()) == 12
    assert (
        main(["data", "info", task, "--source", str(root)] + (["--classnames", str(names)] if names else []))
        == 0
    )
    assert f"{task}:" in capsys.readouterr().out


def test_prepare_is_cached_by_fingerprint(capsys, tmp_path):
    root = synthetic.make_cub(tmp_path, n_classes=4, per_class_test=2, seed=0)
    args = ["prepare", "bird200", "--source", str(root), "--variant", "k3", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["path"] == first["path"]
    assert main([*args[:-1], "--seed", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["path"] != first["path"]
    assert first["n_questions"] == 8 and set(first["lmms_tasks"]) == {"gen", "loglik", "logliknm"}


def test_unreadable_image_is_named_or_skipped(capsys, tmp_path):
    root = synthetic.make_cub(tmp_path, n_classes=3, per_class_test=2, seed=0)
    assert main(["prepare", "bird200", "--source", str(root), "--variant", "k5"]) == 2
    assert "--variant k5 needs between 2 and 3 options" in capsys.readouterr().err
    victim = sorted((root / "images").rglob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated JPEG
    assert main(["prepare", "bird200", "--source", str(root), "--variant", "k3"]) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "--skip-missing" in err
    assert (
        main(["prepare", "bird200", "--source", str(root), "--variant", "k3", "--skip-missing", "--json"])
        == 0
    )
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["skipped"] == 1 and info["n_questions"] == 5
