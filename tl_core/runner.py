"""Runs one job from start to end wherever it is put: a thread of this process, the app's
worker process, or a Ray actor on another machine.

Everything it tells the outside goes through ``emit(event)`` as plain JSON-able dicts, and
everything durable goes into the run folder, so nothing here depends on sharing memory with
whoever watches the job:

- ``{"type": "update", "fields": {...}}``: ``JobStatus`` fields that changed;
- ``{"type": "history", "record": {...}}``: one finished epoch;
- ``{"type": "done", "fields": {...}}``: the final status fields, sent exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .config import TrainConfig
from .errors import TLError
from .fsutil import write_atomic
from .runs import Run, RunStatus

Emit = Callable[[dict[str, Any]], None]

STOP_STAGES = {
    RunStatus.STOPPED: "stopped",
    RunStatus.TIME_LIMIT: "stopped at the time limit",
    RunStatus.EARLY_STOPPED: "early-stopped",
    RunStatus.COMPLETED: "completed",
}


@dataclass
class JobSpec:
    """What a worker needs to run a job: plain data, so it crosses process boundaries."""

    job_id: str
    config: dict[str, Any]
    run_dir: str
    device: str
    time_limit_s: float | None = None
    kind: str = "train"
    """``train``, or ``lr-find`` (the learning-rate range test; see ``lr_finder``)."""
    dataset: dict[str, Any] | None = None
    """The app's scan of the data (``Dataset.to_dict``), for a job on a machine that may not see
    ``config.data`` as the app does (a Ray node); None: scan ``config.data`` here."""
    data_root: str | None = None
    """Where this machine holds a copy of ``dataset``'s root; None: at the app's own paths (a
    folder every node mounts), checked before training."""
    lock_device: bool = True
    """Take the device lock; Ray, which gives each job its own resources, turns it off."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Stopped(Exception):
    """Raised from a progress hook when the user stops a job before training starts."""


class Reporter:
    """The job as the loop sees it: what changed goes out as events, and a Stop comes in."""

    def __init__(self, emit: Emit, stop: threading.Event):
        self.emit = emit
        self.stop = stop

    def update(self, **fields: Any) -> None:
        self.emit({"type": "update", "fields": fields})

    def history(self, record: dict[str, Any]) -> None:
        self.emit({"type": "history", "record": record})


@dataclass
class Prepared:
    """A job's data, model and device, built the same way for every job kind."""

    cfg: TrainConfig
    dataset: Any
    """The images as this machine reads them."""
    model: Any
    info: Any
    device: Any
    recorded: Any = None
    """The same dataset as the app names its files: what the run folder records (None: as
    ``dataset``)."""

    def __post_init__(self) -> None:
        if self.recorded is None:
            self.recorded = self.dataset


def scan(cfg: TrainConfig, reporter: Reporter) -> Any:
    """Scan ``cfg.data`` with the job's split settings, reporting progress; a Stop ends it."""
    from .data import scan_dataset

    def scanning(done: int, total: int) -> None:
        reporter.update(stage="scanning the data", stage_done=done, stage_total=total)
        if reporter.stop.is_set():
            raise Stopped

    reporter.update(stage="scanning the data")
    return scan_dataset(
        cfg.data,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        progress=scanning,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
    )


def _dataset(spec: JobSpec, cfg: TrainConfig, reporter: Reporter) -> tuple[Any, Any]:
    """(the dataset as read here, as recorded): scanned here, or the app's scan of a copy."""
    if spec.dataset is None:
        dataset = scan(cfg, reporter)
        return dataset, dataset
    from .data import Dataset
    from .errors import DatasetError
    from .transfer import missing_files

    recorded = Dataset.from_dict(spec.dataset)
    if recorded.profile.modality == "text":
        return recorded, recorded  # the scan holds the texts themselves: no files to find
    if spec.data_root is not None:
        return recorded.moved_to(spec.data_root), recorded
    missing = missing_files(recorded)
    if missing:
        raise DatasetError(
            f"This machine ({socket.gethostname()}) can't see the data at {recorded.profile.root} "
            f"(e.g. {missing[0]}). Data too large to send through Ray must be at the same path on "
            "every node (a shared mount); or raise TL_STUDIO_RAY_MAX_DATA_MB to send it."
        )
    return recorded, recorded


def check_modality(modality: str, backbone: str) -> None:
    """Texts need a text backbone and images an image one: say so before anything loads."""
    from .errors import ConfigError
    from .text_models import TEXT_BACKBONES, is_text_backbone

    if (modality == "text") != is_text_backbone(backbone):
        if modality == "text":
            raise ConfigError(
                f"This data is text, and {backbone} is an image backbone: pick a text backbone "
                f"({', '.join(TEXT_BACKBONES)})."
            )
        raise ConfigError(f"This data is images, and {backbone} is a text backbone: pick an image backbone.")


