"""t-SNE plots of objects and category names in one space (Figures 2 and 4 of He et al.).

The embedding is scikit-learn's TSNE. Its coordinates are kept (`tsne_points`, recorded in the probe
report, from which the leaderboard draws an interactive plotly scatter) and drawn as a PNG with Pillow
(`draw_tsne`): one colour per class, images as dots, the class names' features as large outlined
diamonds, a legend."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from harness.core.io import atomic_path
from harness.core.probe_results import TsnePoints

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


def tsne_points(
    image_x: np.ndarray,
    image_labels: Sequence[int],
    name_x: np.ndarray,
    class_names: Sequence[str],
    classes: Sequence[int],
    seed: int = 0,
) -> TsnePoints:
    """Objects of `classes` and their category names in one t-SNE space: [x, y, k] per point, k the
    index into the returned `classes` (names); coordinates rounded to 4 decimals, as recorded."""
    labels = np.asarray(image_labels, dtype=int)
    rows = np.isin(labels, classes)
    coords = embed_2d(np.concatenate([image_x[rows], name_x[list(classes)]]), seed)
    index_of = {label: k for k, label in enumerate(classes)}
    kinds = [index_of[int(label)] for label in labels[rows]] + list(range(len(classes)))
    points = [[round(float(x), 4), round(float(y), 4), k] for (x, y), k in zip(coords, kinds)]
    n_images = int(rows.sum())
    return {
        "classes": [str(class_names[label]) for label in classes],
        "images": points[:n_images],
        "names": points[n_images:],
    }


def draw_tsne(points: TsnePoints, title: str) -> Image.Image:
    """The PNG of recorded t-SNE points: dots for images, outlined diamonds for names, a legend."""
    everything = np.asarray([p[:2] for p in points["images"] + points["names"]], dtype=float)
    low, high = everything.min(axis=0), everything.max(axis=0)

    def scaled(point: list[float]) -> tuple[float, float]:
        x, y = MARGIN + (np.asarray(point[:2]) - low) / np.maximum(high - low, 1e-9) * (SIZE - 2 * MARGIN)
        return float(x), float(y)

    figure = Image.new("RGB", (SIZE + LEGEND, SIZE), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default()
    for point in points["images"]:
        x, y = scaled(point)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=class_colour(point[2]))
    for point in points["names"]:
        x, y = scaled(point)
        draw.polygon(
            [(x, y - 11), (x + 11, y), (x, y + 11), (x - 11, y)], fill=class_colour(point[2]), outline="black"
        )
    draw.text((MARGIN, 10), title, fill="black", font=font)
    for k, name in enumerate(points["classes"]):
        y = MARGIN + 18 * k
        draw.ellipse([SIZE + 8, y + 2, SIZE + 18, y + 12], fill=class_colour(k))
        draw.text((SIZE + 24, y), name[:30], fill="black", font=font)
    y = MARGIN + 18 * len(points["classes"]) + 10
    draw.text((SIZE + 8, y), "dot: image   diamond: name", fill="black", font=font)
    return figure


def save_png_atomic(image: Image.Image, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, "PNG")
