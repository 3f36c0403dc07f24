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
