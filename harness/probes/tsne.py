"""t-SNE plots of objects and category names in one space (Figures 2 and 4 of He et al.).

The embedding is scikit-learn's TSNE; the figure is drawn with Pillow (no plotting library): one
colour per class, images as dots, the class names' features as large outlined diamonds, a legend."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from harness.core.io import atomic_path

SIZE, MARGIN, LEGEND = 640, 40, 220


def embed_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Two t-SNE coordinates per row (perplexity capped below the number of points)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as error:
        from harness.core.errors import UserError

        raise UserError(
            f"t-SNE needs scikit-learn ({error}): pip install 'fgvr-harness[probes]', or leave "
            "tsne out of --probes"
        ) from error

    perplexity = float(max(1.0, min(30.0, (len(x) - 1) / 3)))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", max_iter=500, random_state=seed
    ).fit_transform(x.astype(np.float64))


def class_colour(index: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.8, 0.85)
    return int(255 * r), int(255 * g), int(255 * b)


def tsne_figure(
    image_x: np.ndarray,
    image_labels: Sequence[int],
    name_x: np.ndarray,
    class_names: Sequence[str],
    classes: Sequence[int],
    title: str,
    seed: int = 0,
) -> Image.Image:
    """Objects of `classes` (dots) and their category names (diamonds) in one t-SNE space."""
    labels = np.asarray(image_labels, dtype=int)
    rows = np.isin(labels, classes)
    points = np.concatenate([image_x[rows], name_x[list(classes)]])
    coords = embed_2d(points, seed)
    low, high = coords.min(axis=0), coords.max(axis=0)
    scaled = MARGIN + (coords - low) / np.maximum(high - low, 1e-9) * (SIZE - 2 * MARGIN)
    figure = Image.new("RGB", (SIZE + LEGEND, SIZE), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default()
    colour_of = {c: class_colour(k) for k, c in enumerate(classes)}
    for (x, y), label in zip(scaled[: rows.sum()], labels[rows]):
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour_of[label])
    for (x, y), label in zip(scaled[rows.sum() :], classes):
        draw.polygon(
            [(x, y - 11), (x + 11, y), (x, y + 11), (x - 11, y)], fill=colour_of[label], outline="black"
        )
    draw.text((MARGIN, 10), title, fill="black", font=font)
    for k, label in enumerate(classes):
        y = MARGIN + 18 * k
        draw.ellipse([SIZE + 8, y + 2, SIZE + 18, y + 12], fill=colour_of[label])
        draw.text((SIZE + 24, y), str(class_names[label])[:30], fill="black", font=font)
    y = MARGIN + 18 * len(classes) + 10
    draw.text((SIZE + 8, y), "dot: image   diamond: name", fill="black", font=font)
    return figure


def save_png_atomic(image: Image.Image, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, "PNG")
