"""Small datasets in the ORIGINAL on-disk layouts of the six FGVR test sets, with drawn images.

Each class gets its own colour and shape, so a model could in principle tell the classes apart.
Every `make_*` writes the archive folder under `root` and returns it (the folder the reader takes).
Output is deterministic for a given seed. `make_choice_file` writes a FOCI-format choice file with
the authors' image paths (`choice_path` of each reader)."""

from __future__ import annotations

import colorsys
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageDraw

from tasks.datasets.base import DatasetSplit

IMAGE_SIZE = 48
AIRCRAFT_BANNER = 20  # the real FGVC-Aircraft images carry a 20-px copyright banner at the bottom
FLOWERS_CLASSNAMES = "flowers102_classnames.txt"  # written next to the flowers-102 folder

BIRDS = [
    "Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani", "Crested_Auklet",
    "Least_Auklet", "Parakeet_Auklet", "Rhinoceros_Auklet", "Brewer_Blackbird", "Red_winged_Blackbird",
]  # fmt: skip
CARS = [
    "AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Type-S 2008", "Audi R8 Coupe 2012",
    "BMW M3 Coupe 2012", "Chevrolet Malibu Sedan 2007", "Suzuki Aerio Sedan 2007", "Tesla Model S Sedan 2012",
]  # fmt: skip
DOGS = [
    "n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog", "n02086079-Pekinese",
    "n02086240-Shih-Tzu", "n02086646-Blenheim_spaniel", "n02086910-papillon", "n02087046-toy_terrier",
]  # fmt: skip
FLOWERS = [
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise",
]  # fmt: skip
PETS = [  # (file-name breed, species: 1 cat, 2 dog); cats are capitalised in the real file names
    ("Abyssinian", 1), ("american_bulldog", 2), ("american_pit_bull_terrier", 2), ("basset_hound", 2),
    ("beagle", 2), ("Bengal", 1), ("Birman", 1), ("Bombay", 1),
]  # fmt: skip
AIRCRAFT = ["707-320", "727-200", "A300B4", "BAE 146-200", "F-16A/B", "F/A-18", "Cessna 172", "DHC-8-100"]


# ---------------------------------------------------------------- images


def draw_class_image(label: int, n_classes: int, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """A noisy background with one shape: the shape and its hue identify the class."""
    hue = (label * 0.618034) % 1.0
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.95))
    noise = np.random.default_rng(rng.getrandbits(32)).integers(150, 230, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    draw = ImageDraw.Draw(image)
    r = size * rng.uniform(0.25, 0.35)
    cx, cy = size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)
    shape = label % 5
    if shape == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == 1:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == 2:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    elif shape == 3:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    else:
        w = r / 3
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    return image


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=90)


def _names(base: list, n_classes: int, extra) -> list:
    """The first `n_classes` of `base`, made up with `extra(i)` beyond its end."""
    return [base[i] if i < len(base) else extra(i) for i in range(n_classes)]


def _split_plan(
    n_classes: int, per_class_test: int, per_class_train: int, seed: int
) -> Iterator[tuple[int, bool, random.Random]]:
    """(label, is_test, rng) for every image, train and test interleaved within each class."""
    rng = random.Random(seed)
    for label in range(n_classes):
        flags = [True] * per_class_test + [False] * per_class_train
        rng.shuffle(flags)
        for is_test in flags:
            yield label, is_test, random.Random(rng.getrandbits(64))


# ---------------------------------------------------------------- CUB-200-2011


