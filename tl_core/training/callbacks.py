"""The loop's hooks, and the callbacks that every run uses.

As in Lightning, the loop only fires hooks; early stopping, best-weight tracking, the Stop
button, time limits, progress and measuring live here (or beside the thing they measure) and
end training through ``trainer.request_stop`` or ``trainer.end_phase_early``.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import best_epoch
from ..fsutil import write_atomic
from ..runs import RunStatus
from ..strategies import Phase
from .records import EpochRecord, TrainResult

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Hooks the loop fires, in this order; override what you need."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before anything runs, the inputs' caching pass included."""

    def on_stage(self, trainer: Trainer, stage: str, done: int, total: int) -> None:
        """Progress of a pass that is not a training epoch: caching features or maps, decoding
        images, measuring the model. ``stage`` is a sentence for the user."""

    def on_train_start(self, trainer: Trainer) -> None:
        """The inputs are ready (features or maps cached) and no weight has changed yet: the
        place to measure the untrained model, cheaply, from ``trainer.pooled_features``."""

    def on_phase_start(self, trainer: Trainer, phase: Phase) -> None:
        """A phase's layers are about to be unfrozen and its optimizer built."""

    def on_train_batch_end(self, trainer: Trainer) -> None:
        """After each optimizer step. The Stop button and time limits act here, within a batch."""

    def on_validation_batch_end(self, trainer: Trainer) -> None:
        """After each validation batch (no step was taken)."""

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        """After an epoch's validation, with its record already in ``trainer.history``."""

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        """After the last epoch, a Stop or early stopping; not after an error."""


class MeasuringCallback(Callback):
    """Measures the model before training and at fit end (forgetting, feature space) without
    ever failing the run: a failed measurement writes its traceback to ``error_log`` in
    ``run_dir`` and is dropped. After the user's Stop, the end pass is skipped (no extra
    waiting). Its time is not training time: ``TimeLimit`` does not count it.

    Subclasses implement ``start``, ``end`` and ``reset`` (forget a failed measurement).
    """

    error_log = "measure-error.log"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def start(self, trainer: Trainer) -> None: ...
    def end(self, trainer: Trainer) -> None: ...
    def reset(self) -> None: ...

    def end_after_stop(self) -> bool:
        """Whether ``end`` still runs after the user's Stop: only when it costs nothing."""
        return False

    def on_train_start(self, trainer: Trainer) -> None:
        self._guarded(self.start, trainer)

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        if result.epochs_run and (trainer.stop_reason != RunStatus.STOPPED or self.end_after_stop()):
            self._guarded(self.end, trainer)

    def _guarded(self, step: Any, trainer: Trainer) -> None:
        started = time.monotonic()
        trainer.measuring = True
        try:
            step(trainer)
        except Exception:  # a side show: never lose the trained model to it
            self.reset()
            write_atomic(self.run_dir / self.error_log, traceback.format_exc())
        finally:
            trainer.measuring = False
            trainer.measuring_s += time.monotonic() - started

    @staticmethod
    def progress(trainer: Trainer, stage: str, cancellable: bool) -> Any:
        """A per-batch hook for a measuring pass: progress and the Stop button see it too, and
        it returns whether to cancel (only a pass that may be cancelled ever is)."""

        def on_batch(done: int, total: int) -> bool:
            trainer.fire("on_stage", stage, done, total)
            return cancellable and trainer.should_stop

        return on_batch


class EveryBatch(Callback):
    """A check after every batch of any kind (training, validation, caching, measuring), so
    that it acts within one batch."""

    def check(self, trainer: Trainer) -> None: ...

    def on_train_batch_end(self, trainer: Trainer) -> None:
        self.check(trainer)

    def on_validation_batch_end(self, trainer: Trainer) -> None:
        self.check(trainer)

    def on_stage(self, trainer: Trainer, stage: str, done: int, total: int) -> None:
        self.check(trainer)


class StopOnEvent(EveryBatch):
    """The UI's Stop button."""

    def __init__(self, event: threading.Event):
        self.event = event

    def check(self, trainer: Trainer) -> None:
        if self.event.is_set():
            trainer.request_stop(RunStatus.STOPPED)


class TimeLimit(EveryBatch):
    """A budget: stops like the Stop button once ``seconds`` of training have passed, keeping
    the best weights so far. The clock starts at ``on_fit_start``, so caching counts (it is
    part of what a strategy costs), but measuring passes (forgetting, feature snapshots) do
    not: a 30 s budget buys 30 s of training whatever the measuring costs."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started: float | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.started = time.monotonic()

    def check(self, trainer: Trainer) -> None:
        if self.started is None or trainer.measuring:
            return
        if time.monotonic() - self.started - trainer.measuring_s > self.seconds:
            trainer.request_stop(RunStatus.TIME_LIMIT)


class EarlyStopping(Callback):
    """Ends a phase after ``patience`` epochs without a new best epoch (``best_epoch``'s rule:
    the epoch whose weights would be kept); in the last phase that ends the run. The best is
    kept across phases, but counting restarts with each phase, since unfreezing more layers
    often makes things briefly worse before better."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best: tuple[float, float] | None = None
        self.bad_epochs = 0

    def on_phase_start(self, trainer: Trainer, phase: Phase) -> None:
        self.bad_epochs = 0

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if best_epoch.is_better(record.val_loss, record.val_acc, self.best):
            self.best, self.bad_epochs = best_epoch.key(record.val_loss, record.val_acc), 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                trainer.end_phase_early()


class BestWeights(Callback):
    """Keeps the weights of the best epoch (``best_epoch``'s rule) and puts them back at the
    end, so the saved model is the best one seen, not the last."""

    def __init__(self) -> None:
        self.key: tuple[float, float] | None = None
        self.record: EpochRecord | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if best_epoch.is_better(record.val_loss, record.val_acc, self.key):
            self.key, self.record = best_epoch.key(record.val_loss, record.val_acc), record
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        if self.state is not None:
            trainer.model.load_state_dict(self.state)
