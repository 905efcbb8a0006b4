"""The TRAIN split of every reader on the six synthetic layouts (and an HF mirror): same class names
and label order as the test split, the official train lists, clear errors when they are missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import UserError
from tasks.fixtures import datasets as synthetic
from tasks.registry import FGVR_TASKS, detect_and_read

N_CLASSES, PER_TEST, PER_TRAIN = 4, 1, 2
MAKERS = {key: task.make_synthetic() for key, task in FGVR_TASKS.items()}  # every registered layout
TRAIN_LISTS = {  # the file the train split comes from, relative to the archive folder
    "bird200": "train_test_split.txt",
    "car196": "devkit/cars_train_annos.mat",
    "dog120": "lists/train_list.mat",
    "flower102": "setid.mat",
    "pet37": "annotations/trainval.txt",
    "aircraft102": "data/images_variant_trainval.txt",
}


def read(task: str, root: Path, split: str):
    names = synthetic.synthetic_class_names(task, root)
    return detect_and_read(task, root, class_names=names, split=split)


@pytest.fixture(params=list(MAKERS))
def archive(request, tmp_path) -> tuple[str, Path]:
    task = request.param
    return task, MAKERS[task](
        tmp_path, n_classes=N_CLASSES, per_class_test=PER_TEST, per_class_train=PER_TRAIN, seed=1
    )


def test_train_split_shares_classes_and_is_disjoint_from_test(archive):
    task, root = archive
    test, train = read(task, root, "test"), read(task, root, "train")
    assert train.class_names == test.class_names
    assert not {item.image for item in train.items} & {item.image for item in test.items}
    expected = (
        N_CLASSES if task == "flower102" else N_CLASSES * PER_TRAIN
    )  # Flowers: trnid; valid is the rest
    assert len(train.items) == expected
    assert sorted({item.label for item in train.items}) == list(range(N_CLASSES))


def test_train_labels_match_the_drawn_class(archive):
    """Each synthetic class has its own hue: a train image's mean colour is nearest its class's test images."""
    import numpy as np
    from PIL import Image

    task, root = archive
    test, train = read(task, root, "test"), read(task, root, "train")

    def signature(item):
        pixels = np.asarray(Image.open(item.image).convert("RGB"), dtype=float)
        return np.sort(pixels.reshape(-1, 3), axis=0)[: pixels.size // 12].mean(
            0
        )  # the shape's darker colour

    centres = {item.label: signature(item) for item in test.items}
    for item in train.items:
        nearest = min(centres, key=lambda label: np.linalg.norm(centres[label] - signature(item)))
        assert nearest == item.label, item.key


@pytest.mark.parametrize("task", list(TRAIN_LISTS))  # the readers whose train list this test knows
def test_missing_train_list_names_the_file(task, tmp_path):
    root = MAKERS[task](
        tmp_path, n_classes=N_CLASSES, per_class_test=PER_TEST, per_class_train=PER_TRAIN, seed=1
    )
    path = root / TRAIN_LISTS[task]
    if task == "bird200":  # the split lives in a file shared with the test split: keep only test entries
        path.write_text("".join(f"{line.split()[0]} 0\n" for line in path.read_text().splitlines()))
    elif task == "flower102":
        import scipy.io

        setid = scipy.io.loadmat(path)
        scipy.io.savemat(path, {"tstid": setid["tstid"], "trnid": np.zeros((1, 0)), "valid": setid["valid"]})
    else:
        path.unlink()
    with pytest.raises(UserError, match=path.name):
        read(task, root, "train")


def test_flowers_trainval_adds_the_validation_images(tmp_path):
    root = synthetic.make_flowers(tmp_path, n_classes=N_CLASSES, per_class_test=1, per_class_train=2, seed=1)
    train, trainval = read("flower102", root, "train"), read("flower102", root, "trainval")
    assert len(trainval.items) == 2 * len(train.items)
    assert {i.key for i in train.items} < {i.key for i in trainval.items}


def test_unknown_split_is_a_user_error(tmp_path):
    root = synthetic.make_pets(tmp_path, n_classes=2)
    with pytest.raises(UserError, match="no split 'val'.*test, train"):
        read("pet37", root, "val")


def test_cub_without_train_images_names_the_split_file(tmp_path):
    root = synthetic.make_cub(tmp_path, n_classes=2, with_attributes=False)
    split_file = root / "train_test_split.txt"
    split_file.write_text("".join(f"{line.split()[0]} 0\n" for line in split_file.read_text().splitlines()))
    with pytest.raises(UserError, match=r"train_test_split\.txt: no train images"):
        read("bird200", root, "train")


def test_hf_mirror_train_split(tmp_path):
    root = synthetic.make_dogs(tmp_path / "raw", n_classes=3, per_class_test=1, per_class_train=2)
    mirror = synthetic.make_hf_mirror("dog120", root, tmp_path / "mirror")
    native, mirrored = read("dog120", root, "train"), detect_and_read("dog120", mirror, split="train")
    assert mirrored.class_names == native.class_names
    assert [i.image.read_bytes() for i in mirrored.items] == [i.image.read_bytes() for i in native.items]
    assert all(i.key.startswith("train/") for i in mirrored.items)
