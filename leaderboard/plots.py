"""Grouped bar charts as inline SVG: one group per dataset, one bar per series (a model, or a source).

Gradio's native bar plot stacks series; a grouped chart is what comparing models per dataset
needs, and an SVG string needs no plotting library and renders the same in every browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = (
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#EECA3B",
    "#B279A2",
    "#FF9DA6",
    "#9D755D",
    "#BAB0AC",
)
WIDTH, HEIGHT = 860, 340
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 28, 56


def grouped_bar_svg(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    title: str,
    y_max: float = 100.0,
) -> str:
    """`series` is [(label, one value per group)]; a None value leaves a gap. Values are percent."""
    if not groups or not series:
        return f'<p class="plot-empty">{escape(title)}: nothing to plot for this selection.</p>'
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group_w = plot_w / len(groups)
    bar_w = group_w * 0.8 / len(series)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 22 * _legend_rows(series)}" '
        f'role="img" aria-label="{escape(title)}" class="grouped-bars" style="max-width:100%;font:12px sans-serif">',
        f'<text x="{LEFT}" y="16" font-weight="bold">{escape(title)}</text>',
    ]
    for tick in range(0, int(y_max) + 1, 20):
        y = TOP + plot_h * (1 - tick / y_max)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{tick}</text>'
        )
    for g, group in enumerate(groups):
        x0 = LEFT + g * group_w + group_w * 0.1
        for s, (label, values) in enumerate(series):
            value = values[g]
            if value is None or value != value:
                continue
            h = plot_h * min(max(value, 0.0), y_max) / y_max
            x = x0 + s * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                f"<title>{escape(label)} · {escape(group)}: {value:.2f}%</title></rect>"
            )
        parts.append(
            f'<text x="{LEFT + (g + 0.5) * group_w:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">'
            f"{escape(group)}</text>"
        )
    parts.append(
        f'<text transform="translate(12 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle" '
        f'fill="#555">accuracy (%)</text>'
    )
    parts.extend(_legend(series, TOP + plot_h + 34))
    parts.append("</svg>")
    return "".join(parts)


LEGEND_PER_ROW = 4


def _legend_rows(series: Sequence[tuple[str, Sequence[float | None]]]) -> int:
    return (len(series) + LEGEND_PER_ROW - 1) // LEGEND_PER_ROW


def _legend(series: Sequence[tuple[str, Sequence[float | None]]], y0: float) -> list[str]:
    column_w = (WIDTH - LEFT - RIGHT) / LEGEND_PER_ROW
    parts = []
    for s, (label, _) in enumerate(series):
        x = LEFT + (s % LEGEND_PER_ROW) * column_w
        y = y0 + (s // LEGEND_PER_ROW) * 22
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="12" height="12" fill="{PALETTE[s % len(PALETTE)]}"/>'
            f'<text x="{x + 16:.1f}" y="{y + 10:.1f}">{escape(label[:40])}</text>'
        )
    return parts
