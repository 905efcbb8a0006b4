"""Test sets mirrored as Hugging Face `datasets` on local disk: a `save_to_disk` folder, a folder of
parquet files (the Hub's layout), or an imagefolder (<split>/<class>/<image>).

Class names come from the dataset's own ClassLabel feature, never from an assumed index order.
Images stored as bytes are written once to a cache folder, since a TestItem is a file on disk;
each item's key is "<split>/<stored file name>", so choice files still match by file name."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from harness.core.errors import UserError
from harness.core.paths import harness_home
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.datasets.layout import SKIP_HINT

FORMAT = "hf-mirror"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def looks_like_hf_mirror(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return path.suffix == ".parquet"
    if any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json")):
        return True
    return bool(_parquet_files(path)) or _imagefolder_splits(path) != []


def read_hf_mirror(
    path: Path,
    task: str,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    split: str = "test",
    cache_dir: Path | None = None,
    skip_missing: bool = False,
) -> DatasetSplit:
    """The `split` of a local HF dataset as a DatasetSplit of `task`."""
    import datasets

    path = Path(path).expanduser().resolve()
    table = _load(path, split)
    image_column = _pick_column(path, table.features, image_column, datasets.Image, "image")
    label_column = _pick_column(path, table.features, label_column, datasets.ClassLabel, "label")
    label_feature = table.features[label_column]
    if not isinstance(label_feature, datasets.ClassLabel):
        raise UserError(
            f"{path}: column '{label_column}' is {type(label_feature).__name__}, not a ClassLabel, so its class "
            "names are unknown; use a mirror whose label column is a ClassLabel, or the original archive"
        )
    table = table.cast_column(image_column, datasets.Image(decode=False))
    cache = Path(cache_dir) if cache_dir else _default_cache(path, split)
    items, skipped, seen = [], [], set()
    for index, row in enumerate(table.select_columns([image_column, label_column])):
        where = f"{path} split '{split}' row {index}"
        label = row[label_column]
        if label is None or not 0 <= label < label_feature.num_classes:
            raise UserError(f"{where}: label {label} is out of range 0..{label_feature.num_classes - 1}")
        image, name = _materialise(row[image_column], index, cache)
        if image is None:
            if not skip_missing:
                raise UserError(f"{where}: no image data and no readable image file; {SKIP_HINT}")
            skipped.append(f"{split}/{name}")
            continue
        key = f"{split}/{name}" if name not in seen else f"{split}/{index:06d}/{name}"
        seen.add(name)
        items.append(TestItem(image=image, label=label, key=key))
    if not items:
        raise UserError(f"{path}: split '{split}' has no usable images")
    return DatasetSplit(task, FORMAT, path, list(label_feature.names), items, skipped)


def _load(path: Path, split: str):
    import datasets

    if path.is_dir() and any((path / n).is_file() for n in ("dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(str(path))
        return _pick_split(path, loaded, split)
    files = [path] if path.is_file() else _parquet_files(path)
    if files:
        chosen = files if path.is_file() else [f for f in files if _split_of(f, path) == split]
        if not chosen:
            found = sorted({_split_of(f, path) for f in files})
            raise UserError(
                f"{path}: no parquet files for split '{split}' (splits found: {', '.join(found)})"
            )
        return _from_parquet(chosen)
    if split in _imagefolder_splits(path):
        loaded = datasets.load_dataset(
            "imagefolder", data_dir=str(path), cache_dir=str(harness_home() / "hf-datasets-cache")
        )
        return _pick_split(path, loaded, split)
    raise UserError(
        f"{path}: not a Hugging Face dataset folder (no dataset_dict.json / state.json, no parquet files, "
        f"no imagefolder with a '{split}/' folder); point --data-root at the mirror or the original archive"
    )


def _pick_split(path: Path, loaded, split: str):
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return loaded
    if split not in loaded:
        raise UserError(f"{path}: no split '{split}' (splits: {', '.join(loaded)}); pick one with split=")
    return loaded[split]


def _from_parquet(files: list[Path]):
    """An in-memory Dataset; the features (ClassLabel names included) come from the files' metadata."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.concat_tables([pq.read_table(f) for f in files])
    except (pa.ArrowInvalid, OSError) as err:
        raise UserError(f"{files[0].parent}: unreadable parquet file ({err})") from err
    return datasets.Dataset(datasets.table.InMemoryTable(table))


def _parquet_files(path: Path) -> list[Path]:
    """Parquet files up to two folders down (data/test-00000-of-00001.parquet, default/test/0000.parquet)."""
    return sorted(p for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet") for p in path.glob(pattern))


def _split_of(file: Path, root: Path) -> str:
    """'data/test-00000-of-00001.parquet' and 'test/0000.parquet' are both split 'test'."""
    parent = file.parent.relative_to(root).parts
    if parent and parent[-1] not in ("data", "default"):
        return parent[-1]
    return file.stem.split("-", 1)[0]


def _imagefolder_splits(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return [
        split.name
        for split in path.iterdir()
        if split.is_dir()
        and any(
            c.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in c.iterdir())
            for c in split.iterdir()
        )
    ]


def _pick_column(path: Path, features, given: str | None, kind: type, role: str) -> str:
    if given is not None:
        if given not in features:
            raise UserError(f"{path}: no column '{given}' (columns: {', '.join(features)})")
        return given
    matches = [name for name, feature in features.items() if isinstance(feature, kind)]
    if len(matches) != 1:
        found = f"several ({', '.join(matches)})" if matches else "none"
        raise UserError(
            f"{path}: expected one {kind.__name__} column for the {role}, found {found} among "
            f"{', '.join(features)}; name it with {role}_column="
        )
    return matches[0]


def _materialise(value: dict, index: int, cache: Path) -> tuple[Path | None, str]:
    """(the image file, its file name); images held as bytes are written to `cache` first."""
    stored = value.get("path") or ""
    name = PurePosixPath(stored.replace("\\", "/")).name or f"{index:06d}.jpg"
    if value.get("bytes") is None:
        file = Path(stored)
        return (file if file.is_absolute() and file.is_file() else None), name
    file = cache / f"{index:06d}_{name}"
    if not file.is_file() or file.read_bytes() != value["bytes"]:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(file.name + ".partial")
        partial.write_bytes(value["bytes"])
        partial.replace(file)
    return file, name


def _default_cache(path: Path, split: str) -> Path:
    digest = hashlib.sha256(f"{path}\n{split}".encode()).hexdigest()[:16]
    return harness_home() / "hf-mirror-images" / digest
