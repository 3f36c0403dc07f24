"""Background training jobs: a process-wide ``JobManager`` with a FIFO queue per device.

Jobs belong to the process, not to a browser tab: any code that knows a job id can watch or
stop it, so a page refresh re-attaches instead of orphaning a thread. The training thread
only mutates a ``JobStatus`` behind a lock; readers get cheap copies via ``snapshot()``.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backbones import check_weights, create_backbone
from .config import TrainConfig
from .data import scan_dataset
from .devices import detect_device
from .errors import TLError
from .evaluation import predictions_frame, save_predictions
from .freezing import layer_groups
from .fsutil import write_atomic
from .paths import cache_root
from .runs import Run, RunStore
from .training import (
    BestWeights,
    Callback,
    EarlyStopping,
    EpochRecord,
    StopOnEvent,
    Trainer,
    TrainResult,
    seed_everything,
)

FINISHED = ("stopped", "completed", "failed")


@dataclass
class JobStatus:
    job_id: str
    run_id: str
    run_dir: str
    status: str = "queued"
    """queued / running / stopping / stopped / completed / failed."""
    queue_position: int | None = None
    stage: str = "waiting"
    stage_done: int = 0
    stage_total: int = 0
    phase: str = ""
    epoch: int = 0
    epochs_total: int = 0
    step: int = 0
    steps_total: int = 0
    progress: float = 0.0
    eta_s: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    """Exception class name; anything but a ``TLError`` subclass is a bug."""
    user_error: bool = False
    result: dict[str, Any] | None = None
    device: str = ""
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Job:
    def __init__(self, job_id: str, config: TrainConfig, run: Run, device_key: str):
        self.id = job_id
        self.config = config
        self.run = run
        self.device_key = device_key
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._status = JobStatus(job_id=job_id, run_id=run.id, run_dir=str(run.dir))

    def update(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._status, key, value)

    def append_history(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._status.history.append(record)

    def snapshot(self) -> JobStatus:
        with self._lock:
            return dataclasses.replace(self._status, history=list(self._status.history))


class _JobProgress(Callback):
    """Mirrors the trainer's state into the job status and the run folder."""

    def __init__(self, job: Job):
        self.job = job
        self.started = time.perf_counter()
        self.last = 0.0

    def _tick(self, trainer: Trainer, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < 0.1:  # the UI polls at ~1 Hz; don't contend the lock
            return
        self.last = now
        p = trainer.progress
        elapsed = now - self.started
        self.job.update(
            progress=p,
            epoch=trainer.epoch,
            epochs_total=trainer.epochs_total,
            phase=trainer.phase.name if trainer.phase else "",
            step=int(trainer.units_done),
            steps_total=int(trainer.units_total),
            eta_s=elapsed * (1 - p) / p if p > 0.02 else None,
        )

    def on_fit_start(self, trainer: Trainer) -> None:
        self.started = time.perf_counter()
        self.job.update(stage="training", epochs_total=trainer.epochs_total)

    def on_stage(self, trainer: Trainer, stage: str, done: int, total: int) -> None:
        self.job.update(stage=stage, stage_done=done, stage_total=total)
        self._tick(trainer)

    def on_phase_start(self, trainer: Trainer, phase: Any) -> None:
        self.job.update(stage="training", phase=phase.name)

    def on_batch_end(self, trainer: Trainer) -> None:
        self._tick(trainer)

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        row = record.to_dict()
        self.job.run.append_metrics(row)
        self.job.append_history(row)
        self.job.run.write_status("running", epochs_run=len(trainer.history), epoch=trainer.epoch)
        self._tick(trainer, force=True)


def _execute(job: Job) -> TrainResult:
    """Everything a job does, in order; raises ``TLError`` for problems the user can fix."""
    cfg, run = job.config, job.run
    seed_everything(cfg.seed)

    def scanning(done: int, total: int) -> None:
        job.update(stage="scanning images", stage_done=done, stage_total=total)
        if job.stop_event.is_set():
            raise _Stopped

    job.update(stage="scanning images")
    dataset = scan_dataset(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, progress=scanning)
    profile = dataset.profile
    cfg = dataclasses.replace(cfg, image_size=cfg.image_size or profile.suggested_image_size)
    job.update(stage="loading backbone")
    model, info = create_backbone(
        cfg.backbone,
        len(dataset.classes),
        cfg.weights,
        cfg.image_size,
        catalog_only=cfg.catalog_only,
        **cfg.model_kwargs,
    )
    device = detect_device(cfg.device)
    job.update(device=device.label)
    run.write_json("config.json", cfg.to_dict())
    run.write_json("labels.json", dataset.classes)
    run.write_json("data_config.json", info.data_config)
    run.write_json("dataset.json", profile.to_dict())
    run.write_json("split.json", dataset.items)  # the exact files, for export without a rescan
    run.write_json("backbone.json", dataclasses.asdict(info))
    best = BestWeights()
    callbacks: list[Callback] = [StopOnEvent(job.stop_event), best, _JobProgress(job)]
    if cfg.patience:
        callbacks.insert(1, EarlyStopping(cfg.patience))
    trainer = Trainer(
        model,
        layer_groups(model),
        cfg,
        dataset,
        info.data_config,
        device,
        callbacks,
        feature_cache_dir=cache_root() / "features" if info.weights != "none" else None,
        weights_id=info.weights_detail,
    )
    result = trainer.fit()
    if result.epochs_run:
        job.update(stage="evaluating")
        probs = trainer.predict("val").numpy()
        save_predictions(run, predictions_frame(dataset.items["val"], probs, dataset.classes))
        meta = {
            "backbone": cfg.backbone,
            "classes": ",".join(dataset.classes),
            "best_epoch": str(result.best_epoch),
        }
        run.save_weights(model.state_dict(), metadata=meta)
    return result


class _Stopped(Exception):
    """Raised from a progress hook when the user stops a job before training starts."""


class JobManager:
    """Submit, watch and stop training jobs; at most ``max_per_device`` run at once per device."""

    def __init__(self, runs_dir: str | Path | None = None, max_per_device: int = 1):
        self.store = RunStore(runs_dir)
        self.max_per_device = max_per_device
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queue: list[Job] = []
        self._running: dict[str, Job] = {}

    def submit(self, config: TrainConfig) -> str:
        """Validate ``config``, create its run folder, queue it; return an unguessable job id."""
        cfg = config.resolved()
        check_weights(cfg.backbone, cfg.weights, cfg.catalog_only)
        device_key = detect_device(cfg.device).device
        run = self.store.create(cfg.to_dict())
        job = Job(secrets.token_urlsafe(16), cfg, run, device_key)
        with self._lock:
            self._jobs[job.id] = job
            self._queue.append(job)
            self._dispatch_locked()
        return job.id

    def _dispatch_locked(self) -> None:
        for job in list(self._queue):
            busy = sum(1 for j in self._running.values() if j.device_key == job.device_key)
            if busy < self.max_per_device:
                self._queue.remove(job)
                self._running[job.id] = job
                job.update(status="running", queue_position=None, started_at=time.time(), stage="starting")
                job.run.write_status("running", started_at=time.time())
                job.thread = threading.Thread(
                    target=self._worker, args=(job,), name=f"tl-job-{job.run.id}", daemon=True
                )
                job.thread.start()
        for device in {j.device_key for j in self._queue}:
            waiting = [j for j in self._queue if j.device_key == device]
            for pos, job in enumerate(waiting, start=1):
                job.update(queue_position=pos)

    def _worker(self, job: Job) -> None:
        status, fields = "failed", {}
        try:
            result = _execute(job)
            status = "stopped" if result.status == "stopped" else "completed"
            summary = result.to_dict()
            summary.pop("history")
            fields = {"result": summary, "best_val_acc": result.best_val_acc, "epochs_run": result.epochs_run}
            job.update(status=status, result=summary, stage=result.status, eta_s=0.0)
            if status == "completed":
                job.update(progress=1.0)
        except _Stopped:
            status = "stopped"
            job.update(status=status, stage="stopped before training")
        except TLError as exc:
            fields = {"error": str(exc)}
            job.update(
                status=status, error=str(exc), error_type=type(exc).__name__, user_error=True, stage="failed"
            )
        except Exception as exc:  # a bug: keep the app alive, keep the traceback for us
            message = f"Internal error ({type(exc).__name__}: {exc}). Details in {job.run.dir / 'error.log'}."
            write_atomic(job.run.dir / "error.log", traceback.format_exc())
            fields = {"error": message}
            job.update(status=status, error=message, error_type=type(exc).__name__, stage="failed")
        finally:
            job.update(finished_at=time.time())
            try:
                job.run.write_status(status, finished_at=time.time(), **fields)
            finally:
                with self._lock:
                    self._running.pop(job.id, None)
                    self._dispatch_locked()
                job.done.set()

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise TLError(f"No job with id '{job_id}' in this process (it may have ended before a restart).")
        return job

    def snapshot(self, job_id: str) -> JobStatus:
        return self._job(job_id).snapshot()

    def stop(self, job_id: str) -> JobStatus:
        """Ask a job to stop; a queued job stops at once, a running one within one batch."""
        job = self._job(job_id)
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                job.stop_event.set()
                job.update(
                    status="stopped",
                    stage="stopped while queued",
                    queue_position=None,
                    finished_at=time.time(),
                )
                job.run.write_status("stopped", finished_at=time.time())
                job.done.set()
                self._dispatch_locked()
            elif not job.snapshot().finished:
                job.stop_event.set()
                job.update(status="stopping")
                job.run.write_status("stopping")
        return job.snapshot()

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        self._job(job_id).done.wait(timeout)
        return self.snapshot(job_id)

    def jobs(self) -> list[JobStatus]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j.snapshot() for j in jobs]

    def job_config(self, job_id: str) -> TrainConfig:
        return self._job(job_id).config


_MANAGER: JobManager | None = None
_MANAGER_LOCK = threading.Lock()


def get_job_manager() -> JobManager:
    """The process-wide manager (the UI also keeps it in ``st.cache_resource``)."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = JobManager()
        return _MANAGER
