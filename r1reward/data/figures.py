"""Figures and tables about preference data, for the book's first chapter ("The task").

Plotly only; the book's renderer is set up by :func:`r1reward.chapters.plots.setup` in the notebook.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from r1reward.data.schema import PreferencePair, open_images


def _wrap(text: str, width: int = 34) -> str:
    return "<br>".join(textwrap.wrap(text, width)) or " "


def pair_grid(pairs: Sequence[PreferencePair], *, cols: int = 3, scale: int = 4) -> go.Figure:
    """Images of ``pairs`` in a grid, each titled with its question; hover shows both responses.

    Each image is drawn pixel for pixel (``scale`` screen pixels per image pixel), so the reader
    sees exactly what the model's vision tower gets.
    """
    pairs = list(pairs)
    rows = (len(pairs) + cols - 1) // cols
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"{i}. {_wrap(p.question)}" for i, p in enumerate(pairs)],
        horizontal_spacing=0.04,
        vertical_spacing=0.12,
    )
    size = 56
    for i, p in enumerate(pairs):
        img = open_images(p)[0]
        size = img.size[0]
        hover = (
            f"R1: {p.response_1}<br>R2: {p.response_2}<br>better: Response {p.preferred}"
            f"<br>{p.category}, difficulty {p.difficulty}<extra></extra>"
        )
        fig.add_trace(
            go.Image(z=np.asarray(img), hovertemplate=hover), row=i // cols + 1, col=i % cols + 1
        )
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, showgrid=False)
    fig.update_annotations(font_size=12)
    fig.update_layout(
        height=rows * (size * scale // 2 + 90) + 40,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        title="Toy pairs: what the reward model sees",
    )
    return fig


def pair_rows(pairs: Sequence[PreferencePair], *, analysis: bool = True) -> list[dict[str, Any]]:
    """One dict per pair (for a pandas table): question, responses, label, category, analysis."""
    out = []
    for i, p in enumerate(pairs):
        row = {
            "#": i,
            "category": p.category,
            "difficulty": p.difficulty,
            "question": p.question,
            "response 1": p.response_1,
            "response 2": p.response_2,
            "better": p.preferred,
        }
        if analysis and "teacher_analysis" in p.meta:
            row["teacher analysis"] = p.meta["teacher_analysis"]
        out.append(row)
    return out


def category_bars(benchmarks: dict[str, Sequence[PreferencePair]]) -> go.Figure:
    """Pairs per category for each benchmark, image and video rows stacked."""
    fig = make_subplots(rows=1, cols=len(benchmarks), subplot_titles=list(benchmarks))
    for k, pairs in enumerate(benchmarks.values(), 1):
        cats = sorted(Counter(p.category for p in pairs))
        for kind, colour in (("image", "#1f77b4"), ("video", "#ff7f0e")):
            counts = Counter(p.category for p in pairs if bool(p.videos) == (kind == "video"))
            if not counts:
                continue
            fig.add_trace(
                go.Bar(
                    x=cats,
                    y=[counts.get(c, 0) for c in cats],
                    name=kind,
                    marker_color=colour,
                    text=[counts.get(c, 0) or "" for c in cats],
                    showlegend=k == 1 or kind == "video",
                ),
                row=1,
                col=k,
            )
    fig.update_layout(
        barmode="stack",
        height=420,
        title="Real benchmarks: pairs per category",
        yaxis_title="pairs",
    )
    return fig


def chosen_position_bars(layouts: dict[str, Sequence[PreferencePair]]) -> go.Figure:
    """Share of pairs whose better answer is shown as Response 1, per layout, and the accuracy
    this hands to a judge that always answers "1"."""
    names = list(layouts)
    share = [sum(p.preferred == 1 for p in layouts[n]) / max(len(layouts[n]), 1) for n in names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[100 * s for s in share],
            text=[f"{100 * s:.1f}%" for s in share],
            marker_color=["#d62728" if s > 0.9 else "#1f77b4" for s in share],
        )
    )
    fig.add_hline(y=50, line_dash="dot", line_color="#7f7f7f", annotation_text="chance")
    fig.update_layout(
        title='Accuracy of a judge that always answers "1" (= share of pairs with the better answer first)',
        yaxis_title="% of pairs",
        yaxis_range=[0, 105],
        height=400,
    )
    return fig
