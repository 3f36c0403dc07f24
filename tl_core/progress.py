"""``JobProgress``: the training loop's callback that reports a job's progress.

Kept apart from ``runner`` because it needs ``training`` (torch): the runner is imported by
the app, which must not load torch just to queue a job.
"""

from __future__ import annotations

import time
from typing import Any

from .runs import Run, RunStatus
from .training import EpochRecord, EveryBatch, Trainer


class JobProgress(EveryBatch):
    """Mirrors the trainer's state into the job's events and its run folder."""

    def __init__(self, reporter: Any, run: Run) -> None:
        self.reporter = reporter
        self.run = run
        self.started = time.perf_counter()
        self.last = 0.0

    def check(self, trainer: Trainer, force: bool = False) -> None:
        """Every batch (``EveryBatch``), and forced at an epoch's end."""
        now = time.perf_counter()
        if not force and now - self.last < 0.25:  # watchers poll at ~1 Hz; keep messages few
            return
        self.last = now
        p = trainer.progress
        elapsed = now - self.started
        # A first ETA extrapolated from seconds of warm-up is wildly off: wait for 5% or
        # for the first epoch, whichever comes first.
        trusted = p >= 0.05 or trainer.history
        self.reporter.update(
            progress=p,
            epoch=trainer.epoch,
            epochs_total=trainer.epochs_total,
            phase=trainer.phase.name if trainer.phase else "",
            step=int(trainer.units_done),
            steps_total=int(trainer.units_total),
            eta_s=elapsed * (1 - p) / p if trusted and p > 0 else None,
        )

    def on_fit_start(self, trainer: Trainer) -> None:
        self.started = time.perf_counter()
        self.reporter.update(stage="training", epochs_total=trainer.epochs_total)

    def on_stage(self, trainer: Trainer, stage: str, done: int, total: int) -> None:
        self.reporter.update(stage=stage, stage_done=done, stage_total=total)
        self.check(trainer)

    def on_phase_start(self, trainer: Trainer, phase: Any) -> None:
        self.reporter.update(stage="training", phase=phase.name)

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        row = record.to_dict()
        self.run.append_metrics(row)
        self.reporter.history(row)
        self.run.write_status(RunStatus.RUNNING, epochs_run=len(trainer.history), epoch=trainer.epoch)
        self.check(trainer, force=True)
