"""The task table: ONE record per task, from which everything else derives (the readers and their
folder detection, prompts, lmms-eval task names, `harness list tasks`, the leaderboard's columns
and average in `leaderboard.spec`, the synthetic test data).

Adding a dataset = one reader module in `tasks/datasets/` (exporting `DATASET`, `FORMAT`, `MARKER`,
`FOLDERS`, a read function and `choice_path`) + one `TaskSpec` row below (+ a synthetic writer in
`tasks/fixtures/datasets.py` and its tests). A task of another kind (e.g. knowledge QA over a
question bank) is a row with its own `kind`; the image-classification fields it lacks stay at their
defaults and the code that needs them checks `kind` first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

from harness.core.errors import UserError, unknown_name
from harness.core.scorings import SCORING_KINDS
from tasks.datasets import aircraft, cars, cub, dogs, flowers, pets
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.datasets.layout import locate_dataset_dir

TASK_VERSION = "1.0"  # bump when question construction or scoring changes

# "fgvr": multiple-choice recognition of one image's class; "qa": knowledge questions about the object
# in an image, from a question file (tasks.knowledge_qa)
TaskKind = Literal["fgvr", "qa"]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the harness knows about one task, in one place."""

    key: str  # harness task name: `harness run --task KEY`
    dataset: str  # display name of the test set
    noun: str  # plural, for the question: "Which of these birds is shown in the image?"
    singular: str  # for open-world questions: "What is the name of the bird shown in the image?"
    n_classes: int  # in the full official test split
    n_test: int  # test images (questions) in the full official split
    column: str | None  # leaderboard column header; None: not a leaderboard column
    # fgvr tasks: the reader module (tasks.datasets.<x>: DATASET, FORMAT, MARKER, FOLDERS, choice_path),
    # its read function read(root, *, classnames=None, skip_missing=False, ...), and the "module:function"
    # of the synthetic writer (tests, demo; imported only when asked for). None for qa tasks.
    reader: ModuleType | None = None
    read_split: Callable[..., DatasetSplit] | None = None
    synthetic: str | None = None
    in_average: bool = True  # counts in the leaderboard's average
    names_in_archive: bool = True  # False: names come from --classnames or a choice file (Flowers-102)
    kind: TaskKind = "fgvr"
    main_variant: str = "k4"  # the protocol whose runs fill the leaderboard column (k4: the paper's)
    base: str | None = None  # qa tasks: the fgvr task whose test images a question bank is asked about
    # training data (finedefics_train.data): the split that adds the validation images to the train
    # images (`harness train data --flowers-val`), and whether the archive has per-image attribute
    # annotations (`--attributes human`)
    trainval_split: str | None = None
    attribute_annotations: bool = False
    unit: str = "categories"  # what the classes are: "distinguishing bird species" (training-data prompts)

    @property
    def marker(self) -> str:
        """A file or folder (relative to the archive folder) whose presence means the native layout."""
        return self.reader.MARKER

    @property
    def folders(self) -> tuple[str, ...]:
        """Archive folder names accepted below the given root."""
        return tuple(self.reader.FOLDERS)

    def choice_path(self, item: TestItem) -> str:
        """The item's image path in the FOCI/Finedefics choice files."""
        return self.reader.choice_path(item)

    def make_synthetic(self) -> Callable[..., Path]:
        """The writer of a small synthetic copy of the original layout: make(root, n_classes, ...)."""
        module, _, function = self.synthetic.partition(":")
        return getattr(importlib.import_module(module), function)

    def read(
        self,
        root: Path,
        *,
        classnames: Path | None = None,
        class_names: list[str] | None = None,
        choices: Path | None = None,
        skip_missing: bool = False,
        split: str = "test",
        **hf_options,
    ) -> DatasetSplit:
        """The `split` ("test" or "train"; Flowers-102 also "trainval") at `root`: the native archive
        layout if present, else a Hugging Face mirror (a `save_to_disk` folder, parquet files or an
        imagefolder).

        `classnames` (a file) or `class_names` replace the archive's names; for an archive without
        names (Flowers-102) they, or the classes of the choice file `choices`, provide them.
        `hf_options` go to `read_hf_mirror` (image_column, label_column, split, cache_dir)."""
        if self.kind != "fgvr":
            raise UserError(
                f"{self.key} is a knowledge-QA task: its questions come from --questions FILE "
                "(tasks.knowledge_qa), not from a dataset reader"
            )
        root = Path(root).expanduser()
        if not root.exists():
            raise UserError(f"{root}: the {self.dataset} data folder does not exist")
        if locate_dataset_dir(root, self.marker, self.folders) is None:
            from tasks.datasets import hf_mirror

            self.refuse_another_archive(root)
            if hf_mirror.looks_like_hf_mirror(root):
                mirror = hf_mirror.read_hf_mirror(
                    root, self.key, skip_missing=skip_missing, split=split, **hf_options
                )
                return _renamed(mirror, class_names)
        if not self.names_in_archive:
            return self.read_split(
                root,
                classnames=classnames,
                class_names=class_names,
                choices=choices,
                skip_missing=skip_missing,
                split=split,
            )
        return _renamed(
            self.read_split(root, classnames=classnames, skip_missing=skip_missing, split=split), class_names
        )

    def refuse_another_archive(self, root: Path) -> None:
        """Another task's native archive where this one was expected (CUB's folder given for car196): say
        so, and what this task reads, instead of trying the folder as a Hugging Face mirror."""
        for other in FGVR_TASKS.values():
            if other.key != self.key and locate_dataset_dir(root, other.marker, other.folders) is not None:
                raise UserError(
                    f"{root} holds the {other.dataset} archive ({other.marker}), not {self.dataset}: "
                    f"{self.key} reads {self.marker} in the folder given or in "
                    f"{' or '.join(self.folders)} below it; point --data-root at the {self.dataset} data"
                )

    def lmms_task_name(self, scoring: str, variant: str | None = None) -> str:
        """fgvr_<key>[_<variant>]_<scoring>; the main variant adds no middle part (k4_circular: _circular)."""
        variant = variant or self.main_variant
        middle = "" if variant == self.main_variant else f"_{variant.removeprefix(self.main_variant + '_')}"
        return f"fgvr_{self.key}{middle}_{SCORING_KINDS[scoring].suffix}"


