"""Plotly figure builders: pages only place them, tests can inspect them without Streamlit."""

from __future__ import annotations

import math
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


def class_counts(counts: dict[str, dict[str, int]], things: str = "images") -> go.Figure:
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
        yaxis_title=things,
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


def overlay_curves(
    curves: Sequence[Any], x: str = "seconds", chance: float | None = None, budget_s: float | None = None
) -> go.Figure:
    """Validation accuracy of several runs on one chart (``run_table.Curve``s).

    By default against seconds of training, not epochs: a from-scratch epoch costs many
    cached-feature epochs, and the fair question is what each reached in the same time.
    """
    by_time = x == "seconds"
    fig = go.Figure()
    palette = ["#2563eb", "#f59e0b", "#10b981", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"]
    for i, c in enumerate(curves):
        xs = c.seconds if by_time else c.epochs
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=c.val_acc,
                mode="lines+markers",
                line=dict(color=palette[i % len(palette)]),
                name=c.label + (" (cut at the budget)" if c.cut else ""),
                customdata=c.epochs,
                hovertemplate=f"{c.label}<br>epoch %{{customdata}}, %{{x:.0f}} s<br>%{{y:.1%}}<extra></extra>"
                if by_time
                else f"{c.label}<br>epoch %{{x}}<br>%{{y:.1%}}<extra></extra>",
            )
        )
    if chance:
        fig.add_hline(
            y=chance, line_dash="dot", line_color="#94a3b8", annotation_text=f"guessing ({chance:.0%})"
        )
    if budget_s and by_time:
        fig.add_vline(x=budget_s, line_dash="dash", line_color="#94a3b8", annotation_text="budget")
    longest = max((max(c.seconds if by_time else c.epochs, default=0) for c in curves), default=0)
    right = max(longest, (budget_s or 0) if by_time else 0, 1)
    fig.update_layout(
        height=380,
        margin=dict(l=40, r=20, t=30, b=40),
        xaxis=dict(range=[0, right * 1.05]),
        xaxis_title="seconds of training" if by_time else "epoch",
        yaxis_title="validation accuracy",
        yaxis=dict(range=[0, 1.02], tickformat=".0%"),
        legend=dict(orientation="h", y=-0.2),
        showlegend=True,  # even for one run: the legend names it
    )
    return fig


def selectable_confusion(
    matrix: Any, classes: Sequence[str], selected: tuple[str, str] | None = None
) -> go.Figure:
    """The confusion matrix, with a click on a cell selecting it (``confusion_cell`` reads it).

    Streamlit can't select heatmap cells, so an invisible marker sits on each cell's centre and
    takes the click; ``selected`` (true, predicted) is framed, whichever way it was chosen.
    """
    import numpy as np

    fig = confusion_matrix(matrix, classes)
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector=dict(type="heatmap"))
    names = list(classes)
    counts = np.asarray(matrix)
    cells = [(t, p) for t in names for p in names]
    fig.add_trace(
        go.Scatter(
            x=[p for _, p in cells],
            y=[t for t, _ in cells],
            mode="markers",
            marker=dict(symbol="square", size=34, opacity=0),
            customdata=[[t, p, int(counts[i, j])] for i, t in enumerate(names) for j, p in enumerate(names)],
            hovertemplate="true %{customdata[0]}, predicted %{customdata[1]}: %{customdata[2]}"
            "<br>click to see these images<extra></extra>",
            showlegend=False,
        )
    )
    if selected and selected[0] in names and selected[1] in names:
        i, j = names.index(selected[0]), names.index(selected[1])
        fig.add_shape(
            type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line=dict(color="#f59e0b", width=3)
        )
    n = len(names)  # fixed ranges: the big invisible markers would pad the axes
    fig.update_xaxes(range=[-0.5, n - 0.5])
    fig.update_yaxes(range=[n - 0.5, -0.5], autorange=False)
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


def confusion_cell(points: Sequence[dict[str, Any]]) -> tuple[str, str] | None:
    """(true, predicted) of the cell clicked in ``selectable_confusion``; ``None`` if none."""
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) >= 2:
            return str(data[0]), str(data[1])
    return None


