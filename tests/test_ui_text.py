"""What the pages say about jobs and runs: the texts that must agree with each other."""

from __future__ import annotations

import time

import pytest

from tl_core import ui_text
from tl_core.jobs import JobStatus
from tl_core.runs import RunSummary


def epoch(n: int, acc: float = 0.5) -> dict:
    return {
        "epoch": n,
        "phase": "head",
        "train_loss": 1.0,
        "val_loss": 1.0 / n,
        "train_acc": acc,
        "val_acc": acc,
    }


def snap(**fields) -> JobStatus:
    return JobStatus(job_id="j" * 22, run_id="r", run_dir="/r", **fields)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (65, "1:05"), (59.6, "1:00"), (3725, "1:02:05"), (-3, "0:00")]
)
def test_clock(seconds: float, text: str) -> None:
    assert ui_text.clock(seconds) == text


def test_polling_follows_the_job() -> None:
    assert ui_text.poll_interval(None) is None
    assert ui_text.poll_interval(snap(status="queued")) == ui_text.POLL_QUEUED_S
    assert ui_text.poll_interval(snap(status="running")) == ui_text.POLL_RUNNING_S
    assert ui_text.poll_interval(snap(status="stopping")) == ui_text.POLL_RUNNING_S
    # Started, but another process holds the device: as good as queued, so poll slowly.
    waiting = snap(status="running", stage="waiting for the device: 1 job ahead")
    assert ui_text.poll_interval(waiting) == ui_text.POLL_QUEUED_S
    for done in ("completed", "stopped", "failed"):
        assert ui_text.poll_interval(snap(status=done)) is None
    assert ui_text.POLL_QUEUED_S > ui_text.POLL_RUNNING_S


def test_queue_text() -> None:
    assert (
        ui_text.queue_text(snap(status="queued", queue_position=2, wait_s=None))
        == "Waiting for the machine: number 2 in the queue, estimating… Training starts automatically."
    )
    assert "number 1 in the queue, about 3 min" in ui_text.queue_text(
        snap(status="queued", queue_position=1, wait_s=170)
    )
    assert "less than a minute" in ui_text.queue_text(snap(status="queued", queue_position=1, wait_s=20))


def test_progress_text_before_and_during_training() -> None:
    # No "epoch 0/30 ()": before the first epoch it says what is happening.
    assert (
        ui_text.progress_text(snap(status="running", stage="training", epochs_total=30))
        == "running: starting"
    )
    assert (
        ui_text.progress_text(
            snap(status="running", stage="caching train features", stage_done=3, stage_total=9)
        )
        == "running: caching train features 3/9"
    )
    assert (
        ui_text.progress_text(snap(status="running", stage="waiting for the device: 2 jobs ahead"))
        == "running: waiting for the device: 2 jobs ahead"
    )
    text = ui_text.progress_text(snap(status="running", stage="training", epoch=3, epochs_total=30, phase=""))
    assert text == "running: epoch 3/30"
    text = ui_text.progress_text(
        snap(status="running", stage="training", epoch=3, epochs_total=30, phase="fine-tune", eta_s=75)
    )
    assert text == "running: epoch 3/30 (fine-tune) · about 1:15 left"


def test_progress_text_counts_finished_epochs() -> None:
    """A run stopped during epoch 3 ran 2 epochs, as Results says."""
    stopped = snap(status="stopped", stage="stopped", epoch=3, epochs_total=30, history=[epoch(1), epoch(2)])
    assert ui_text.progress_text(stopped) == "stopped: 2 epoch(s) run"
    early = snap(status="completed", stage="early-stopped", epoch=9, history=[epoch(i) for i in range(1, 10)])
    assert ui_text.progress_text(early) == "completed: 9 epoch(s) run (early stopping)"
    limit = snap(status="stopped", stage="stopped at the time limit", history=[epoch(1)])
    assert ui_text.progress_text(limit) == "stopped: 1 epoch(s) run (time limit reached)"
    assert ui_text.progress_text(snap(status="failed", stage="failed")) == "failed: see the message below"
    nothing = snap(status="stopped", stage="stopped before the first epoch ended", epoch=1, eta_s=12.0)
    assert ui_text.progress_text(nothing) == "stopped: nothing was trained yet"


def test_outcome() -> None:
    assert ui_text.outcome(snap(status="running")) is None
    assert ui_text.outcome(snap(status="failed", error="Out of memory.")) == ("error", "Out of memory.")
    assert ui_text.outcome(snap(status="stopped", stage="stopped before the first epoch ended")) == (
        "warning",
        "Stopped before the first epoch finished: nothing was trained yet.",
    )
    kind, text = ui_text.outcome(
        snap(
            status="completed",
            history=[epoch(1, 0.6), epoch(2, 0.941), epoch(3, 0.9)],
            result={"wall_s": 21.2},
        )
    )
    assert kind == "success"
    # Epoch 2 has the top accuracy, but epoch 3 the lowest validation loss: it is the one kept.
    assert text == (
        "Completed in 21 s: validation accuracy **90.0%** at epoch 3, the one kept (lowest validation loss)."
    )


