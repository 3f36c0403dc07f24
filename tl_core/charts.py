"""Plotly figure builders: pages only place them, tests can inspect them without Streamlit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def training_curves(history: Sequence[dict[str, Any]]) -> go.Figure:
    """Loss and accuracy per epoch, train vs validation, side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    epochs = [h["epoch"] for h in history]
    styles = {"train": dict(color="#1f77b4"), "val": dict(color="#ff7f0e")}
    for split, label in (("train", "train"), ("val", "validation")):
        for col, metric in ((1, "loss"), (2, "acc")):
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=[h[f"{split}_{metric}"] for h in history],
                    mode="lines+markers",
                    name=label,
                    legendgroup=split,
                    showlegend=col == 1,
                    line=styles[split],
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_layout(height=340, margin=dict(l=40, r=20, t=40, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def class_counts(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Images per class, stacked by split, so imbalance is visible at a glance."""
    fig = go.Figure()
    palette = {"train": "#2563eb", "val": "#f59e0b", "test": "#10b981"}
    for split, per_class in counts.items():
        fig.add_trace(
            go.Bar(x=list(per_class), y=list(per_class.values()), name=split, marker_color=palette.get(split))
        )
    fig.update_layout(
        barmode="stack",
        height=320,
        margin=dict(l=40, r=20, t=30, b=40),
        xaxis_title="class",
        yaxis_title="images",
        legend=dict(orientation="h", y=1.12),
    )
    return fig


def confusion_matrix(matrix: Any, classes: Sequence[str]) -> go.Figure:
    """Heatmap with counts; rows are the true class, columns the prediction."""
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(classes),
            y=list(classes),
            colorscale="Blues",
            text=matrix,
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
            showscale=False,
        )
    )
    side = max(320, 38 * len(classes) + 120)
    fig.update_layout(
        height=side,
        margin=dict(l=60, r=20, t=30, b=60),
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
        xaxis=dict(type="category"),
        yaxis=dict(type="category"),
    )
    return fig


def ladder(rungs: Sequence[tuple[str, str]], highlight: int) -> go.Figure:
    """The transfer-learning ladder, from 'freeze everything' to 'train everything'."""
    names = [r[0] for r in rungs]
    colors = ["#2563eb" if i == highlight else "#cbd5e1" for i in range(len(rungs))]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[i + 1 for i in range(len(rungs))],
            marker_color=colors,
            text=["recommended" if i == highlight else "" for i in range(len(rungs))],
            textposition="outside",
            hovertext=[r[1] for r in rungs],
            hoverinfo="text",
        )
    )
    fig.update_layout(
        height=260,
        margin=dict(l=20, r=20, t=30, b=40),
        yaxis=dict(visible=False, range=[0, len(rungs) + 1.2]),
        xaxis_title="more data, more different domain, more compute →",
    )
    return fig


def freeze_map(rows: Sequence[Any]) -> go.Figure:
    """Parameters per layer group, stem at the left, coloured trainable vs frozen."""
    names = [r.name for r in rows]
    fig = go.Figure(
        [
            go.Bar(x=names, y=[r.trainable for r in rows], name="trainable", marker_color="#2563eb"),
            go.Bar(x=names, y=[r.total - r.trainable for r in rows], name="frozen", marker_color="#cbd5e1"),
        ]
    )
    fig.update_layout(
        barmode="stack",
        height=280,
        margin=dict(l=40, r=20, t=30, b=40),
        yaxis_title="parameters",
        legend=dict(orientation="h", y=1.15),
    )
    return fig
