"""The six readers on small synthetic copies of the original layouts (one table drives them all),
the choice-file mapping onto each test split, and the Hugging Face mirror reader."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import scipy.io

from harness.core.errors import UserError
from tasks.choices import match_choices, read_choice_file
from tasks.datasets.base import DatasetSplit
from tasks.fixtures import datasets as synthetic
from tasks.registry import FGVR_TASKS, detect_and_read, get_task

N_CLASSES, PER_CLASS_TEST = 6, 2


def _edit_text(path: Path, edit: Callable[[list[str]], None]) -> None:
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("".join(f"{line}\n" for line in lines))


def _edit_mat(path: Path, edit: Callable[[dict], None]) -> None:
    data = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    edit(data)
    scipy.io.savemat(str(path), data)


def _set_cars_class(data: dict) -> None:
    data["annotations"]["class"][0, 0] = np.array([[99]], dtype=np.uint8)


@dataclass(frozen=True)
class Case:
    task: str
    make: Callable[..., Path]
    first_names: list[str]
    list_file: str  # the file listing the test images, relative to the archive folder
    label_where: str  # regex: where a label error is reported
    break_label: Callable[[Path], None]  # puts label 99 on the first test entry
    key_prefix: str  # what test item keys start with
    choice_prefix: str  # what the authors' choice paths start with
    image_list: str = ""  # the file named when an image is missing, if not list_file

    def read(self, root: Path, **kwargs) -> DatasetSplit:
        if self.task == "flower102" and not {"class_names", "choices"} & set(kwargs):
            names = root / synthetic.FLOWERS_CLASSNAMES  # make_flowers writes it beside the archive
            kwargs.setdefault("classnames", names if names.is_file() else root.parent / names.name)
        return detect_and_read(self.task, root, **kwargs)


def _first_line_label(column: int) -> Callable[[Path], None]:
    def edit(lines: list[str]) -> None:
        fields = lines[0].split(" ")
        fields[column] = "99"
        lines[0] = " ".join(fields)

    return lambda path: _edit_text(path, edit)


CASES = [
    Case(
        "bird200",
        synthetic.make_cub,
        ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"],
        "train_test_split.txt",
        r"image_class_labels\.txt line \d+",
        lambda root: _edit_text(
            root / "image_class_labels.txt",
            lambda lines: lines.__setitem__(
                _first_test_line(root), lines[_first_test_line(root)].split()[0] + " 99"
            ),
        ),
        "images/",
        "images/",
        image_list="images.txt",
    ),
    Case(
        "car196",
        synthetic.make_cars,
        ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Type-S 2008"],
        "cars_test_annos_withlabels.mat",
        r"cars_test_annos_withlabels\.mat entry 1",
        lambda root: _edit_mat(root / "cars_test_annos_withlabels.mat", _set_cars_class),
        "cars_test/",
        "images/0",
    ),
    Case(
        "dog120",
        synthetic.make_dogs,
        ["Chihuahua", "Japanese_spaniel", "Maltese_dog"],
        "lists/test_list.mat",
        r"test_list\.mat entry 1",
        lambda root: _edit_mat(root / "lists/test_list.mat", lambda d: d["labels"].__setitem__((0, 0), 99)),
        "Images/n0",
        "images/n0",
    ),
    Case(
        "flower102",
        synthetic.make_flowers,
        ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"],
        "setid.mat",
        r"imagelabels\.mat entry \d+",
        lambda root: _edit_mat(
            root / "imagelabels.mat",
            lambda d: d["labels"].__setitem__(
                (0, int(scipy.io.loadmat(str(root / "setid.mat"))["tstid"][0, 0]) - 1), 99
            ),
        ),
        "jpg/image_",
        "images/image_",
    ),
    Case(
        "pet37",
        synthetic.make_pets,
        ["Abyssinian", "American Bulldog", "American Pit Bull Terrier"],
        "annotations/test.txt",
        r"test\.txt line 1",
        lambda root: _first_line_label(1)(root / "annotations/test.txt"),
        "images/",
        "images/",
    ),
    Case(
        "aircraft102",
        synthetic.make_aircraft,
        ["707-320", "727-200", "A300B4"],
        "data/images_variant_test.txt",
        r"images_variant_test\.txt line \d+",
        lambda root: _edit_text(root / "data/variants.txt", lambda lines: lines.__delitem__(slice(1, None))),
        "data/images/",
        "images/",
    ),
]
IDS = [case.task for case in CASES]


def _first_test_line(cub: Path) -> int:
    """Index (0-based) of the first test image's line in the CUB list files."""
    flags = (cub / "train_test_split.txt").read_text().splitlines()
    return next(i for i, line in enumerate(flags) if line.endswith(" 0"))


