"""Shared pieces of the archive readers: finding the dataset folder, reading the list files line by
line with errors that name the file and line, and collecting test items (missing images included)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit, TestItem

SKIP_HINT = "pass --skip-missing to leave missing images out"


def locate_dataset_dir(root: Path, marker: str, folder_names: Sequence[str]) -> Path | None:
    """The folder that holds `marker`: `root` itself or one of its known archive sub-folders; None
    when neither does (the caller may then try another format, e.g. a Hugging Face mirror)."""
    root = Path(root).expanduser().resolve()
    for candidate in (root, *(root / name for name in folder_names)):
        if (candidate / marker).exists():
            return candidate
    return None


def find_dataset_dir(root: Path, marker: str, folder_names: Sequence[str], dataset: str) -> Path:
    """`locate_dataset_dir`, or an error naming where it looked."""
    found = locate_dataset_dir(root, marker, folder_names)
    if found is not None:
        return found
    root = Path(root).expanduser().resolve()
    looked = ", ".join(str(root / name / marker) for name in folder_names)
    raise UserError(
        f"{root}: not a {dataset} folder: no {marker} there (also looked for {looked}). "
        f"Point --data-root at the extracted {dataset} archive."
    )


def require_file(path: Path, dataset: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: file missing from the {dataset} archive. Re-extract the archive there.")
    return path


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); is this the right file?"
        ) from err


def read_rows(path: Path, n_fields: int, expected: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank, non-comment line of a whitespace-separated table.

    The last field keeps any inner spaces, so "1514522 BAE 146-200" gives two fields."""
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split(maxsplit=n_fields - 1)
        if len(fields) != n_fields:
            raise UserError(f"{path} line {lineno}: expected '{expected}', got '{text}'")
        yield lineno, fields


def load_mat(path: Path, dataset: str, keys: Sequence[str]) -> dict:
    """A MATLAB file's variables (squeezed), checking that `keys` are there."""
    import scipy.io

    require_file(path, dataset)
    try:
        data = scipy.io.loadmat(str(path), squeeze_me=True)
    except Exception as err:  # scipy raises ValueError, TypeError or its own MatReadError
        raise UserError(
            f"{path}: not a readable MATLAB file ({err}); re-extract it from the {dataset} archive"
        ) from err
    missing = [key for key in keys if key not in data]
    if missing:
        found = ", ".join(k for k in data if not k.startswith("__"))
        raise UserError(
            f"{path}: no variable {', '.join(missing)} in this MATLAB file (found: {found}); is this the right file?"
        )
    return data


def check_split(split: str, dataset: str, known: Sequence[str] = ("test", "train")) -> str:
    """`split` when the reader knows it; the train split is the archive's official training set."""
    if split not in known:
        raise UserError(f"{dataset}: no split '{split}'; the readable splits are {', '.join(known)}")
    return split


def parse_int(text: str, where: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{where}: {what} must be a whole number, got '{text}'") from None


def mat_int(value: object, where: str, what: str) -> int:
    """A whole number stored in a MATLAB file (often as a double: 3.0)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise UserError(f"{where}: {what} must be a whole number, got {value!r}")
    return int(number)


def read_name_list(path: Path) -> list[str]:
    """One class name per line, in label order (blank lines ignored)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"{path}: class-name file not found (expected one class name per line, in label order)"
        )
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not names:
        raise UserError(f"{path}: no class names in the file (expected one per line, in label order)")
    return names


def replace_names(archive_names: list[str], classnames: Path) -> list[str]:
    """The names of a --classnames file in place of the archive's own; the counts must agree."""
    names = read_name_list(classnames)
    if len(names) != len(archive_names):
        raise UserError(
            f"{classnames}: {len(names)} class names, but the archive has {len(archive_names)} classes; "
            "give one name per class, in label order"
        )
    return names


class SplitCollector:
    """Collects test items, checking labels and image files as they come.

    `where` in `add` names the source line ("images.txt line 12") so that errors point at it."""

    def __init__(
        self,
        task: str,
        format: str,
        root: Path,
        class_names: list[str],
        skip_missing: bool,
        split: str = "test",
    ):
        self.task, self.format, self.root, self.split = task, format, root, split
        self.class_names = class_names
        self.skip_missing = skip_missing
        self.items: list[TestItem] = []
        self.skipped: list[str] = []

    def add(self, key: str, label: int, where: str, *, label_where: str | None = None) -> None:
        """Add the image at `key` (posix, relative to the root) with a 0-based label.

        `where` names the line listing the image, `label_where` the one giving its label if elsewhere;
        label errors quote the label 1-based, as the archives' list files do."""
        if not 0 <= label < len(self.class_names):
            raise UserError(
                f"{label_where or where}: label {label + 1} is out of range 1..{len(self.class_names)} "
                f"(the archive lists {len(self.class_names)} classes); the list file is damaged, re-extract it"
            )
        image = self.root / key
        if not image.is_file():
            if not self.skip_missing:
                raise UserError(
                    f"{where}: image {key} not found under {self.root}; restore it, or {SKIP_HINT}"
                )
            self.skipped.append(key)
            return
        self.items.append(TestItem(image=image, label=label, key=key))

    def build(self, source: Path) -> DatasetSplit:
        """The split; an empty one is an error naming `source`, the file that lists the test images."""
        if not self.items:
            detail = f" (all {len(self.skipped)} listed images are missing)" if self.skipped else ""
            raise UserError(f"{source}: no {self.split} images{detail}; check that the archive is complete")
        return DatasetSplit(
            task=self.task,
            format=self.format,
            root=self.root,
            class_names=self.class_names,
            items=self.items,
            skipped=self.skipped,
        )
