"""CUB-200-2011's own per-image attribute annotations as descriptions (the paper's "human" upper bound,
Table 6e): attributes.txt ("<id> has_<part>::<value>", beside CUB_200_2011/ in the archive, or inside it)
and attributes/image_attribute_labels.txt ("<image_id> <attribute_id> <is_present> <certainty_id> <time>").
Only attributes marked present with certainty "probably" (3) or "definitely" (4) are used."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from harness.core.errors import UserError

PROBABLY = 3  # certainties.txt: 1 not visible, 2 guessing, 3 probably, 4 definitely


def find_attribute_files(cub_root: Path) -> tuple[Path, Path]:
    """(attributes.txt, image_attribute_labels.txt) of the CUB folder `cub_root` (CUB_200_2011/)."""
    names = next(
        (p for p in (cub_root / "attributes.txt", cub_root.parent / "attributes.txt") if p.is_file()), None
    )
    labels = cub_root / "attributes" / "image_attribute_labels.txt"
    if names is None or not labels.is_file():
        missing = [
            str(p)
            for p, ok in ((cub_root.parent / "attributes.txt", names), (labels, labels.is_file()))
            if not ok
        ]
        raise UserError(
            f"--attributes human needs CUB's attribute annotations; missing: {', '.join(missing)}. They come with "
            "CUB_200_2011.tgz (attributes.txt beside CUB_200_2011/, attributes/ inside it); re-extract the archive."
        )
    return names, labels


def read_human_attributes(cub_root: Path) -> dict[str, list[str]]:
    """images.txt path ('images/<class>/<file>', our item key) -> confidently present attribute names."""
    from tasks.datasets.layout import read_rows

    names_file, labels_file = find_attribute_files(cub_root)
    names = {
        attribute_id: name for _, (attribute_id, name) in read_rows(names_file, 2, "<attribute_id> <name>")
    }
    images = {
        image_id: f"images/{path}"
        for _, (image_id, path) in read_rows(cub_root / "images.txt", 2, "<id> <path>")
    }
    present: dict[str, list[str]] = defaultdict(list)
    for lineno, line in enumerate(labels_file.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        # The real file has a few lines with an extra field; the first four are what matters.
        if len(fields) < 4 or not all(f.isdigit() for f in fields[:4]):
            raise UserError(
                f"{labels_file} line {lineno}: expected '<image_id> <attribute_id> <is_present> "
                f"<certainty_id> <time>', got {line.strip()!r}"
            )
        image_id, attribute_id, is_present, certainty = fields[:4]
        if attribute_id not in names:
            raise UserError(f"{labels_file} line {lineno}: attribute {attribute_id} is not in {names_file}")
        if image_id not in images:
            raise UserError(f"{labels_file} line {lineno}: image {image_id} is not in images.txt")
        if is_present == "1" and int(certainty) >= PROBABLY:
            present[images[image_id]].append(names[attribute_id])
    return dict(present)


def describe(attribute_names: list[str], superclass: str) -> str:
    """['has_wing_color::blue', 'has_wing_color::white', 'has_size::small_(5_-_9_in)'] ->
    "The bird's wing color is blue and white. Its size is small (5 - 9 in).\""""
    values: dict[str, list[str]] = {}
    for name in attribute_names:
        part, _, value = name.partition("::")
        part = part.removeprefix("has_").replace("_", " ")
        values.setdefault(part, []).append(value.replace("_", " "))
    sentences = []
    for number, (part, found) in enumerate(values.items()):
        subject = f"The {superclass}'s" if number == 0 else "Its"
        joined = found[0] if len(found) == 1 else ", ".join(found[:-1]) + f" and {found[-1]}"
        sentences.append(f"{subject} {part} is {joined}.")
    return " ".join(sentences)
