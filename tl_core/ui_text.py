"""What the pages say about jobs and runs: pure functions over snapshots and summaries.

The pages only place these strings; deciding what a job's state means to a person (and how
often a page should look again) lives here, where tests can check it without Streamlit.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .best_epoch import kept_record
from .devicelock import WAITING
from .runner import STOP_STAGES
from .runs import RunStatus

if TYPE_CHECKING:
    from .jobs import JobStatus
    from .runs import RunSummary

POLL_RUNNING_S = 1.0
"""A running job's Train tab: the bar moves every second."""
POLL_QUEUED_S = 10.0
"""A queued tab only waits; every poll costs the server and the browser a redraw, on a machine
whose cores belong to the job that trains (measured by benchmarks/workshop_load.py)."""
POLL_SIDEBAR_S = 10.0
"""The sidebar's one "Run:" line needs no more."""
TIME_LIMIT = STOP_STAGES[RunStatus.TIME_LIMIT]
NOTHING_TRAINED = "Stopped before the first epoch finished: nothing was trained yet."
_COUNTED_STAGES = ("caching", "loaded cached", "scanning")


def clock(seconds: float) -> str:
    """``65`` -> ``"1:05"``; hours when needed."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def minutes(seconds: float) -> str:
    """A wait or a limit, rounded as people say it: "about 3 min", "less than a minute"."""
    if seconds < 60:
        return "less than a minute"
    return f"about {round(seconds / 60)} min"


def poll_interval(snap: JobStatus | None) -> float | None:
    """How often a tab watching ``snap`` looks again; None once nothing will change."""
    if snap is None or snap.finished:
        return None
    waiting = snap.status == RunStatus.QUEUED or snap.stage.startswith(WAITING)
    return POLL_QUEUED_S if waiting else POLL_RUNNING_S


def queue_text(snap: JobStatus) -> str:
    position = f": number {snap.queue_position} in the queue" if snap.queue_position else ""
    wait = "estimating…" if snap.wait_s is None else minutes(snap.wait_s) + "."
    return f"Waiting for the machine{position}, {wait} Training starts automatically."


def progress_text(snap: JobStatus) -> str:
    """The progress bar's caption. Epochs come from the history, so a stopped run counts the
    epochs that finished (as Results does), not the one that was cut short."""
    if snap.status == RunStatus.FAILED:
        return "failed: see the message below"
    text = stage_text(snap)
    if snap.eta_s is not None and not snap.finished:
        text += f" · about {clock(snap.eta_s)} left"
    return f"{snap.status}: {text}"


def stage_text(snap: JobStatus) -> str:
    """Where the job stands, in a few words: "epoch 3/30 (fine-tune)", "caching val features 3/9"."""
    if snap.finished:
        done = len(snap.history)
        if snap.status == RunStatus.FAILED:
            return "failed"
        if not done:
            return "nothing was trained yet"
        text = f"{done} epoch(s) run"
        if snap.stage == STOP_STAGES[RunStatus.EARLY_STOPPED]:
            text += " (early stopping)"
        elif snap.stage == TIME_LIMIT:
            text += " (time limit reached)"
        return text
    if snap.status == RunStatus.QUEUED:
        return "queued"
    if snap.stage == "training":
        if snap.epoch < 1:
            return "starting"
        text = f"epoch {snap.epoch}/{snap.epochs_total}"
        return text + (f" ({snap.phase})" if snap.phase else "")
    text = snap.stage or "starting"
    if snap.stage_total and text.startswith(_COUNTED_STAGES):
        text += f" {snap.stage_done}/{snap.stage_total}"
    return text


def outcome(snap: JobStatus) -> tuple[str, str] | None:
    """``(kind, message)`` for a finished job: kind is ``success``, ``warning`` or ``error``."""
    if not snap.finished:
        return None
    if snap.status == RunStatus.FAILED:
        return "error", snap.error or "Training failed."
    if not snap.trained:
        return "warning", NOTHING_TRAINED
    best = kept_record(snap.history, snap.result)
    text = snap.status.capitalize()
    if snap.result and snap.result.get("wall_s") is not None:
        text += f" in {snap.result['wall_s']:.0f} s"
    if snap.stage == TIME_LIMIT:
        text += ", stopped at the room's time limit"
    text += (
        f": validation accuracy **{best['val_acc']:.1%}** at epoch {best['epoch']}, the one kept "
        "(lowest validation loss)."
    )
    return "success", text


def run_line(snap: JobStatus) -> str:
    """The sidebar's "Run:" line."""
    line = f"**Run:** {snap.status}"
    if snap.status == RunStatus.QUEUED:
        return line + (f" (#{snap.queue_position} in queue)" if snap.queue_position else "")
    if snap.finished:
        done = len(snap.history)
        return line + (f", {done} epoch(s)" if done else ", nothing trained")
    if snap.stage == "training" and snap.epoch >= 1:
        return line + f", epoch {snap.epoch}/{snap.epochs_total}"
    return line + f", {snap.stage}" if snap.stage else line