def feature_scatter(frame: Any, explained: tuple[float, float], title: str = "") -> go.Figure:
    """A PCA picture of the feature space (``feature_space.pca_frame``): one colour per class,
    the file name on hover; selecting points gives their paths (``selected_paths``)."""
    import numpy as np
    import plotly.express as px

    classes = list(dict.fromkeys(frame["class"]))
    palette = px.colors.qualitative.Plotly if len(classes) <= 10 else px.colors.qualitative.Alphabet
    fig = go.Figure()
    for k, name in enumerate(classes):
        rows = frame[frame["class"] == name]
        fig.add_trace(
            go.Scatter(
                x=rows["x"],
                y=rows["y"],
                mode="markers",
                name=str(name),
                marker=dict(size=7, color=palette[k % len(palette)], opacity=0.8),
                customdata=np.stack([rows["file"], rows["path"]], axis=-1),
                hovertemplate=f"<b>{name}</b><br>%{{customdata[0]}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=dict(text=title, x=0, font=dict(size=15)) if title else None,
        height=400,
        margin=dict(l=40, r=10, t=40 if title else 10, b=40),
        xaxis=dict(title=f"PC1 ({explained[0]:.0%} of the variance)", zeroline=False, showticklabels=False),
        yaxis=dict(title=f"PC2 ({explained[1]:.0%})", zeroline=False, showticklabels=False),
        legend=dict(title="class", itemsizing="constant"),
        dragmode="lasso",
    )
    return fig


def selected_paths(points: Sequence[dict[str, Any]]) -> list[str]:
    """Image paths of the points selected in ``feature_scatter``, in selection order, once each."""
    paths = []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) >= 2:
            paths.append(str(data[1]))
    return list(dict.fromkeys(paths))


def _lr_text(lr: float) -> str:
    """``0.003`` -> ``"3e-3"``, as the LR finder's texts write LRs."""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def lr_finder_curve(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    suggestion: tuple[float, float] | None = None,
    valley: tuple[float, float] | None = None,
    current_lr: float | None = None,
) -> go.Figure:
    """The LR range test: each batch's loss against its LR on a log axis, the smoothed curve,
    the valley shaded, the suggestion marked, the current LR as a dashed line.

    Args:
        suggestion: ``(lr, loss)`` of the suggested point.
        valley: the LRs where the valley starts and ends.
    """
    fig = go.Figure()
    if valley is not None:
        fig.add_vrect(x0=valley[0], x1=valley[1], fillcolor="#bbf7d0", opacity=0.45, line_width=0)
    fig.add_trace(
        go.Scatter(
            x=list(lrs),
            y=list(losses),
            mode="markers",
            name="loss of each batch",
            marker=dict(color="#94a3b8", size=5),
            hovertemplate="LR %{x:.1e}: loss %{y:.3f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=list(lrs),
            y=list(smoothed),
            mode="lines",
            name="smoothed",
            line=dict(color="#2563eb", width=3),
            hovertemplate="LR %{x:.1e}: smoothed %{y:.3f}<extra></extra>",
        )
    )
    if suggestion is not None:
        fig.add_trace(
            go.Scatter(
                x=[suggestion[0]],
                y=[suggestion[1]],
                mode="markers+text",
                name="suggested",
                marker=dict(color="#dc2626", size=14, symbol="diamond", line=dict(color="white", width=1)),
                text=[f"suggested {_lr_text(suggestion[0])}"],
                textposition="bottom left",
                textfont=dict(color="#dc2626"),
                hovertemplate="suggested LR %{x:.1e}<extra></extra>",
            )
        )
    if current_lr is not None:
        fig.add_vline(x=current_lr, line=dict(color="#64748b", dash="dash", width=1))
        # Annotations on a log axis take log10(x); add_vline's own would land elsewhere.
        fig.add_annotation(
            x=math.log10(current_lr),
            y=1,
            yref="paper",
            yanchor="bottom",
            text=f"current {_lr_text(current_lr)}",
            showarrow=False,
            font=dict(color="#64748b"),
        )
    # The blow-up at the end would squash the interesting part: clip at the start's level.
    bottom = min(range(len(smoothed)), key=smoothed.__getitem__) if smoothed else 0
    top = max(list(smoothed[: bottom + 1]) + list(losses[: max(bottom // 2, 1)]), default=1.0)
    fig.update_layout(
        height=380,
        margin=dict(l=50, r=20, t=30, b=40),
        xaxis=dict(type="log", title="learning rate (head)", exponentformat="power"),
        yaxis=dict(title="training loss", range=[0, top * 1.15]),
        legend=dict(orientation="h", y=-0.22),
    )
    return fig
