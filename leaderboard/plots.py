"""The leaderboard's figures, drawn with plotly (shown by `gr.Plot`): grouped bars per dataset,
per-class accuracy of one run, its most frequent confusions, and a position-bias chart.

Each function takes plain data and returns a `plotly.graph_objects.Figure`, so the figures can be
tested without a server; an empty input gives a figure that says there is nothing to plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

WORST_NAMED = 5  # the worst classes named in the per-class chart's title
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 60, "b": 60}}


def _empty(title: str) -> go.Figure:
    figure = go.Figure(layout={**LAYOUT, "title": {"text": f"{title}: nothing to plot for this selection"}})
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def grouped_bars(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    title: str,
    intervals: Sequence[Sequence[tuple[float, float] | None]] | None = None,
) -> go.Figure:
    """One group of bars per dataset, one bar per series (a model row), values in percent; a None
    value leaves a gap. `intervals` (per series, per group, percent) draw error bars."""
    if not groups or not series:
        return _empty(title)
    figure = go.Figure(layout={**LAYOUT, "title": {"text": title}, "barmode": "group"})
    for index, (label, values) in enumerate(series):
        bounds = intervals[index] if intervals else None
        error = None
        if bounds is not None:
            error = {
                "type": "data",
                "symmetric": False,
                "array": [None if b is None or v is None else b[1] - v for b, v in zip(bounds, values)],
                "arrayminus": [None if b is None or v is None else v - b[0] for b, v in zip(bounds, values)],
            }
        figure.add_bar(name=label, x=list(groups), y=list(values), error_y=error)
    figure.update_yaxes(title_text="accuracy (%)", range=[0, 100])
    return figure


def per_class_accuracy(accuracies: Mapping[str, float], title: str) -> go.Figure:
    """Every class's accuracy (percent), sorted from the worst; the worst few are named in the title."""
    if not accuracies:
        return _empty(title)
    ranked = sorted(accuracies.items(), key=lambda item: (item[1], item[0]))
    worst = ", ".join(f"{name} ({100 * value:.0f}%)" for name, value in ranked[:WORST_NAMED])
    figure = go.Figure(
        layout={**LAYOUT, "title": {"text": f"{title}<br><sup>worst: {worst}</sup>"}, "height": 420}
    )
    figure.add_bar(
        x=[name for name, _ in ranked],
        y=[100 * value for _, value in ranked],
        marker_color=["#E45756" if i < WORST_NAMED else "#4C78A8" for i in range(len(ranked))],
    )
    figure.update_yaxes(title_text="accuracy (%)", range=[0, 100])
    figure.update_xaxes(title_text="class (sorted by accuracy)", showticklabels=len(ranked) <= 60)
    return figure


def confusion_pairs(pairs: Sequence[Mapping[str, object]], title: str) -> go.Figure:
    """The most frequent (true -> predicted) pairs as horizontal bars, the most frequent on top."""
    if not pairs:
        return _empty(title)
    ordered = sorted(pairs, key=lambda pair: pair["count"])
    figure = go.Figure(layout={**LAYOUT, "title": {"text": title}, "height": 120 + 24 * len(ordered)})
    figure.add_bar(
        orientation="h",
        x=[pair["count"] for pair in ordered],
        y=[f"{pair['true']} → {pair['predicted']}" for pair in ordered],
        marker_color="#F58518",
    )
    figure.update_xaxes(title_text="questions")
    figure.update_layout(margin={**LAYOUT["margin"], "l": 260})
    return figure


def position_bias(
    letters: Sequence[str], answered: Sequence[float], gold: Sequence[float], title: str
) -> go.Figure:
    """Share of answers per letter against the share of right answers (percent)."""
    if not letters:
        return _empty(title)
    figure = go.Figure(layout={**LAYOUT, "title": {"text": title}, "barmode": "group"})
    figure.add_bar(name="answered", x=list(letters), y=[100 * v for v in answered])
    figure.add_bar(name="right answer", x=list(letters), y=[100 * v for v in gold])
    figure.update_yaxes(title_text="share (%)")
    return figure


def tsne_images(
    images: Sequence[tuple[bytes, str]], title: str = "t-SNE of objects and category names"
) -> go.Figure:
    """The probes' t-SNE pictures (PNG bytes, caption), two per row, zoomable; the PNGs travel as
    data URIs (a few tens of KiB each) rather than as pixel arrays."""
    import base64

    from plotly.subplots import make_subplots

    if not images:
        return _empty(title)
    columns = min(2, len(images))
    rows = (len(images) + columns - 1) // columns
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[caption for _, caption in images])
    for index, (png, _) in enumerate(images):
        source = "data:image/png;base64," + base64.b64encode(png).decode()
        figure.add_trace(go.Image(source=source), row=index // columns + 1, col=index % columns + 1)
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_layout(**LAYOUT, title={"text": title}, height=120 + 480 * rows)
    return figure
