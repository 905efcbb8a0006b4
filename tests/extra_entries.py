"""A dataset and a model added from outside the project's files: what a newcomer writes to add them.

Importing this module registers both, as rows of `tasks/registry.py` and `models/registry.py`
would: the task `fungi4` (a reader of its own archive layout and its synthetic writer, here in one
module) and the model `idefics2_fungi` (a thin wrapper). `python -m tests.extra_entries WORKDIR`
then takes them through `harness prepare`, `harness run` (recorded in a leaderboard store), the
leaderboard's table and `harness train data`, and prints one JSON object; tests/test_extension.py
checks it. Nothing else of the project names them."""

from __future__ import annotations

import contextlib
import io
import json
import random
import sys
from pathlib import Path, PurePosixPath

from models.idefics2 import Idefics2FGVR
from models.registry import ModelSpec, register_model
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.datasets.layout import SplitCollector, check_split, find_dataset_dir, read_name_list, read_rows
from tasks.registry import TaskSpec, register_task

TASK, MODEL = "fungi4", "idefics2_fungi"

# ---------------------------------------------------------------- the reader (tasks/datasets/<name>.py)

DATASET = "Synthetic Fungi"
FORMAT = "fungi-native"
MARKER = "classes.txt"
FOLDERS = ("fungi-mini",)


def read_fungi(
    root: Path, *, classnames: Path | None = None, skip_missing: bool = False, split: str = "test"
) -> DatasetSplit:
    """fungi-mini/{classes.txt, test.txt and train.txt ("<image path> <label>"), images/}."""
    root = find_dataset_dir(root, MARKER, FOLDERS, DATASET)
    names = read_name_list(classnames or root / "classes.txt")
    listing = root / f"{check_split(split, DATASET)}.txt"
    collector = SplitCollector(TASK, FORMAT, root, names, skip_missing, split)
    for lineno, (path, label) in read_rows(listing, 2, "<image path> <label>"):
        collector.add(path, int(label), f"{listing} line {lineno}")
    return collector.build(listing)


def choice_path(item: TestItem) -> str:
    return f"images/{PurePosixPath(item.key).name}"


# ---------------------------------------------------------------- the synthetic writer (tasks/fixtures)


def make_fungi(
    root: Path, n_classes: int = 4, per_class_test: int = 2, per_class_train: int = 2, seed: int = 0
):
    from tasks.fixtures.datasets import draw_class_image

    folder = Path(root) / "fungi-mini"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng, lines = random.Random(seed), {"test": [], "train": []}
    for label in range(n_classes):
        for index in range(per_class_test + per_class_train):
            split = "test" if index < per_class_test else "train"
            path = f"images/{label:02d}_{index:02d}.jpg"
            draw_class_image(label, n_classes, random.Random(rng.getrandbits(64))).save(folder / path)
            lines[split].append(f"{path} {label}")
    (folder / "classes.txt").write_text("".join(f"Fungus {chr(65 + i)}\n" for i in range(n_classes)))
    for split, rows in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return folder


# ---------------------------------------------------------------- the wrapper (models/<name>.py)


class FungiIdefics2(Idefics2FGVR):
    """Idefics2 under another registry name: a wrapper that changes nothing but its row."""


# ---------------------------------------------------------------- the two registry rows

register_task(
    TaskSpec(
        TASK,
        DATASET,
        "fungi",
        "fungus",
        4,
        8,
        "Fungi-4",
        sys.modules[__name__],
        read_fungi,
        f"{__name__}:make_fungi",
        unit="species",
    )  # fmt: skip
)
register_model(
    ModelSpec(
        MODEL,
        f"{__name__}:FungiIdefics2",
        "HuggingFaceM4/idefics2-8b",
        "Idefics2 (fungi test)",
        8.0,
        "Idefics",
        "Mistral-7B-v0.1",
        "SigLIP-So400m",
        "Apache-2.0",
        model_types=("idefics2",),
    )  # fmt: skip
)


def _harness(*argv: str) -> tuple[int, dict | list | None]:
    from harness.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    lines = out.getvalue().strip().splitlines()
    return code, json.loads(lines[-1]) if lines and lines[-1].startswith(("{", "[")) else None


def exercise(work: Path) -> dict:
    from leaderboard import spec
    from leaderboard.store import ResultStore
    from leaderboard.table import TableQuery, leaderboard_table
    from models.fixtures.tiny_chat_lm import build_tiny_chat_lm
    from models.fixtures.tiny_models import build_tiny_model

    root = make_fungi(work / "data")
    checkpoint = build_tiny_model("idefics2", work / "tiny-idefics2", seed=0)
    db = f"sqlite:///{work / 'store.db'}"
    report = {"listed_tasks": [row["name"] for row in _harness("list", "tasks", "--json")[1]]}
    report["listed_models"] = [row["name"] for row in _harness("list", "models", "--json")[1]]
    report["prepare"] = _harness("prepare", TASK, "--source", root, "--json")
    report["run"] = _harness(
        "run", "--model", MODEL, "--task", TASK, "--data-root", root, "--scoring", "loglik", "--batch-size", 4,
        "--model-args", f"pretrained={checkpoint},dtype=float32,device=cpu", "--output-dir", work / "runs",
        "--db-url", db, "--json",
    )  # fmt: skip
    store = ResultStore.open(db)
    try:
        table = leaderboard_table(store.result_frame(), TableQuery(tasks=(TASK,)))
    finally:
        store.close()
    report["leaderboard"] = {
        "column": spec.BY_KEY[TASK].column,
        "benchmark": list(spec.TASK_KEYS),
        "rows": json.loads(table.to_json(orient="records")),
    }
    chat = build_tiny_chat_lm(work / "tiny-chat")
    report["train_data"] = _harness(
        "train", "data", TASK, "--source", root, "--attributes", "class-tags", "--llm", f"hf:{chat}",
        "--llm-max-new-tokens", 8, "--negatives", "random", "--out", work / "train-data", "--json",
    )  # fmt: skip
    return report


if __name__ == "__main__":
    print(json.dumps(exercise(Path(sys.argv[1]))))