@pytest.fixture(params=CASES, ids=IDS)
def case(request) -> Case:
    return request.param


@pytest.fixture()
def root(case, tmp_path) -> Path:
    return case.make(tmp_path / "data", n_classes=N_CLASSES, per_class_test=PER_CLASS_TEST, seed=0)


def test_table_covers_every_task():
    assert sorted(IDS) == sorted(FGVR_TASKS)
    for case in CASES:  # each record's synthetic writer is the one the table tests
        assert get_task(case.task).make_synthetic() is case.make


def test_reads_test_items_and_names_in_label_order(case, root):
    split = case.read(root)
    layout = get_task(case.task)
    assert split.task == case.task and split.format.endswith("-native")
    assert split.root == root.resolve()
    assert split.class_names[:3] == case.first_names and split.n_classes == N_CLASSES
    assert split.class_counts() == dict.fromkeys(split.class_names, PER_CLASS_TEST)
    assert len({item.key for item in split.items}) == len(split.items) == N_CLASSES * PER_CLASS_TEST
    for item in split.items:
        assert item.key.startswith(case.key_prefix) and item.image == split.root / item.key
        assert item.image.is_file()
        assert layout.choice_path(item).startswith(case.choice_prefix)
    assert case.read(root.parent).items == split.items  # the archive's parent folder works too


def test_same_layout_drawn_twice_is_identical(case, tmp_path):
    a = case.make(tmp_path / "a", n_classes=3, per_class_test=1, seed=4)
    b = case.make(tmp_path / "b", n_classes=3, per_class_test=1, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files if f.suffix == ".jpg")


def test_choice_file_maps_onto_the_test_split(case, root, tmp_path):
    split = case.read(root)
    path = synthetic.make_choice_file(case.task, split, tmp_path / "choices.json", k=4, seed=0)
    entries = read_choice_file(path)
    assert all(e.image.startswith(case.choice_prefix) for e in entries)
    match = match_choices(entries, split)
    assert len(match.matched) == len(split.items) and not match.uncovered and match.n_skipped == 0
    for m in match.matched:
        assert PurePosixPath(m.item.key).name == PurePosixPath(m.entry.image).name
        assert split.class_names[m.item.label] == m.entry.groundtruth
        assert len(m.option_labels) == 4 and m.option_labels[m.answer_index] == m.item.label


def test_missing_image_names_the_entry_or_skips(case, root):
    first = case.read(root).items[0]
    first.image.unlink()
    with pytest.raises(
        UserError,
        match=rf"{re.escape(Path(case.image_list or case.list_file).name)}.*(line|entry) \d+.*{re.escape(first.key)} not found.*--skip-missing",
    ):
        case.read(root)
    split = case.read(root, skip_missing=True)
    assert split.skipped == [first.key] and first not in split.items


def test_label_out_of_range_names_the_entry(case, root):
    case.break_label(root)
    with pytest.raises(
        UserError,
        match=rf"{case.label_where}: (label 99 is (out of range|beyond)|variant '.*' is not in|CLASS-ID 99 but)",
    ):
        case.read(root)