def check_model_kwargs(backbone: str, model_kwargs: dict[str, Any]) -> None:
    from .errors import ConfigError
    from .text_models import is_text_backbone

    if "pooling" in model_kwargs and not is_text_backbone(backbone):
        raise ConfigError(
            f"Pooling is a text encoder's setting; {backbone} is an image backbone: drop --pooling."
        )


def _prepare(spec: JobSpec, reporter: Reporter, run: Run) -> Prepared:
    """Get the data, build the backbone, pick the device and record them in the run folder."""
    from .backbones import create_backbone
    from .devices import detect_device
    from .training import seed_everything

    cfg = TrainConfig.from_dict(spec.config)
    seed_everything(cfg.seed)
    dataset, recorded = _dataset(spec, cfg, reporter)
    profile = dataset.profile
    check_modality(profile.modality, cfg.backbone)
    check_model_kwargs(cfg.backbone, cfg.model_kwargs)
    cfg = dataclasses.replace(cfg, image_size=cfg.image_size or profile.suggested_image_size)
    if profile.modality == "text":
        cfg = dataclasses.replace(cfg, augment="none", image_size=None)  # neither applies to texts
    reporter.update(stage="loading backbone")
    model, info = create_backbone(
        cfg.backbone,
        len(dataset.classes),
        cfg.weights,
        cfg.image_size,
        catalog_only=cfg.catalog_only,
        **cfg.model_kwargs,
    )
    # A GPU job's worker sees only the card it was placed on, as "cuda".
    device = detect_device("cuda" if spec.device.startswith("cuda:") else cfg.device)
    reporter.update(device=device.label)
    run.record_setup(cfg, profile, recorded.items, info)
    return Prepared(cfg, dataset, model, info, device, recorded)


def _train(spec: JobSpec, reporter: Reporter, run: Run, prep: Prepared) -> Any:
    """Train, evaluate and save; raises ``TLError`` for problems the user can fix."""
    from .evaluation import predictions_frame, save_predictions
    from .feature_space import FeatureSnapshots
    from .forgetting import ForgettingMeter
    from .freezing import layer_groups
    from .paths import cache_root
    from .progress import JobProgress
    from .training import BestWeights, Callback, EarlyStopping, StopOnEvent, TimeLimit, Trainer

    cfg, dataset, model, info = prep.cfg, prep.dataset, prep.model, prep.info
    # ForgettingMeter's on_fit_end must come after BestWeights restored the weights it measures.
    text = dataset.profile.modality == "text"
    callbacks: list[Callback] = [StopOnEvent(reporter.stop), BestWeights(), JobProgress(reporter, run)]
    if not text:  # the lessons' measurements probe with photos
        callbacks += [
            ForgettingMeter(run, info),
            FeatureSnapshots(
                run, prep.recorded.items["val"]
            ),  # after BestWeights: "after" is the saved model
        ]
    if spec.time_limit_s:
        callbacks.append(TimeLimit(spec.time_limit_s))  # last: its clock starts after the measuring
    if cfg.patience:
        callbacks.insert(1, EarlyStopping(cfg.patience))
    trainer = Trainer(
        model,
        layer_groups(model),
        cfg,
        dataset,
        info.data_config,
        prep.device,
        callbacks,
        feature_cache_dir=cache_root() / "features" if info.weights != "none" else None,
        weights_id=info.weights_detail,
    )
    result = trainer.fit()
    if text and result.epochs_run and not reporter.stop.is_set():
        _text_extras(trainer, result, reporter)
    if result.epochs_run:
        reporter.update(stage="evaluating")
        probs = trainer.predict("val").numpy()
        save_predictions(run, predictions_frame(prep.recorded.items["val"], probs, dataset.classes))
        if dataset.items.get("test"):  # once, with the kept weights: it chose nothing
            reporter.update(stage="evaluating on the test split")
            test = predictions_frame(
                prep.recorded.items["test"], trainer.predict("test").numpy(), dataset.classes
            )
            save_predictions(run, test, split="test")
            result.test_acc = float(test["correct"].mean())
        meta = {
            "backbone": cfg.backbone,
            "classes": ",".join(dataset.classes),
            "best_epoch": str(result.best_epoch),
        }
        run.save_weights(model.state_dict(), metadata=meta)
    return result


