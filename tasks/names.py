"""The one class-name normaliser: how names from datasets, choice files and model answers are compared."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[_\-\s]+")


def normalize_class_name(name: str) -> str:
    """Case, '_' / '-' / ' ', runs of whitespace and trailing full stops do not distinguish class names:
    'Black_footed_Albatross', 'black-footed  albatross' and 'Black footed Albatross.' are one name."""
    return " ".join(_SEPARATORS.sub(" ", name).casefold().split()).strip(" .")
