"""The leaderboard's figures, drawn with plotly (shown by `gr.Plot`): grouped bars per dataset,
per-class accuracy of one run, its most frequent confusions, a position-bias chart and the probes' t-SNE.

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


def tsne_plots(
    plots: Sequence[tuple[str, Mapping | bytes]], title: str = "t-SNE of objects and category names"
) -> go.Figure:
    """The probes' t-SNE plots (caption, what to draw), two per row. A view whose coordinates were
    recorded (`tsne_points`) is a scatter, one trace per class (its images as dots, its name as a
    diamond, the class named on hover), in the colours of the PNG; an older report's PNG bytes are
    shown as an image, travelling as a data URI rather than as a pixel array."""
    import base64

    from plotly.subplots import make_subplots

    from harness.probes.tsne import class_colour

    if not plots:
        return _empty(title)
    columns = min(2, len(plots))
    rows = (len(plots) + columns - 1) // columns
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[caption for caption, _ in plots])
    for index, (_, drawn) in enumerate(plots):
        cell = {"row": index // columns + 1, "col": index % columns + 1}
        if isinstance(drawn, bytes):
            source = "data:image/png;base64," + base64.b64encode(drawn).decode()
            figure.add_trace(go.Image(source=source), **cell)
            continue
        for k, name in enumerate(drawn["classes"]):
            images = [p for p in drawn["images"] if p[2] == k]
            names = [p for p in drawn["names"] if p[2] == k]
            figure.add_trace(
                go.Scatter(
                    x=[p[0] for p in images + names],
                    y=[p[1] for p in images + names],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=name not in drawn_names(plots[:index]),
                    marker={
                        "color": "rgb({},{},{})".format(*class_colour(k)),
                        "symbol": ["circle"] * len(images) + ["diamond"] * len(names),
                        "size": [7] * len(images) + [14] * len(names),
                        "line": {"width": [0] * len(images) + [1] * len(names), "color": "black"},
                    },
                    text=[f"{name} (image)"] * len(images) + [f"{name} (category name)"] * len(names),
                    hovertemplate="%{text}<extra></extra>",
                ),
                **cell,
            )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_layout(**LAYOUT, title={"text": title}, height=120 + 480 * rows)
    return figure


def drawn_names(plots: Sequence[tuple[str, Mapping | bytes]]) -> set[str]:
    """The class names already in the legend (a class drawn in several views is listed once)."""
    return {name for _, drawn in plots if not isinstance(drawn, bytes) for name in drawn["classes"]}
