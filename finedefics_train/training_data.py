"""The training sets `harness train data` writes, checked on load, and the collators that batch them.

On disk (HF `datasets` save_to_disk folders beside a `manifest.json`):
- `stage1/`: image, image_id, task, label, category, superclass, attribute (description),
  neg_categories, neg_attributes, neg_image_ids (3 each), source.
- `stage2/`: image, image_id, task, label, category, type ("open" | "mcq"), question (the full user
  prompt), answer (open: the category; mcq: the letter or the name, `mcq_row`), options.

Collators build everything a step needs in one go: the pixels once, the generation sequences
(prompt + answer + end of turn, right-padded, prompt tokens labelled -100 unless the reference's
behaviour is asked for) and, for Stage I, every text of the batch in one right-padded block ending
in EOS: descriptions, categories, negative descriptions, negative categories.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from finedefics_train.arch import ArchAdapter
from harness.core.errors import UserError
from tasks.prompts import LETTER_INSTRUCTION, NAME_INSTRUCTION, render_question
from tasks.scoring import option_letters

STAGE_COLUMNS = {
    "stage1": ("image", "image_id", "task", "label", "category", "superclass", "attribute",
               "neg_categories", "neg_attributes", "neg_image_ids", "source"),
    "stage2": ("image", "image_id", "task", "label", "category", "type", "question", "answer", "options"),
}  # fmt: skip
DESCRIBE_PROMPT = "Describe the {superclass} in this image."
IGNORE = -100


def mcq_row(question: str, options: Sequence[str], answer_index: int, by_name: bool) -> dict:
    """A Stage II multiple-choice row in one of the evaluation's two prompts (tasks/prompts.py): the letter
    instruction answered by the letter (what `generate` and `loglik` score), or the option-name
    instruction answered by the name (what `loglik_name` scores; a model trained on letters only does not
    learn it). `harness train data` and the synthetic fixtures both write their rows through here."""
    instruction = NAME_INSTRUCTION if by_name else LETTER_INSTRUCTION
    answer = options[answer_index] if by_name else option_letters(len(options))[answer_index]
    return {"type": "mcq", "question": render_question(question, options, instruction), "answer": answer,
            "options": list(options)}  # fmt: skip


def stage_folder(data: Path, stage: str) -> Path:
    """`data/stage1` (or `data` itself when it is that folder); a clear error otherwise."""
    data = Path(data).expanduser()
    if not data.exists():
        raise UserError(f"--data {data}: no such folder (expected the output of `harness train data`)")
    folder = data / stage if (data / stage).is_dir() else data
    if not (folder / "dataset_info.json").is_file() and not (folder / "state.json").is_file():
        raise UserError(
            f"--data {data}: no {stage}/ dataset in it (expected {data / stage}, written by `harness train data`)"
        )
    return folder


def check_columns(columns: list[str], stage: str, where: Path) -> None:
    expected = STAGE_COLUMNS[stage]
    missing = [name for name in expected if name not in columns]
    if not missing:
        return
    other = next(
        (s for s, cols in STAGE_COLUMNS.items() if s != stage and all(c in columns for c in cols)), None
    )
    hint = f" It is a {other} dataset: pass it to `harness train {other}`." if other else ""
    raise UserError(f"{where}: not a {stage} dataset, missing columns {', '.join(missing)}.{hint}")


def load_stage(data: Path, stage: str):
    """The stage's dataset, its columns checked (before any model loads)."""
    from datasets import load_from_disk

    folder = stage_folder(data, stage)
    try:
        dataset = load_from_disk(str(folder))
    except Exception as error:  # datasets raises several types for a folder that is not a dataset
        raise UserError(f"{folder}: not a readable datasets folder ({error})") from error
    check_columns(list(dataset.column_names), stage, folder)
    if len(dataset) == 0:
        raise UserError(f"{folder}: the {stage} dataset is empty")
    return dataset


def manifest_hash(data: Path) -> str | None:
    path = Path(data) / "manifest.json"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