def _renamed(split: DatasetSplit, class_names: list[str] | None) -> DatasetSplit:
    if class_names is not None:
        if len(class_names) != split.n_classes:
            raise UserError(
                f"{len(class_names)} class names given for {split.root}, which has {split.n_classes} classes"
            )
        split.class_names = list(class_names)
    return split


_FIXTURES = "tasks.fixtures.datasets"

_FGVR: tuple[TaskSpec, ...] = (
        TaskSpec("bird200", "CUB-200-2011", "birds", "bird", 200, 5794, "Bird-200",
                   cub, cub.read_cub, f"{_FIXTURES}:make_cub", unit="species", attribute_annotations=True),
        TaskSpec("car196", "Stanford Cars", "cars", "car", 196, 8041, "Car-196",
                   cars, cars.read_cars, f"{_FIXTURES}:make_cars", unit="models"),
        TaskSpec("dog120", "Stanford Dogs", "dogs", "dog", 120, 8580, "Dog-120",
                   dogs, dogs.read_dogs, f"{_FIXTURES}:make_dogs", unit="breeds"),
        TaskSpec("flower102", "Oxford Flowers-102", "flowers", "flower", 102, 6149, "Flower-102",
                   flowers, flowers.read_flowers, f"{_FIXTURES}:make_flowers", unit="species", names_in_archive=False,
                   trainval_split="trainval"),
        TaskSpec("pet37", "Oxford-IIIT Pet", "pets", "pet", 37, 3669, "Pet-37",
                   pets, pets.read_pets, f"{_FIXTURES}:make_pets", unit="breeds"),
        # the paper's name is kept: the variant level has 100 classes
        TaskSpec("aircraft102", "FGVC-Aircraft (variants)", "aircraft", "aircraft", 100, 3333, "Aircraft-102",
                   aircraft, aircraft.read_aircraft, f"{_FIXTURES}:make_aircraft", unit="models"),
)  # fmt: skip


def _knowledge_qa_rows(fgvr: tuple[TaskSpec, ...]) -> tuple[TaskSpec, ...]:
    """The knowledge-QA tasks (tasks.knowledge_qa): ImageWikiQA over ImageNet images, and one question
    bank task `<key>_wikiqa` per FGVR task, asked about that task's test images. Their questions come
    from a file (--questions), so they have no reader; leaderboard columns outside the average."""
    imagewikiqa = TaskSpec(
        "imagewikiqa",
        "ImageWikiQA",
        "objects",
        "object",
        1000,
        2000,
        "ImageWikiQA",
        in_average=False,
        kind="qa",
        main_variant="direct",
    )
    banks = tuple(
        TaskSpec(
            f"{task.key}_wikiqa",
            f"{task.dataset} knowledge QA",
            task.noun,
            task.singular,
            task.n_classes,
            0,
            f"{task.column} QA",
            in_average=False,
            kind="qa",
            main_variant="direct",
            base=task.key,
        )
        for task in fgvr
    )  # n_test 0: a bank's size is the user's
    return (imagewikiqa, *banks)


TASKS: dict[str, TaskSpec] = {task.key: task for task in (*_FGVR, *_knowledge_qa_rows(_FGVR))}
FGVR_TASKS: dict[str, TaskSpec] = {key: task for key, task in TASKS.items() if task.kind == "fgvr"}  # the six


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task, as a row of `_FGVR` does (an fgvr task brings its knowledge-QA bank `<key>_wikiqa`).
    Register before `leaderboard.spec` is imported: it derives the columns and the average once."""
    rows = (spec, *_knowledge_qa_rows((spec,))[1:]) if spec.kind == "fgvr" else (spec,)
    taken = [row.key for row in rows if row.key in TASKS]
    if taken:
        raise ValueError(f"task(s) {', '.join(taken)} are registered already")
    for row in rows:
        TASKS[row.key] = row
        if row.kind == "fgvr":
            FGVR_TASKS[row.key] = row
    return spec


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise unknown_name("task", name, TASKS) from None


def detect_and_read(task: str, root: Path, **options) -> DatasetSplit:
    """`get_task(task).read(root, **options)`: a split of `task` at `root` (the test split by default)."""
    return get_task(task).read(root, **options)