def test_empty_split_names_the_list_file(case, root):
    path = root / case.list_file
    if path.suffix == ".mat":
        key = {
            "setid.mat": "tstid",
            "test_list.mat": "labels",
            "cars_test_annos_withlabels.mat": "annotations",
        }[path.name]
        data = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
        empty = {key: data[key][..., :0] if key != "labels" else np.zeros((0, 1))}
        if key == "labels":
            empty["file_list"] = np.empty((0, 1), dtype=object)
        scipy.io.savemat(str(path), {**data, **empty})
    else:
        keep = (
            [re.sub(r" 0$", " 1", line) for line in path.read_text().splitlines()]
            if case.task == "bird200"
            else []
        )
        path.write_text("".join(f"{line}\n" for line in keep))
    with pytest.raises(UserError, match=rf"{re.escape(path.name)}: no test images"):
        case.read(root)


def test_not_the_layout(case, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"not a .* folder: no "):
        case.read(tmp_path / "empty")


# ---------------------------------------------------------------- per-dataset details


@pytest.mark.parametrize(
    "task, line, message",
    [
        (
            "pet37",
            "Abyssinian_7 1 1",
            r"test\.txt line 1: expected 'Image CLASS-ID SPECIES BREED-ID', got 'Abyssinian_7 1 1'",
        ),
        ("pet37", "Abyssinian_7 one 1 1", r"test\.txt line 1: CLASS-ID must be a whole number"),
        (
            "aircraft102",
            "0123456",
            r"images_variant_test\.txt line 1: expected '<image id> <variant>', got '0123456'",
        ),
    ],
)
def test_unreadable_line_names_file_and_line(tmp_path, task, line, message):
    case = CASES[IDS.index(task)]
    root = case.make(tmp_path, n_classes=3, per_class_test=1)
    _edit_text(root / case.list_file, lambda lines: lines.__setitem__(0, line))
    with pytest.raises(UserError, match=message):
        case.read(root)


def test_cars_never_maps_onto_cars_train(tmp_path):
    root = synthetic.make_cars(tmp_path, n_classes=4, per_class_test=2, per_class_train=2, seed=0)
    split = detect_and_read("car196", root)
    assert all(item.key.startswith("cars_test/") for item in split.items)
    train_names = {p.name for p in (root / "cars_train").iterdir()}
    assert train_names <= {
        PurePosixPath(item.key).name for item in split.items
    }  # names shared, as in the archive
    # a choice file labelled like cars_train/ (the classic mix-up) does not fit the test split
    train = scipy.io.loadmat(str(root / "devkit/cars_train_annos.mat"), squeeze_me=True)["annotations"]
    train_class = {str(a["fname"]): int(a["class"]) - 1 for a in np.atleast_1d(train)}
    test_class = {PurePosixPath(i.key).name: i.label for i in split.items}
    differs = next(name for name in train_class if train_class[name] != test_class[name])
    truth = split.class_names[train_class[differs]]
    others = [n for n in split.class_names if n != truth][:3]
    choices = tmp_path / "mixed.json"
    choices.write_text(
        json.dumps(
            {truth: [{"image": f"images/{differs}", "options": [truth, *others], "groundtruth": truth}]}
        )
    )
    with pytest.raises(
        UserError,
        match=rf"(?s)1 mislabelled.*images/{differs} is '.*' in the dataset \(cars_test/{differs}\)",
    ):
        match_choices(read_choice_file(choices), split)


def test_cars_without_labelled_test_annotations(tmp_path):
    root = synthetic.make_cars(tmp_path, n_classes=3, per_class_test=1)
    (root / "cars_test_annos_withlabels.mat").rename(tmp_path / "elsewhere.mat")
    with pytest.raises(
        UserError,
        match=r"no cars_test_annos_withlabels\.mat here or in devkit/ \(devkit/cars_test_annos\.mat has no labels\)",
    ):
        detect_and_read("car196", root)
    (tmp_path / "elsewhere.mat").rename(root / "devkit" / "cars_test_annos_withlabels.mat")
    assert len(detect_and_read("car196", root).items) == 3


