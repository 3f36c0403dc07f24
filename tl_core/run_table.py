"""The runs of a workspace as a table, and each run's validation curve on a fair time axis.

Everything here is read from run folders (``config.json``, ``status.json`` and its ``result``,
``metrics.jsonl``), so the Runs page shows the same after a server restart as during a session.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .runs import Run, RunStatus, RunSummary

COLUMNS = [
    "run",
    "started",
    "data",
    "backbone",
    "strategy",
    "val accuracy",
    "trainable %",
    "epochs",
    "wall time (s)",
    "status",
    "device",
    "experiment",
]


@dataclass
class Curve:
    """One run's validation accuracy, by epoch and by seconds of training."""

    label: str
    epochs: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    cut: bool = False
    """Stopped at its time limit: the curve ends because time ran out, not because it finished."""


def start_seconds(history: Sequence[Mapping[str, Any]], result: Mapping[str, Any] | None) -> float:
    """Training time spent before the first epoch: a cached-feature run computes its features
    first, outside any epoch, and leaving that out would make feature extraction look free.

    Only such runs get it: in any other run the time outside epochs is an epoch cut short at the
    end, which must not shift the whole curve to the right.
    """
    if not result or not result.get("feature_cache"):
        return 0.0
    spent = sum(float(h.get("seconds", 0.0)) for h in history)
    return max(float(result.get("wall_s", 0.0)) - spent, 0.0)


def curve(label: str, history: Sequence[Mapping[str, Any]], result: Mapping[str, Any] | None = None) -> Curve:
    """The curve of one run from its epoch records (``metrics.jsonl`` or a job's history)."""
    steps = (float(h.get("seconds", 0.0)) for h in history)
    seconds = list(itertools.accumulate(steps, initial=start_seconds(history, result)))[1:]
    return Curve(
        label=label,
        epochs=[int(h["epoch"]) for h in history],
        seconds=seconds,
        val_acc=[float(h["val_acc"]) for h in history],
        cut=bool(result) and result.get("status") == RunStatus.TIME_LIMIT,
    )


def run_curve(run: Run, label: str) -> Curve:
    return curve(label, run.metrics(), run.status().get("result"))


def _status_text(status: str, result: Mapping[str, Any] | None) -> str:
    reason = (result or {}).get("status")
    if reason == RunStatus.TIME_LIMIT:
        return f"{status} (time limit)"
    if reason == RunStatus.EARLY_STOPPED:
        return f"{status} (early stop)"
    return status


def _wall_s(status: Mapping[str, Any], result: Mapping[str, Any] | None) -> float:
    """What the person waited once the job started (data scan and model load included)."""
    started, finished = status.get("started_at"), status.get("finished_at")
    if started and finished:
        return max(float(finished) - float(started), 0.0)
    if result and result.get("wall_s") is not None:
        return float(result["wall_s"])
    return float("nan")


def run_row(summary: RunSummary) -> dict[str, Any]:
    """One training run as the table shows it; unknown numbers are NaN so columns stay numeric
    (and sortable)."""
    from .experiments import group_title

    status = Run(summary.run_dir).status()
    result = status.get("result") or None
    total = (result or {}).get("total_params")
    trainable = (result or {}).get("trainable_params")
    return {
        "run": summary.run_id,
        "started": pd.Timestamp.fromtimestamp(summary.created_at).floor("s"),
        "data": summary.data_label,
        "backbone": summary.backbone,
        "strategy": summary.strategy,
        "trainable %": trainable / total if total and trainable is not None else float("nan"),
        "val accuracy": summary.best_val_acc if summary.epochs_run else float("nan"),
        "epochs": summary.epochs_run,
        "wall time (s)": _wall_s(status, result),
        "device": _where(status, result),
        "status": _status_text(summary.status, result),
        "experiment": group_title(summary.group),
    }


def _where(status: dict[str, Any], result: dict[str, Any] | None) -> str:
    """The device a run trained on, and the Ray node when it ran on one."""
    device = (result or {}).get("device", "")
    node = status.get("node")
    return f"{device} on {node}" if node and device else device


def runs_frame(summaries: Sequence[RunSummary]) -> pd.DataFrame:
    """Training runs only (an LR range test has no accuracy to compare), newest first."""
    rows = [run_row(s) for s in summaries if s.kind == "train"]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values("started", ascending=False, kind="stable").reset_index(drop=True)
