"""The data-construction prompts of each dataset: prompts/common.yaml with the task's super-category
and unit from its registry row (`TaskSpec.singular`, `TaskSpec.unit`), overlaid with a user's file
given with `--prompts TASK=FILE`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from harness.core.errors import UserError

PROMPT_DIR = Path(__file__).with_name("prompts")
FIELDS = ("superclass", "unit", "discovery", "vqa", "general", "summary", "class_tags")
PLACEHOLDERS = {  # what each template may use; a typo is an error before any model loads
    "discovery": {"superclass", "unit"},
    "vqa": {"superclass", "unit", "attribute"},
    "general": {"superclass", "unit"},
    "summary": {"superclass", "unit", "attributes"},
    "class_tags": {"superclass", "unit", "category"},
}


@dataclass(frozen=True)
class DataPrompts:
    superclass: str  # "bird": "What is the name of the bird in this image?"
    unit: str  # "species": "distinguishing bird species"
    discovery: str
    vqa: str
    general: str
    summary: str
    class_tags: str
    source: str = ""  # the file(s) they came from

    def render(self, template: str, **values: str) -> str:
        return getattr(self, template).format(superclass=self.superclass, unit=self.unit, **values)

    def as_dict(self) -> dict:
        return asdict(self)


def load_prompts(task: str, override: Path | None = None) -> DataPrompts:
    from tasks.registry import get_task

    spec = get_task(task)
    files = [PROMPT_DIR / "common.yaml", *([override] if override else [])]
    merged: dict = {"superclass": spec.singular, "unit": spec.unit}
    for path in files:
        if not path.is_file():
            raise UserError(
                f"{path}: prompt file not found (expected YAML with the keys {', '.join(FIELDS)})"
            )
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise UserError(f"{path}: not valid YAML ({error})") from error
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: expected a mapping of prompt names to text")
        unknown = sorted(set(loaded) - set(FIELDS))
        if unknown:
            raise UserError(f"{path}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(FIELDS)}")
        merged.update(loaded)
    missing = [name for name in FIELDS if not isinstance(merged.get(name), str) or not merged[name].strip()]
    if missing:
        raise UserError(f"{files[-1]}: no text for {', '.join(missing)}")
    for name, allowed in PLACEHOLDERS.items():
        _check_placeholders(merged[name], allowed, f"{files[-1]}: '{name}'")
    source = " + ".join([*map(str, files), *([] if override else [f"tasks.registry {task}"])])
    return DataPrompts(**{name: merged[name].strip() for name in FIELDS}, source=source)


def _check_placeholders(template: str, allowed: set[str], where: str) -> None:
    import string

    try:
        used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as error:
        raise UserError(
            f"{where}: broken placeholder ({error}); write {{name}}, and {{{{ }}}} for braces"
        ) from error
    unknown = sorted(used - allowed)
    if unknown:
        raise UserError(
            f"{where}: unknown placeholder(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