def test_dogs_label_must_match_its_folder(tmp_path):
    root = synthetic.make_dogs(tmp_path, n_classes=3, per_class_test=1)
    _edit_mat(root / "lists/test_list.mat", lambda d: d["labels"].__setitem__((0, 0), 2))
    with pytest.raises(
        UserError,
        match=r"test_list\.mat entry 1: n02085620-Chihuahua/.* has label 2 \(n02085782-Japanese_spaniel\)",
    ):
        detect_and_read("dog120", root)


def test_dogs_list_beside_images_or_missing(tmp_path):
    root = synthetic.make_dogs(tmp_path, n_classes=3, per_class_test=1)
    (root / "lists/test_list.mat").rename(root / "test_list.mat")  # lists.tar extracts flat
    assert len(detect_and_read("dog120", root).items) == 3
    (root / "test_list.mat").unlink()
    with pytest.raises(UserError, match=r"no test_list\.mat in lists/ or beside Images/"):
        detect_and_read("dog120", root)


def test_dogs_labels_follow_sorted_wnids(tmp_path):
    root = synthetic.make_dogs(tmp_path, n_classes=9, per_class_test=1)
    split = detect_and_read("dog120", root)
    wnids = [item.key.split("/")[1].split("-")[0] for item in sorted(split.items, key=lambda i: i.label)]
    assert wnids == sorted(wnids) and split.class_names[-1] == "Synthetic_dog_9"


def test_flowers_need_class_names(tmp_path):
    root = synthetic.make_flowers(tmp_path, n_classes=3, per_class_test=1)
    with pytest.raises(UserError, match=r"has no class names\. Pass --classnames FILE .* or a choice file"):
        detect_and_read("flower102", root)
    assert detect_and_read("flower102", root, class_names=["a", "b", "c"]).class_names == ["a", "b", "c"]
    with pytest.raises(UserError, match=r"imagelabels\.mat entry \d+: label 3 is beyond the 2 class names"):
        detect_and_read("flower102", root, class_names=["a", "b"])


def test_flowers_names_from_a_choice_file(tmp_path):
    root = synthetic.make_flowers(tmp_path, n_classes=4, per_class_test=2)
    named = detect_and_read("flower102", root, classnames=tmp_path / synthetic.FLOWERS_CLASSNAMES)
    choices = synthetic.make_choice_file("flower102", named, tmp_path / "flowers.json")
    data = json.loads(choices.read_text())
    choices.write_text(json.dumps(dict(reversed(data.items()))))  # key order must not matter
    assert detect_and_read("flower102", root, choices=choices).class_names == named.class_names


def test_pets_display_names_and_species_case(tmp_path):
    root = synthetic.make_pets(tmp_path, n_classes=8, per_class_test=1)
    names = detect_and_read("pet37", root).class_names
    assert names == [
        "Abyssinian",
        "American Bulldog",
        "American Pit Bull Terrier",
        "Basset Hound",
        "Beagle",
        "Bengal",
        "Birman",
        "Bombay",
    ]


def test_aircraft_images_carry_the_banner(tmp_path):
    from PIL import Image

    root = synthetic.make_aircraft(tmp_path, n_classes=3, per_class_test=1)
    with Image.open(detect_and_read("aircraft102", root).items[0].image) as image:
        assert image.height == image.width + synthetic.AIRCRAFT_BANNER


def test_class_name_file_must_match_the_class_count(tmp_path):
    root = synthetic.make_aircraft(tmp_path, n_classes=3, per_class_test=1)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    with pytest.raises(UserError, match=r"names\.txt: 2 class names, but the archive has 3 classes"):
        detect_and_read("aircraft102", root, classnames=names)