def make_cub(
    root: Path, n_classes: int = 5, per_class_test: int = 2, per_class_train: int = 1, seed: int = 0
) -> Path:
    """CUB_200_2011/{classes.txt, images.txt, image_class_labels.txt, train_test_split.txt, images/}."""
    folder = Path(root) / "CUB_200_2011"
    names = _names(BIRDS, n_classes, lambda i: f"Synthetic_Bird_{i + 1}")
    images, labels, split = [], [], []
    for image_id, (label, is_test, rng) in enumerate(
        _split_plan(n_classes, per_class_test, per_class_train, seed), 1
    ):
        class_folder = f"{label + 1:03d}.{names[label]}"
        file_stem = "_".join(word.capitalize() for word in names[label].split("_"))
        rel = f"{class_folder}/{file_stem}_{image_id:04d}_{rng.randrange(10**5)}.jpg"
        _save(draw_class_image(label, n_classes, rng), folder / "images" / rel)
        images.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {label + 1}")
        split.append(f"{image_id} {0 if is_test else 1}")
    _write_lines(folder / "classes.txt", [f"{i + 1} {i + 1:03d}.{name}" for i, name in enumerate(names)])
    _write_lines(folder / "images.txt", images)
    _write_lines(folder / "image_class_labels.txt", labels)
    _write_lines(folder / "train_test_split.txt", split)
    return folder


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


# ---------------------------------------------------------------- choice files


def make_choice_file(
    task: str,
    source: DatasetSplit | Path,
    out_path: Path,
    *,
    k: int = 4,
    seed: int = 0,
    classnames: Path | None = None,
) -> Path:
    """A FOCI-format choice file for the test split of `source` (a split, or a dataset folder).

    Ground truth first, then k-1 distinct seeded negatives, as in the Finedefics files; classes in
    label order; image paths in the authors' convention for the task."""
    from tasks.datasets.registry import detect_and_read, get_layout

    layout = get_layout(task)
    if not isinstance(source, DatasetSplit):
        names_file = Path(source).parent / FLOWERS_CLASSNAMES
        if classnames is None and not layout.names_in_archive and names_file.is_file():
            classnames = names_file  # written there by make_flowers
        source = detect_and_read(task, Path(source), classnames=classnames)
    split = source
    if not 2 <= k <= split.n_classes:
        raise ValueError(f"k={k} options need 2..{split.n_classes} classes")
    rng = random.Random(seed)
    by_class: dict[str, list[dict]] = {name: [] for name in split.class_names}
    for item in split.items:
        negatives = rng.sample([i for i in range(split.n_classes) if i != item.label], k - 1)
        truth = split.class_names[item.label]
        by_class[truth].append(
            {
                "image": layout.choice_path(item),
                "options": [truth, *(split.class_names[i] for i in negatives)],
                "groundtruth": truth,
            }
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({name: rows for name, rows in by_class.items() if rows}), encoding="utf-8")
    return out_path


# ---------------------------------------------------------------- Stanford Cars


def make_cars(
    root: Path, n_classes: int = 5, per_class_test: int = 2, per_class_train: int = 1, seed: int = 0
) -> Path:
    """stanford_cars/{devkit/cars_meta.mat, devkit/cars_{train,test}_annos.mat,
    cars_test_annos_withlabels.mat, cars_train/, cars_test/}.

    As in the real archive, cars_train/ and cars_test/ number their files from 00001.jpg, so the
    same file name is a different car in each; test and train images are shuffled across classes."""
    folder = Path(root) / "stanford_cars"
    names = _names(CARS, n_classes, lambda i: f"Synthetic Make Model{i + 1} Sedan 2012")
    plan = list(_split_plan(n_classes, per_class_test, per_class_train, seed))
    random.Random(seed).shuffle(plan)
    for subset, is_test in (("cars_test", True), ("cars_train", False)):
        records = []
        images = [(label, rng) for label, test, rng in plan if test == is_test]
        for number, (label, rng) in enumerate(images, 1):
            fname = f"{number:05d}.jpg"
            _save(draw_class_image(label, n_classes, rng), folder / subset / fname)
            records.append((fname, label + 1))
        if is_test:
            _save_mat(folder / "cars_test_annos_withlabels.mat", annotations=_car_annotations(records, True))
            _save_mat(folder / "devkit" / "cars_test_annos.mat", annotations=_car_annotations(records, False))
        else:
            _save_mat(folder / "devkit" / "cars_train_annos.mat", annotations=_car_annotations(records, True))
    _save_mat(folder / "devkit" / "cars_meta.mat", class_names=_cell(names, row=True))
    return folder


