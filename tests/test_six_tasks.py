"""`harness run --task T` on all six tasks in their original layouts, every scoring and variant."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from harness.cli import main
from tasks.fixtures import datasets as synthetic
from tasks.registry import FGVR_TASKS

MAKERS = {key: task.make_synthetic() for key, task in FGVR_TASKS.items()}
SCORINGS = ("generate", "loglik", "loglik_name")
# (extra flags, needs a choice file)
VARIANTS = {
    "choices": ([], True),
    "k2": (["--variant", "k2"], False),
    "k5": (["--variant", "k5"], False),
    "all": (["--variant", "all"], False),
    "circular": (["--circular"], True),
    "open": (["--variant", "open"], False),
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, tuple[Path, Path, Path | None]]:
    made = {}
    for task, maker in MAKERS.items():
        base = tmp_path_factory.mktemp(task)
        root = maker(base, n_classes=6, per_class_test=2, seed=1)
        names = base / synthetic.FLOWERS_CLASSNAMES if task == "flower102" else None
        choices = synthetic.make_choice_file(task, root, base / f"{task}.json", k=4, seed=1, classnames=names)
        made[task] = (root, choices, names)
    return made


def _run(capsys, tmp_path, tiny, data, task, scoring, variant) -> dict:
    root, choices, names = data[task]
    extra, needs_choices = VARIANTS[variant]
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        task,
        "--model-args",
        f"pretrained={tiny}",
        "--data-root",
        str(root),
        "--scoring",
        scoring,
        "--limit",
        "4",
        "--batch-size",
        "4",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
        *extra,
    ]
    if needs_choices:
        args += ["--choices", str(choices)]
    if names is not None:
        args += ["--classnames", str(names)]
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    line = json.loads(out.out.strip().splitlines()[-1])
    assert line["task"] == task and line["scoring"] == scoring and line["n"] == 4
    return line


def _cases(full: bool):
    cases = []
    for task, scoring, variant in itertools.product(FGVR_TASKS, SCORINGS, VARIANTS):
        if variant == "open" and scoring != "generate":
            continue
        cases.append((task, scoring, variant))
    if full:
        return cases
    # The default run: every task on its choice file, the scorings taking turns (each on two tasks; the
    # flowers' class-name file also under loglik_name, whose options are those names), and every other
    # variant once, each on another task. The rest of the matrix runs in the slow suite.
    tasks = list(FGVR_TASKS)
    quick = [(t, SCORINGS[i % len(SCORINGS)], "choices") for i, t in enumerate(tasks)]
    quick += [("flower102", "loglik_name", "choices")]
    quick += [
        (tasks[i % len(tasks)], "loglik" if v != "open" else "generate", v)
        for i, v in enumerate(v for v in VARIANTS if v != "choices")
    ]
    return list(dict.fromkeys(quick))


@pytest.mark.parametrize(("task", "scoring", "variant"), _cases(full=False))
def test_every_task_scoring_and_variant(capsys, tmp_path, tiny_idefics2, datasets, task, scoring, variant):
    line = _run(capsys, tmp_path, tiny_idefics2, datasets, task, scoring, variant)
    summary = json.loads(Path(line["summary_file"]).read_text())
    if variant == "circular":
        assert summary["variant"].endswith("circular")
        assert sum(1 for _ in open(line["samples_file"])) == 4 * 4  # every rotation asked
    elif variant == "open":
        assert summary["option_source"] == "open"
    elif variant == "choices":
        assert summary["option_source"] == "choice_file"
    else:
        assert summary["variant"] == variant


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "scoring", "variant"), sorted(set(_cases(full=True)) - set(_cases(full=False)))
)
def test_full_matrix(capsys, tmp_path, tiny_idefics2, datasets, task, scoring, variant):
    _run(capsys, tmp_path, tiny_idefics2, datasets, task, scoring, variant)
