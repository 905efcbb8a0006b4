"""The probes themselves, on plain arrays: a linear probe with validation-chosen epochs and weight
decay (ours), VLMClassifier's test-selected linear probe (the reference recipe), image-name
alignment, inter-/intra-class distances, and the masked-description split of the category
knowledge probe. Nothing here knows about models or datasets."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from harness.core.stats import accuracy_ci95

WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
MAX_EPOCHS = 60
PATIENCE = 10  # epochs without a better validation accuracy before a weight decay's run stops
VAL_FRACTION = 0.2
MASK = "[CLASS]"


def accuracy_interval(correct: Sequence[bool]) -> tuple[float, float]:
    """The 95% interval of an accuracy: the project's one interval method (Wilson's, harness.core.stats)."""
    interval = accuracy_ci95(sum(map(bool, correct)), len(correct))
    if interval is None:
        raise ValueError("an accuracy over no test examples has no interval")
    return interval


@dataclass(frozen=True)
class LinearProbe:
    accuracy: float
    accuracy_ci95: tuple[float, float]
    chance: float
    n_train: int
    n_val: int
    n_test: int
    n_classes: int
    weight_decay: float
    epochs: int
    val_accuracy: float | None
    selection: str  # how weight_decay and epochs were chosen
    selected_on: str = "validation"  # the split the epochs were chosen on: validation, or test

    def as_dict(self) -> dict:
        return asdict(self)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices: about `fraction` of each class held out, never a class's only example."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_held = min(int(round(fraction * len(members))), len(members) - 1)
        held.extend(members[:n_held])
        kept.extend(members[n_held:])
    return np.sort(np.asarray(kept, dtype=int)), np.sort(np.asarray(held, dtype=int))


class _Standardiser:
    def __init__(self, x: np.ndarray):
        self.mean = x.mean(axis=0)
        self.std = x.std(axis=0) + 1e-6

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - self.mean) / self.std).astype(np.float32))


def _train(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    weight_decay: float,
    epochs: int,
    seed: int,
    evaluate=None,
    batch_size: int = 256,
    patience: int | None = None,
) -> tuple[torch.nn.Linear, list[float]]:
    """Softmax regression with AdamW in shuffled mini-batches; `evaluate(layer)` after every epoch,
    stopping early after `patience` epochs without a better evaluation. Returns the trained layer
    and the evaluations."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], n_classes)
    optimiser = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=weight_decay)
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(layer(x[rows]), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if evaluate is not None:
            history.append(evaluate(layer))
            if patience is not None and len(history) - 1 - int(np.argmax(history)) >= patience:
                break
    return layer, history


def _accuracy(layer: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return (layer(x).argmax(dim=1) == y).numpy()


def linear_probe(
    train_x: np.ndarray,
    train_y: Sequence[int],
    test_x: np.ndarray,
    test_y: Sequence[int],
    n_classes: int,
    *,
    seed: int = 0,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    max_epochs: int = MAX_EPOCHS,
    val_fraction: float = VAL_FRACTION,
) -> LinearProbe:
    """Trains a linear classifier on the train features and reports its test accuracy.

    Weight decay and the number of epochs are chosen on a stratified validation split carved from
    the train features (never on test; each weight decay trains until PATIENCE epochs bring no
    better validation accuracy); the classifier is then retrained on all train features with
    that choice and evaluated once on test. A train split too small to carve a validation split
    uses the middle of the grid and says so in `selection`."""
    train_y, test_y = np.asarray(train_y, dtype=int), np.asarray(test_y, dtype=int)
    kept, held = stratified_holdout(train_y, val_fraction, seed)
    chosen_decay, chosen_epochs, val_accuracy = weight_decays[len(weight_decays) // 2], max_epochs, None
    selection = "default (train split too small for a validation split)"
    if len(held):
        scale = _Standardiser(train_x[kept])
        x_fit, y_fit = scale(train_x[kept]), torch.from_numpy(train_y[kept])
        x_val, y_val = scale(train_x[held]), torch.from_numpy(train_y[held])
        best = (-1.0, 0, 0.0)
        for decay in weight_decays:
            _, history = _train(
                x_fit,
                y_fit,
                n_classes,
                decay,
                max_epochs,
                seed,
                evaluate=lambda layer: float(_accuracy(layer, x_val, y_val).mean()),
                patience=PATIENCE,
            )
            epoch = int(np.argmax(history))  # first best epoch
            if history[epoch] > best[0]:
                best = (history[epoch], epoch + 1, decay)
        val_accuracy, chosen_epochs, chosen_decay = best
        selection = f"validation split ({len(held)} of {len(train_y)} train examples)"
    scale = _Standardiser(train_x)
    layer, _ = _train(scale(train_x), torch.from_numpy(train_y), n_classes, chosen_decay, chosen_epochs, seed)
    correct = _accuracy(layer, scale(test_x), torch.from_numpy(test_y))
    return LinearProbe(
        accuracy=float(correct.mean()) if len(correct) else 0.0,
        accuracy_ci95=accuracy_interval(correct.tolist()),
        chance=1.0 / n_classes,
        n_train=len(train_y),
        n_val=len(held),
        n_test=len(test_y),
        n_classes=n_classes,
        weight_decay=float(chosen_decay),
        epochs=int(chosen_epochs),
        val_accuracy=val_accuracy,
        selection=selection,
    )


REFERENCE_PROBE_EPOCHS = 500
REFERENCE_PROBE_LR = 1e-3
REFERENCE_PROBE_BATCH = 512


def linear_probe_test_selected(
    train_x: np.ndarray,
    train_y: Sequence[int],
    test_x: np.ndarray,
    test_y: Sequence[int],
    n_classes: int,
    *,
    seed: int = 0,
    epochs: int = REFERENCE_PROBE_EPOCHS,
    learning_rate: float = REFERENCE_PROBE_LR,
    batch_size: int = REFERENCE_PROBE_BATCH,
) -> LinearProbe:
    """VLMClassifier's linear probe (feature_analysis/probe.py): a linear layer on the raw features
    (no standardisation), Adam at lr 1e-3 without weight decay, mini-batches of 512 taken in one
    fixed order (the reference shuffles its data file once; here: a permutation seeded by `seed`),
    500 epochs, the test accuracy after every epoch, and the BEST of them reported: the epoch is
    chosen on test, so the figure is optimistic and is labelled `selected_on="test"`.

    Conventions (so a re-implementation gives the same numbers): the train order is
    `numpy.random.default_rng(seed).permutation(n)`, and the layer is `torch.nn.Linear` built right
    after `torch.manual_seed(seed)`; the first epoch reaching the best accuracy is the one reported."""
    train_y, test_y = np.asarray(train_y, dtype=int), np.asarray(test_y, dtype=int)
    order = np.random.default_rng(seed).permutation(len(train_y))
    x = torch.from_numpy(np.asarray(train_x, dtype=np.float32)[order])
    y = torch.from_numpy(train_y[order])
    x_test, y_test = torch.from_numpy(np.asarray(test_x, dtype=np.float32)), torch.from_numpy(test_y)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], n_classes)
    optimiser = torch.optim.Adam(layer.parameters(), lr=learning_rate)
    best_epoch, best = 0, None
    for epoch in range(1, epochs + 1):
        for start in range(0, len(x), batch_size):
            loss = torch.nn.functional.cross_entropy(
                layer(x[start : start + batch_size]), y[start : start + batch_size]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        correct = _accuracy(layer, x_test, y_test)
        if best is None or correct.mean() > best.mean():
            best_epoch, best = epoch, correct
    return LinearProbe(
        accuracy=float(best.mean()) if len(best) else 0.0,
        accuracy_ci95=accuracy_interval(best.tolist()),
        chance=1.0 / n_classes,
        n_train=len(train_y),
        n_val=0,
        n_test=len(test_y),
        n_classes=n_classes,
        weight_decay=0.0,
        epochs=best_epoch,
        val_accuracy=None,
        selection=f"test: the best test accuracy over {epochs} epochs (VLMClassifier probe.py; optimistic)",
        selected_on="test",
    )


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def alignment(
    image_x: np.ndarray, labels: Sequence[int], name_x: np.ndarray, class_names: Sequence[str]
) -> dict:
    """Cosine similarity between each image's features and its category name's features:
    per class (mean over its images) and `mean_cosine`, the mean over classes."""
    labels = np.asarray(labels, dtype=int)
    cosines = np.sum(normalise(image_x) * normalise(name_x)[labels], axis=1)
    per_class = {class_names[c]: float(cosines[labels == c].mean()) for c in np.unique(labels)}
    return {"mean_cosine": float(np.mean(list(per_class.values()))), "per_class": per_class}


def distances(x: np.ndarray, labels: Sequence[int]) -> dict:
    """On L2-normalised features: `inter_class_distance`, the mean Euclidean distance between two
    class centroids (over all pairs); `intra_class_variance`, the mean over classes of the mean
    squared distance of a class's members to its centroid (None when no class has two members)."""
    labels = np.asarray(labels, dtype=int)
    x = normalise(x)
    classes = np.unique(labels)
    centroids = np.stack([x[labels == c].mean(axis=0) for c in classes])
    pairs = [(i, j) for i in range(len(classes)) for j in range(i + 1, len(classes))]
    inter = float(np.mean([np.linalg.norm(centroids[i] - centroids[j]) for i, j in pairs])) if pairs else None
    spreads = [
        np.mean(np.sum((x[labels == c] - centroids[k]) ** 2, axis=1))
        for k, c in enumerate(classes)
        if np.sum(labels == c) > 1
    ]
    intra = float(np.mean(spreads)) if spreads else None
    return {
        "inter_class_distance": inter,
        "intra_class_variance": intra,
        "n_classes": int(len(classes)),
        "n": int(len(labels)),
    }


def mask_name(text: str, class_name: str) -> str:
    """The description with its class name (with spaces or underscores, any case) replaced by [CLASS]."""
    words = [re.escape(w) for w in re.split(r"[\s_]+", class_name.strip()) if w]
    pattern = r"[\s_-]+".join(words)
    return re.sub(pattern, MASK, text, flags=re.IGNORECASE) if words else text


@dataclass(frozen=True)
class DescriptionSplit:
    """The knowledge probe's data: masked descriptions, split 1:1 per class."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    left_out: list[str]  # classes with fewer than two descriptions

    @property
    def texts(self) -> list[str]:
        return [*self.train_texts, *self.test_texts]

    @property
    def labels(self) -> list[int]:
        return [*self.train_labels, *self.test_labels]


def split_descriptions(
    descriptions: dict[str, list[str]], class_names: Sequence[str], seed: int = 0
) -> DescriptionSplit:
    """Per class: names masked, repeats dropped, shuffled with `seed`, split 1:1 (train gets the odd one)."""
    rng = random.Random(seed)
    split = DescriptionSplit([], [], [], [], [])
    for label, name in enumerate(class_names):
        # one text once: a description repeated would sit in both halves and be recognised, not generalised
        unique = {
            " ".join(t.lower().split()): t for t in (mask_name(t, name) for t in descriptions.get(name, []))
        }
        texts = list(unique.values())
        if len(texts) < 2:
            split.left_out.append(name)
            continue
        rng.shuffle(texts)
        half = (len(texts) + 1) // 2
        split.train_texts.extend(texts[:half])
        split.train_labels.extend([label] * half)
        split.test_texts.extend(texts[half:])
        split.test_labels.extend([label] * (len(texts) - half))
    return split