def _car_annotations(records: list[tuple[str, int]], with_class: bool) -> np.ndarray:
    """The devkit's 1xN struct: bbox_x1, bbox_y1, bbox_x2, bbox_y2, [class,] fname."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", *(["class"] if with_class else []), "fname"]
    struct = np.zeros((1, len(records)), dtype=[(name, object) for name in fields])
    for i, (fname, class_id) in enumerate(records):
        box = [np.array([[v]], dtype=np.uint16) for v in (4, 4, IMAGE_SIZE - 4, IMAGE_SIZE - 4)]
        label = [np.array([[class_id]], dtype=np.uint8)] if with_class else []
        struct[0, i] = (*box, *label, np.array([fname]))
    return struct


def _cell(values: list, row: bool = False) -> np.ndarray:
    """A MATLAB cell array (1xN if `row`, else Nx1)."""
    cell = np.empty((1, len(values)) if row else (len(values), 1), dtype=object)
    for i, value in enumerate(values):
        cell.flat[i] = value
    return cell


def _save_mat(path: Path, **variables) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), variables)


# ---------------------------------------------------------------- Stanford Dogs


def make_dogs(
    root: Path, n_classes: int = 5, per_class_test: int = 2, per_class_train: int = 1, seed: int = 0
) -> Path:
    """stanford_dogs/{Images/<wnid>-<Name>/<wnid>_<n>.jpg, lists/{test,train,file}_list.mat}; labels
    are 1-based indices of the sorted wnids."""
    folder = Path(root) / "stanford_dogs"
    classes = sorted(_names(DOGS, n_classes, lambda i: f"n0300{i:04d}-Synthetic_dog_{i + 1}"))
    lists: dict[bool, list[tuple[str, int]]] = {True: [], False: []}
    for number, (label, is_test, rng) in enumerate(
        _split_plan(n_classes, per_class_test, per_class_train, seed), 1
    ):
        wnid = classes[label].split("-", 1)[0]
        rel = f"{classes[label]}/{wnid}_{1000 + number}.jpg"
        _save(draw_class_image(label, n_classes, rng), folder / "Images" / rel)
        lists[is_test].append((rel, label + 1))
    for name, rows in (
        ("test_list", lists[True]),
        ("train_list", lists[False]),
        ("file_list", lists[False] + lists[True]),
    ):
        _save_mat(
            folder / "lists" / f"{name}.mat",
            file_list=_cell([rel for rel, _ in rows]),
            annotation_list=_cell([rel.removesuffix(".jpg") for rel, _ in rows]),
            labels=np.array([[label] for _, label in rows], dtype=np.float64),
        )
    return folder


# ---------------------------------------------------------------- Oxford Flowers-102


def make_flowers(
    root: Path, n_classes: int = 5, per_class_test: int = 2, per_class_train: int = 2, seed: int = 0
) -> Path:
    """flowers-102/{jpg/image_XXXXX.jpg, imagelabels.mat, setid.mat}. The archive has no class
    names: they are written to root/flowers102_classnames.txt (one per line, label order)."""
    folder = Path(root) / "flowers-102"
    names = _names(FLOWERS, n_classes, lambda i: f"synthetic flower {i + 1}")
    plan = list(_split_plan(n_classes, per_class_test, per_class_train, seed))
    random.Random(seed).shuffle(plan)
    labels, ids = [], {"tstid": [], "trnid": [], "valid": []}
    for number, (label, is_test, rng) in enumerate(plan, 1):
        _save(draw_class_image(label, n_classes, rng), folder / "jpg" / f"image_{number:05d}.jpg")
        labels.append(label + 1)
        ids["tstid" if is_test else ("trnid" if len(ids["trnid"]) <= len(ids["valid"]) else "valid")].append(
            number
        )
    _save_mat(folder / "imagelabels.mat", labels=np.array([labels], dtype=np.uint8))
    _save_mat(folder / "setid.mat", **{key: np.array([value], dtype=np.uint16) for key, value in ids.items()})
    _write_lines(Path(root) / FLOWERS_CLASSNAMES, names)
    return folder


# ---------------------------------------------------------------- Oxford-IIIT Pet


def make_pets(
    root: Path, n_classes: int = 5, per_class_test: int = 2, per_class_train: int = 1, seed: int = 0
) -> Path:
    """oxford-iiit-pet/{images/<Breed>_<n>.jpg, annotations/{test,trainval,list}.txt}; lines
    "Image CLASS-ID SPECIES BREED-ID", classes in the archive's order (case-insensitive A-Z)."""
    folder = Path(root) / "oxford-iiit-pet"
    breeds = _names(PETS, n_classes, lambda i: (f"synthetic_breed_{i + 1}", 2))
    breed_ids = {1: 0, 2: 0}
    lines: dict[bool, list[str]] = {True: [], False: []}
    numbers: dict[int, int] = {}
    for label, is_test, rng in _split_plan(n_classes, per_class_test, per_class_train, seed):
        breed, species = breeds[label]
        if label not in numbers:
            breed_ids[species] += 1
        numbers[label] = numbers.get(label, 0) + 1
        image = f"{breed}_{numbers[label] * 7}"
        _save(draw_class_image(label, n_classes, rng), folder / "images" / f"{image}.jpg")
        lines[is_test].append(f"{image} {label + 1} {species} {breed_ids[species]}")
    header = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids", "#SPECIES: 1:Cat 2:Dog"]
    _write_lines(folder / "annotations" / "test.txt", lines[True])
    _write_lines(folder / "annotations" / "trainval.txt", lines[False])
    _write_lines(folder / "annotations" / "list.txt", header + lines[False] + lines[True])
    return folder