def _text_extras(trainer: Any, result: Any, reporter: Reporter) -> None:
    """The TF-IDF baseline on the same split, and how many texts were cut at the maximum length."""
    from .text_baseline import tfidf_baseline
    from .text_models import TextBatches, load_tokenizer

    items = trainer.dataset.items
    reporter.update(stage="training the TF-IDF baseline")
    baseline = tfidf_baseline(items["train"], items["val"])
    result.baseline_acc = baseline.accuracy if baseline else None
    dc = trainer.data_config
    batches = trainer.text_batches or TextBatches(load_tokenizer(dc), dc["max_length"])
    result.truncated = batches.truncated([t for s in ("train", "val") for t, _ in items[s]])


def _lr_find(spec: JobSpec, reporter: Reporter, run: Run, prep: Prepared) -> Any:
    from .lr_finder import run_lr_finder

    return run_lr_finder(prep, reporter, run, time_limit_s=spec.time_limit_s)


_KINDS = {"train": _train, "lr-find": _lr_find}


def _execute(spec: JobSpec, reporter: Reporter, run: Run) -> Any:
    """Everything a job does, in order; raises ``TLError`` for problems the user can fix."""
    if spec.kind not in _KINDS:
        raise ValueError(f"unknown job kind {spec.kind!r}")
    prep = _prepare(spec, reporter, run)
    return _KINDS[spec.kind](spec, reporter, run, prep)


def failure(exc: BaseException, run: Run) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(status, status.json fields, final event fields) for a job that ended by ``exc``."""
    if isinstance(exc, Stopped):
        return (
            RunStatus.STOPPED,
            {},
            {"status": RunStatus.STOPPED, "stage": "stopped before training started"},
        )
    if isinstance(exc, TLError):
        final = {
            "status": RunStatus.FAILED,
            "error": str(exc),
            "error_type": type(exc).__name__,
            "user_error": True,
            "stage": "failed",
        }
        return RunStatus.FAILED, {"error": str(exc)}, final
    # A bug: keep the host alive, keep the traceback for us. Only the exception's type on
    # screen: its text can hold paths, and a workspace's path holds its key (screens get
    # projected). The traceback goes to the run's error.log.
    message = (
        f"Internal error ({type(exc).__name__}): a bug in the studio, not a problem with your "
        f"data. Its details are in error.log in run {run.id}."
    )
    with contextlib.suppress(OSError):
        write_atomic(
            run.dir / "error.log", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        )
    final = {
        "status": RunStatus.FAILED,
        "error": message,
        "error_type": type(exc).__name__,
        "stage": "failed",
    }
    return RunStatus.FAILED, {"error": message}, final


def finish(run: Run, status: str, fields: dict[str, Any], final: dict[str, Any], emit: Emit) -> None:
    """Record the job's end in its run folder, then send the one ``done`` event."""
    final["finished_at"] = time.time()
    with contextlib.suppress(OSError):  # a full disk must not swallow the job's end
        run.write_status(status, finished_at=final["finished_at"], **fields)
    emit({"type": "done", "fields": final})


def run_job(spec: JobSpec, emit: Emit, stop: threading.Event) -> None:
    """Run ``spec`` to its end; never raises (a bug fails the job with ``error.log``, never
    the process that hosts it)."""
    from .devicelock import DeviceLock

    run = Run(spec.run_dir)
    reporter = Reporter(emit, stop)
    status, fields = RunStatus.FAILED, {}
    final: dict[str, Any] = {
        "status": status,
        "stage": "failed",
        "error": "The job ended unexpectedly.",
    }
    lock = DeviceLock(spec.device).held if spec.lock_device else _no_lock
    try:
        if stop.is_set():
            raise Stopped
        with lock(stop, on_wait=lambda msg: reporter.update(stage=msg)) as got:
            if not got:
                raise Stopped
            reporter.update(stage="starting", started_at=time.time())
            result = _execute(spec, reporter, run)
        status = (
            RunStatus.COMPLETED
            if result.status in (RunStatus.COMPLETED, RunStatus.EARLY_STOPPED)
            else RunStatus.STOPPED
        )
        summary = result.to_dict()
        summary.pop("history", None)  # already sent epoch by epoch
        fields = {"result": summary}
        stage = STOP_STAGES.get(result.status, result.status)
        if spec.kind == "train":
            fields |= {
                "best_val_acc": result.best_val_acc,
                "epochs_run": result.epochs_run,
                "test_acc": result.test_acc,
            }
            if not result.epochs_run:
                stage = "stopped before the first epoch ended"
        final = {"status": status, "result": summary, "stage": stage, "eta_s": 0.0}
        if status == RunStatus.COMPLETED:
            final["progress"] = 1.0
    except Exception as exc:
        status, fields, final = failure(exc, run)
    finally:
        finish(run, status, fields, final, emit)


@contextlib.contextmanager
def _no_lock(stop: threading.Event, on_wait: Callable[[str], None]) -> Iterator[bool]:
    yield True