def time_limit_text(limit_s: float | None) -> str | None:
    if not limit_s:
        return None
    limit = f"{limit_s / 60:g} min" if limit_s >= 60 else f"{limit_s:g} s"
    return f"In this room a job trains for at most {limit}; then it stops and keeps its best weights."


def request_id(tab: str, config: Mapping[str, Any]) -> str:
    """The same tab starting the same settings is the same request (a double click)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return f"{tab}:{digest[:16]}"


TRAINED = (RunStatus.COMPLETED, RunStatus.STOPPED)


def trained_runs(summaries: Iterable[RunSummary]) -> list[RunSummary]:
    """Runs with weights to look at: finished, at least one epoch."""
    return [s for s in summaries if s.kind == "train" and s.status in TRAINED and s.epochs_run > 0]


def trained_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The same rule over ``room.room_results()`` rows."""
    return [r for r in rows if r["status"] in TRAINED and r["epochs"] > 0]


def job_label(snap: JobStatus) -> str:
    """A job in the instructor's Stop list: who, what, where it stands."""
    where = f"#{snap.queue_position} in queue" if snap.status == RunStatus.QUEUED else snap.status
    return f"{snap.owner or '?'} · {snap.data_label} · {snap.strategy} · {where}"


def queue_rows(snaps: Sequence[JobStatus], now: float | None = None) -> list[dict[str, Any]]:
    """The instructor's live queue, one row per running or waiting job."""
    now = time.time() if now is None else now
    rows = []
    for s in snaps:
        queued = s.status == RunStatus.QUEUED
        if queued:
            eta = "estimating…" if s.wait_s is None else f"starts in {minutes(s.wait_s)}"
        else:
            eta = "—" if s.eta_s is None else clock(s.eta_s)
        rows.append(
            {
                "who": s.owner,
                "data": s.data_label,
                "backbone": s.backbone,
                "strategy": s.strategy,
                "device": f"{s.device or '—'} on {s.node}" if s.node else s.device or "—",
                "status": stage_text(s) if queued else f"{s.status}: {stage_text(s)}",
                "position": str(s.queue_position or "") if queued else "—",
                "ETA": eta,
                "elapsed": clock(now - s.started_at) if s.started_at and not queued else "—",
                "waiting": clock(now - s.submitted_at) if queued else "—",
            }
        )
    return rows


def room_run_label(row: Mapping[str, Any]) -> str:
    """A row of ``room.room_results()`` as the instructor picks it: who · data · strategy · acc."""
    acc = row.get("val accuracy")
    acc_text = f"{acc:.1%}" if isinstance(acc, float) and acc == acc else str(row.get("status", ""))
    return f"{row['who']} · {row['data']} · {row['strategy']} · {acc_text} · {row['started']}"


def percent(value: Any) -> str:
    """A table's accuracy cell: ``0.941`` -> ``"94.1%"``, missing -> ``"—"``."""
    if isinstance(value, (int, float)) and value == value:
        return f"{value:.1%}"
    return "—"


TEST_SCORE_HELP = (
    "Measured once, after training, with the kept weights, on the test split (a test/ folder, or "
    "the share held out on the Data page): those images chose nothing (not the epoch, not the "
    "settings), so this is the honest estimate for new images."
)
NO_TEST_SPLIT = (
    "These figures are on the validation split, which also chose the best epoch: they are a "
    "little optimistic. For an honest score, give the data a test/ folder (texts: test rows in a "
    "split column) the model never sees until the end, or hold out a test split on the Data page."
)


def test_split_note(test_fraction: float | None, things: str = "images") -> str:
    """The data page's word on the test split it offers."""
    if test_fraction:
        return (
            f"{test_fraction:.0%} of each class (after validation, seeded) is the test split: never "
            "trained on, never used to choose anything, scored once at the end."
        )
    return (
        "Without a test split, the validation accuracy also chooses the best epoch, so it is a "
        f"little optimistic. Holding out 10-20% costs training {things}; with a few dozen per class, "
        "keep them for training."
    )


def noun(modality: str, plural: bool = True) -> str:
    """What the data is made of, for labels: "images" or "texts"."""
    word = "text" if modality == "text" else "image"
    return word + "s" if plural else word


def sample_credit(name: str) -> str:
    """Where a built-in sample comes from and on what terms (empty for none)."""
    from .samples import SAMPLES

    spec = SAMPLES.get(name)
    return spec.credit if spec else ""