# ---------------------------------------------------------------- FGVC-Aircraft


def make_aircraft(
    root: Path, n_classes: int = 5, per_class_test: int = 2, per_class_train: int = 1, seed: int = 0
) -> Path:
    """fgvc-aircraft-2013b/data/{variants.txt, images_variant_{test,trainval}.txt, images/<id>.jpg};
    every image carries the 20-px banner at the bottom that the real photographs have."""
    folder = Path(root) / "fgvc-aircraft-2013b"
    data = folder / "data"
    variants = _names(AIRCRAFT, n_classes, lambda i: f"Synthetic-{i + 1}")
    ids = random.Random(seed).sample(range(10**5, 10**7), n_classes * (per_class_test + per_class_train))
    lines: dict[bool, list[str]] = {True: [], False: []}
    for image_id, (label, is_test, rng) in zip(
        ids, _split_plan(n_classes, per_class_test, per_class_train, seed), strict=True
    ):
        _save(_with_banner(draw_class_image(label, n_classes, rng)), data / "images" / f"{image_id:07d}.jpg")
        lines[is_test].append(f"{image_id:07d} {variants[label]}")
    _write_lines(data / "variants.txt", variants)
    _write_lines(data / "images_variant_test.txt", sorted(lines[True]))
    _write_lines(data / "images_variant_trainval.txt", sorted(lines[False]))
    _write_lines(data / "images_test.txt", sorted(line.split()[0] for line in lines[True]))
    return folder


def _with_banner(image: Image.Image) -> Image.Image:
    framed = Image.new("RGB", (image.width, image.height + AIRCRAFT_BANNER), (20, 20, 20))
    framed.paste(image, (0, 0))
    ImageDraw.Draw(framed).text((2, image.height + 4), "(c) Synth", fill=(235, 235, 235))
    return framed