@dataclass
class SequenceBuilder:
    """Turns (prompt, answer) pairs with one image each into model inputs for one architecture."""

    processor: object
    adapter: ArchAdapter
    mask_prompt: bool = True

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def pixels_and_prompts(self, prompts: list[str], images: list) -> tuple[dict, list[list[int]]]:
        batch = self.processor(
            text=prompts,
            images=[[image.convert("RGB")] for image in images],
            padding=True,
            return_tensors="pt",
        )
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
        pixels = {key: batch[key] for key in ("pixel_values", "pixel_attention_mask") if key in batch}
        return pixels, rows

    def generation_batch(self, prompts: list[str], answers: list[str], images: list) -> dict:
        pixels, prompt_rows = self.pixels_and_prompts(prompts, images)
        answer_rows = self.tokenizer(
            [answer + self.adapter.end_of_turn for answer in answers], add_special_tokens=False
        )["input_ids"]
        ids, labels = [], []
        for prompt, answer in zip(prompt_rows, answer_rows):
            ids.append(prompt + answer)
            labels.append(([IGNORE] * len(prompt) if self.mask_prompt else prompt) + answer)
        input_ids, lengths = right_pad(ids, self.tokenizer.pad_token_id)
        label_ids, _ = right_pad(labels, IGNORE)
        attention = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        if not self.mask_prompt:  # the reference labels every real token, image placeholders included
            image_id = self.tokenizer.convert_tokens_to_ids("<image>")
            label_ids = label_ids.masked_fill(label_ids == image_id, IGNORE)
        return pixels | {"input_ids": input_ids, "attention_mask": attention, "labels": label_ids}

    def text_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts + EOS, right-padded: (ids [N, L], lengths [N])."""
        rows = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        return right_pad([row + [self.tokenizer.eos_token_id] for row in rows], self.tokenizer.pad_token_id)


def right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(row) for row in rows])
    out = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out, lengths


def category_id(name: str) -> int:
    """The same id for the same category text in every batch and every process (the contrastive losses
    compare ids to leave a repeated category out of the negatives, also across gathered batches)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "big")


@dataclass
class StageOneCollator:
    """Stage I batches. `use_attributes=False` (the object-category ablation) leaves descriptions
    out; `random_negatives` replaces the mined hard negatives by seeded random other categories
    (the paper's "simple negatives"), whose descriptions come from `descriptions_by_category`."""

    builder: SequenceBuilder
    use_attributes: bool = True
    use_generation: bool = True
    random_negatives: bool = False
    descriptions_by_category: dict[str, str] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        self._rng = random.Random(self.seed)

    def negatives(self, row: dict) -> tuple[list[str], list[str]]:
        if not self.random_negatives:
            return list(row["neg_categories"]), list(row["neg_attributes"])
        pool = sorted(c for c in self.descriptions_by_category if c != row["category"])
        chosen = self._rng.sample(pool, min(len(row["neg_categories"]), len(pool)))
        return chosen, [self.descriptions_by_category[c] for c in chosen]

    def __call__(self, rows: list[dict]) -> dict:
        n = len(rows)
        negs = [self.negatives(row) for row in rows]
        k = min(len(cats) for cats, _ in negs)
        texts = [row["category"] for row in rows] + [c for cats, _ in negs for c in cats[:k]]
        if self.use_attributes:
            texts += [row["attribute"] for row in rows] + [a for _, attrs in negs for a in attrs[:k]]
        text_ids, text_lengths = self.builder.text_batch(texts)
        batch = {
            "text_ids": text_ids,
            "text_lengths": text_lengths,
            "category_labels": torch.tensor([category_id(row["category"]) for row in rows]),
            "n_negatives": torch.tensor(k),
        }
        if self.use_attributes and self.use_generation:
            prompts = [
                self.builder.adapter.prompt(DESCRIBE_PROMPT.format(superclass=row["superclass"]))
                for row in rows
            ]
            gen = self.builder.generation_batch(
                prompts, [row["attribute"] for row in rows], [row["image"] for row in rows]
            )
        else:
            gen, _ = self.builder.pixels_and_prompts(
                [self.builder.adapter.prompt("")] * n, [row["image"] for row in rows]
            )
        return batch | gen


@dataclass
class StageTwoCollator:
    """Stage II batches: the user prompt, the answer (labels on the answer tokens only)."""

    builder: SequenceBuilder

    def __call__(self, rows: list[dict]) -> dict:
        prompts = [self.builder.adapter.prompt(row["question"]) for row in rows]
        return self.builder.generation_batch(
            prompts, [row["answer"] for row in rows], [row["image"] for row in rows]
        )