# ---------------------------------------------------------------- Hugging Face mirrors


def _mirror_rows(tmp_path: Path) -> tuple[DatasetSplit, list[str]]:
    """A synthetic Pets split, and its class names in an order unlike the archive's."""
    split = detect_and_read("pet37", synthetic.make_pets(tmp_path / "src", n_classes=4, per_class_test=2))
    return split, list(reversed(split.class_names))


def _hf_dataset(split: DatasetSplit, names: list[str]):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    rows = {
        "image": [str(item.image) for item in split.items],
        "label": [names.index(split.class_names[item.label]) for item in split.items],
    }
    return datasets.Dataset.from_dict(rows, features=features).cast_column("image", datasets.Image())


def _embedded(dataset):
    """Images stored as bytes (as on the Hub), with their original file names."""
    import datasets

    def embed(row):
        path = row["image"]["path"]
        return {"image": {"bytes": Path(path).read_bytes(), "path": Path(path).name}}

    return (
        dataset.cast_column("image", datasets.Image(decode=False))
        .map(embed)
        .cast_column("image", datasets.Image())
    )


@pytest.mark.parametrize("storage", ["save_to_disk", "parquet", "imagefolder"])
def test_hf_mirror_names_come_from_class_label(tmp_path, storage):
    import datasets

    split, names = _mirror_rows(tmp_path)
    mirror = tmp_path / "mirror"
    if storage == "save_to_disk":
        datasets.DatasetDict({"test": _embedded(_hf_dataset(split, names))}).save_to_disk(str(mirror))
    elif storage == "parquet":
        (mirror / "data").mkdir(parents=True)
        _embedded(_hf_dataset(split, names)).to_parquet(str(mirror / "data" / "test-00000-of-00001.parquet"))
    else:
        names = sorted(split.class_names)  # imagefolder: ClassLabel names are the sorted folder names
        for item in split.items:
            target = mirror / "test" / split.class_names[item.label] / PurePosixPath(item.key).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.image.read_bytes())
    read = detect_and_read("pet37", mirror, cache_dir=tmp_path / "cache")
    assert read.format == "hf-mirror" and read.class_names == names
    assert sorted(read.class_counts().items()) == sorted(split.class_counts().items())
    by_name = {PurePosixPath(i.key).name: read.class_names[i.label] for i in read.items}
    assert by_name == {PurePosixPath(i.key).name: split.class_names[i.label] for i in split.items}
    assert all(i.image.is_file() for i in read.items)
    choices = synthetic.make_choice_file("pet37", split, tmp_path / "pets.json")
    match = match_choices(read_choice_file(choices), read)
    assert len(match.matched) == len(split.items)
    assert all(read.class_names[m.item.label] == m.entry.groundtruth for m in match.matched)


def test_hf_mirror_without_class_label_is_an_error(tmp_path):
    import datasets

    split, names = _mirror_rows(tmp_path)
    plain = _hf_dataset(split, names).cast_column("label", datasets.Value("int64"))
    datasets.DatasetDict({"test": _embedded(plain)}).save_to_disk(str(tmp_path / "mirror"))
    with pytest.raises(UserError, match=r"expected one ClassLabel column for the label, found none"):
        detect_and_read("pet37", tmp_path / "mirror", cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match=r"column 'label' is Value, not a ClassLabel"):
        detect_and_read("pet37", tmp_path / "mirror", cache_dir=tmp_path / "cache", label_column="label")


def test_hf_mirror_missing_split(tmp_path):
    import datasets

    split, names = _mirror_rows(tmp_path)
    datasets.DatasetDict({"validation": _embedded(_hf_dataset(split, names))}).save_to_disk(
        str(tmp_path / "mirror")
    )
    with pytest.raises(UserError, match=r"no split 'test' \(splits: validation\)"):
        detect_and_read("pet37", tmp_path / "mirror", cache_dir=tmp_path / "cache")