def test_sidebar_run_line() -> None:
    assert ui_text.run_line(snap(status="queued", queue_position=1)) == "**Run:** queued (#1 in queue)"
    assert ui_text.run_line(snap(status="running", stage="training", epoch=2, epochs_total=8)) == (
        "**Run:** running, epoch 2/8"
    )
    assert (
        ui_text.run_line(snap(status="running", stage="loading backbone"))
        == "**Run:** running, loading backbone"
    )
    assert ui_text.run_line(snap(status="stopped", epoch=3, history=[epoch(1), epoch(2)])) == (
        "**Run:** stopped, 2 epoch(s)"
    )
    assert ui_text.run_line(snap(status="stopped")) == "**Run:** stopped, nothing trained"


def test_request_id_is_stable_per_tab_and_settings() -> None:
    a = ui_text.request_id("tab1", {"strategy": "gradual", "epochs": 5})
    assert a == ui_text.request_id("tab1", {"epochs": 5, "strategy": "gradual"})
    assert a != ui_text.request_id("tab2", {"strategy": "gradual", "epochs": 5})
    assert a != ui_text.request_id("tab1", {"strategy": "gradual", "epochs": 6})


def test_time_limit_text() -> None:
    assert ui_text.time_limit_text(None) is None
    assert "at most 15 min;" in ui_text.time_limit_text(900.0)
    assert "at most 1.5 min;" in ui_text.time_limit_text(90.0)
    assert "at most 30 s;" in ui_text.time_limit_text(30.0)


def summary(status: str, epochs: int, acc: float | None = 0.9) -> RunSummary:
    return RunSummary(
        run_id=f"20261123-002158-efficientnet_lite0-{status[:3]}{epochs}",
        run_dir="/r",
        status=status,
        created_at=0.0,
        backbone="efficientnet_lite0",
        strategy="fine-tune-top",
        data="/u/0123456789abcdef-bees.zip",
        data_label="bees.zip",
        best_val_acc=acc,
        epochs_run=epochs,
    )


def test_only_trained_runs_are_offered() -> None:
    runs = [summary("completed", 3), summary("stopped", 1), summary("stopped", 0), summary("failed", 2)]
    runs += [summary("running", 2), summary("interrupted", 1)]
    assert [(r.status, r.epochs_run) for r in ui_text.trained_runs(runs)] == [
        ("completed", 3),
        ("stopped", 1),
    ]
    rows = [{"status": r.status, "epochs": r.epochs_run} for r in runs]
    assert ui_text.trained_rows(rows) == [
        {"status": "completed", "epochs": 3},
        {"status": "stopped", "epochs": 1},
    ]


def test_instructor_rows() -> None:
    now = time.time()
    running = snap(
        status="running",
        owner="Ada",
        data_label="bees.zip",
        backbone="efficientnet_lite0",
        strategy="fine-tune-top",
        device="cpu",
        stage="training",
        epoch=2,
        epochs_total=8,
        started_at=now - 65,
        eta_s=30,
    )
    queued = snap(
        status="queued",
        owner="Bob",
        data_label="digits",
        strategy="feature-extraction",
        queue_position=1,
        wait_s=None,
        submitted_at=now - 5,
    )
    rows = ui_text.queue_rows([running, queued], now=now)
    assert rows[0]["who"] == "Ada" and rows[0]["elapsed"] == "1:05" and rows[0]["ETA"] == "0:30"
    assert rows[0]["status"] == "running: epoch 2/8" and rows[0]["position"] == "—"
    assert (
        rows[1]["status"] == "queued"
        and rows[1]["position"] == "1"
        and rows[1]["ETA"] == "estimating…"
        and rows[1]["elapsed"] == "—"
    )
    assert ui_text.job_label(queued) == "Bob · digits · feature-extraction · #1 in queue"
    assert ui_text.job_label(running) == "Ada · bees.zip · fine-tune-top · running"


def test_room_run_label_and_percent() -> None:
    row = {
        "who": "Ada",
        "data": "bees.zip",
        "strategy": "gradual",
        "val accuracy": 0.875,
        "started": "10:02",
    }
    assert ui_text.room_run_label(row) == "Ada · bees.zip · gradual · 87.5% · 10:02"
    assert ui_text.room_run_label(row | {"val accuracy": None, "status": "stopped"}).endswith(
        "stopped · 10:02"
    )
    assert (
        ui_text.percent(0.5) == "50.0%"
        and ui_text.percent(float("nan")) == "—"
        and ui_text.percent(None) == "—"
    )
