"""The training loop: executes phases and fires callbacks; knows nothing about UIs or files.

As in Lightning, early stopping, best-weight tracking, progress, persistence and the Stop
button are callbacks, and they end training through the same ``should_stop`` flag. The
feature-extraction fast path runs the frozen backbone once, caches the pooled features and
trains the head on the cache: epochs then cost milliseconds instead of full forward passes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from . import best_epoch, frozen_prefix
from .backbones import classifier_name
from .config import TrainConfig
from .data import Dataset
from .devices import DeviceSetup
from .errors import DatasetError, TrainingFailed
from .freezing import (
    LayerGroup,
    bn_param_names,
    frozen_bn_modules,
    optimizer_param_groups,
    report,
    set_trainable,
)
from .frozen_prefix import Split, Suffix
from .fsutil import write_atomic
from .images import ImageProblem, load_rgb
from .preprocessing import eval_transform, train_transform
from .runs import RunStatus
from .strategies import Phase, plan_phases

IMBALANCE_FOR_WEIGHTS = 3.0
FEATURE_CACHE_BYTES = 2 * 1024**3
"""Least-recently-used cached features beyond this are deleted (a digits run takes ~9 MB)."""
_HEAD_BATCH_COST = 0.01
"""A batch on cached features costs ~1% of a backbone batch; used for progress and ETA."""
NAN_CHECK_STEPS = 25
"""On a GPU the running loss is read every this many steps, not every step: each read waits for
the GPU to finish. A NaN or inf propagates into the sum, so none is missed."""


class TrainingDiverged(TrainingFailed):
    """The loss became NaN or infinite."""


class ImageDataset(torch.utils.data.Dataset):
    """(path, label) pairs -> (tensor, label), decoding with the same loader the scan used."""

    def __init__(self, items: Sequence[tuple[str, int]], transform: Any, draft_size: int | None = None):
        self.items = list(items)
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        try:
            image = load_rgb(path, self.draft_size)
        except ImageProblem as exc:
            raise DatasetError(
                f"{path} can no longer be read ({exc}); was it changed after the scan?"
            ) from exc
        return self.transform(image), label


@dataclass
class EpochRecord:
    epoch: int
    phase: str
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    trainable_params: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    status: str
    """``completed``, ``early-stopped`` or ``stopped`` (by the user)."""
    best_val_acc: float
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    wall_s: float
    trainable_params: int
    total_params: int
    device: str
    feature_cache: bool
    history: list[EpochRecord] = field(default_factory=list)
    test_acc: float | None = None
    """On the held-out test split, measured once after training; None without one."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Callback:
    """Hooks the loop fires; override what you need. Set ``trainer.should_stop`` to end."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_stage(self, trainer: Trainer, stage: str, done: int, total: int) -> None: ...
    def on_phase_start(self, trainer: Trainer, phase: Phase) -> None: ...
    def on_batch_end(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None: ...
    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None: ...


class MeasuringCallback(Callback):
    """Measures the model at fit start and fit end (forgetting, feature space) without ever
    failing the run: a failed measurement writes its traceback to ``error_log`` in ``run_dir``
    and is dropped. After the user's Stop, the end pass is skipped (no extra waiting).

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

    def on_fit_start(self, trainer: Trainer) -> None:
        self._guarded(self.start, trainer)

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        if result.epochs_run and (trainer.stop_reason != RunStatus.STOPPED or self.end_after_stop()):
            self._guarded(self.end, trainer)

    def _guarded(self, step: Any, trainer: Trainer) -> None:
        try:
            step(trainer)
        except Exception:  # a side show: never lose the trained model to it
            self.reset()
            write_atomic(self.run_dir / self.error_log, traceback.format_exc())

    @staticmethod
    def progress(trainer: Trainer, stage: str, cancellable: bool) -> Any:
        """A per-batch hook for a measuring pass: progress and the Stop button see it too, and
        it returns whether to cancel (only a pass that may be cancelled ever is)."""

        def on_batch(done: int, total: int) -> bool:
            for cb in trainer.callbacks:
                cb.on_stage(trainer, stage, done, total)
            return cancellable and trainer.should_stop

        return on_batch


class StopOnEvent(Callback):
    """The UI's Stop button: checked after every batch, so it acts within one batch."""

    def __init__(self, event: threading.Event):
        self.event = event

    def on_batch_end(self, trainer: Trainer) -> None:
        if self.event.is_set():
            trainer.request_stop(RunStatus.STOPPED)

    def on_stage(self, trainer: Trainer, stage: str, done: int, total: int) -> None:
        self.on_batch_end(trainer)


class TimeLimit(Callback):
    """A budget: stops like the Stop button once ``seconds`` of training have passed, keeping
    the best weights so far. The clock starts at ``on_fit_start``; put this callback after
    any that measure the model there (forgetting, feature snapshots), so a 30 s budget buys
    30 s of training whatever the measuring costs."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline: float | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.deadline = time.monotonic() + self.seconds

    def on_batch_end(self, trainer: Trainer) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            trainer.request_stop(RunStatus.TIME_LIMIT)

    def on_stage(self, trainer: Trainer, stage: str, done: int, total: int) -> None:
        self.on_batch_end(trainer)


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


def prune_feature_cache(folder: Path, max_bytes: int) -> list[Path]:
    """Delete the least recently used cache files until the folder fits in ``max_bytes``."""
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    removed, total = [], 0
    for f in files:
        total += f.stat().st_size
        if total > max_bytes:
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def default_workers(device: str) -> int:
    """Data-loading processes when the config leaves it open: on a GPU, enough to decode and
    augment while it computes (up to 8, half the cores); on a CPU none, since they would take
    the cores the model needs."""
    return min(8, (os.cpu_count() or 2) // 2) if device == "cuda" else 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def class_weights(labels: Sequence[int], n_classes: int, mode: str) -> torch.Tensor | None:
    """Balanced weights (scikit-learn's formula) when asked, or when ``auto`` sees imbalance."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    present = counts[counts > 0]
    if mode == "none" or (mode == "auto" and present.max() / present.min() <= IMBALANCE_FOR_WEIGHTS):
        return None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.flatnonzero(counts)
    weights = np.ones(n_classes)
    weights[classes] = compute_class_weight("balanced", classes=classes, y=np.asarray(labels))
    return torch.tensor(weights, dtype=torch.float32)


def _scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from 10% then cosine decay to zero, per step (torch's schedulers)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    total_steps = max(total_steps, 1)
    warmup_steps = min(warmup_steps, total_steps - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup_steps, 1))
    if warmup_steps <= 0:
        return cosine
    warm = LinearLR(optimizer, start_factor=0.1, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warm, cosine], milestones=[warmup_steps])


class Trainer:
    """Runs ``cfg``'s phases on ``model``. Create one per run."""

    def __init__(
        self,
        model: nn.Module,
        groups: list[LayerGroup],
        cfg: TrainConfig,
        dataset: Dataset,
        data_config: dict[str, Any],
        device: DeviceSetup,
        callbacks: Sequence[Callback] = (),
        feature_cache_dir: Path | None = None,
        weights_id: str = "",
    ):
        """Args:
        feature_cache_dir: keep cached backbone features here across runs, so trying another
            head LR on the same data and backbone skips the expensive forward passes.
        weights_id: identifies the pretrained weights in the cache key.
        """
        self.cfg = cfg.resolved()
        self.feature_cache_dir = feature_cache_dir
        self.weights_id = weights_id
        self.model = model
        self.groups = groups
        self.dataset = dataset
        self.data_config = data_config
        self.device = device
        self.callbacks = list(callbacks)
        self.phases = plan_phases(self.cfg, groups)
        self.should_stop = False
        self.stop_reason = RunStatus.COMPLETED
        self._end_phase = False
        self.epoch = 0
        self.phase: Phase | None = None
        self.units_done = 0.0
        self.units_total = 1.0
        self.history: list[EpochRecord] = []
        self.check_every = NAN_CHECK_STEPS if device.device == "cuda" else 1
        self.reuse_frozen_prefix = True
        """Run the never-trained bottom of the network once (``frozen_prefix``); tests turn it off
        to compare with the full path."""
        self._features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        """The frozen prefix's output per split, when the run trained on it."""
        self._suffix: Suffix | None = None
        labels = [label for _, label in dataset.items["train"]]
        weights = class_weights(labels, len(dataset.classes), self.cfg.class_weights)
        self.criterion = nn.CrossEntropyLoss(
            weight=weights.to(device.device) if weights is not None else None,
            label_smoothing=self.cfg.label_smoothing,
        )

    # -- control, used by callbacks ---------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        self.should_stop = True
        self.stop_reason = reason

    def end_phase_early(self) -> None:
        """Early stopping: move on to the next phase, or finish if this was the last."""
        self._end_phase = True
        if self.phase is self.phases[-1]:
            self.request_stop(RunStatus.EARLY_STOPPED)

    @property
    def progress(self) -> float:
        return min(self.units_done / self.units_total, 1.0)

    @property
    def epochs_total(self) -> int:
        return sum(p.epochs for p in self.phases)

    def _fire(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # -- data -------------------------------------------------------------------------------------
    def _loader(self, split: str, training: bool) -> DataLoader:
        transform = (
            train_transform(self.data_config, self.cfg.augment)
            if training
            else eval_transform(self.data_config)
        )
        size = self.data_config["input_size"][-1]
        ds = ImageDataset(self.dataset.items[split], transform, draft_size=size)
        workers = self.cfg.workers if self.cfg.workers is not None else default_workers(self.device.device)
        generator = torch.Generator().manual_seed(self.cfg.seed)
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            shuffle=training,
            num_workers=workers,
            pin_memory=self.device.pin_memory,
            generator=generator,
            persistent_workers=workers > 0,
        )

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.device.channels_last else x

    def _autocast(self) -> Any:
        if self.device.amp_dtype is None:
            return torch.autocast(self.device.device, enabled=False)
        return torch.autocast(self.device.device, dtype=self.device.amp_dtype)

    def _check_loss(self, loss: torch.Tensor, lr: float) -> None:
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"The loss became {loss.item()} at epoch {self.epoch + 1}: training diverged. "
                f"Lower the learning rate (it was {lr:.2g}; try {lr / 10:.2g})."
            )

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        start = time.perf_counter()
        self.model.to(self.device.device)
        if self.device.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._fire("on_fit_start")
        try:
            if self.cfg.uses_feature_cache:
                self._fit_cached()
            else:
                self._fit_full()
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise TrainingFailed(self._oom_message("GPU")) from exc
        except (MemoryError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "can't allocate memory" not in str(exc):
                raise
            raise TrainingFailed(self._oom_message("RAM")) from exc
        result = self._result(time.perf_counter() - start)
        self._fire("on_fit_end", result)
        return result

    def _oom_message(self, where: str) -> str:
        smaller = max(1, self.cfg.batch_size // 2)
        return (
            f"Ran out of {where} memory at batch size {self.cfg.batch_size}. Try batch size "
            f"{smaller}, a smaller image size, or a smaller backbone."
        )

    def _result(self, wall_s: float) -> TrainResult:
        best = min(self.history, key=lambda r: best_epoch.key(r.val_loss, r.val_acc), default=None)
        params = report(self.model, self.groups)
        trainable = max((r.trainable_params for r in self.history), default=sum(p.trainable for p in params))
        status = self.stop_reason
        if status == RunStatus.EARLY_STOPPED and len(self.history) >= self.epochs_total:
            status = RunStatus.COMPLETED  # patience ran out on the very last epoch: nothing was cut
        return TrainResult(
            status=status,
            best_val_acc=best.val_acc if best else 0.0,
            best_val_loss=best.val_loss if best else math.nan,
            best_epoch=best.epoch if best else 0,
            epochs_run=len(self.history),
            wall_s=wall_s,
            trainable_params=trainable,
            total_params=sum(p.total for p in params),
            device=self.device.label,
            feature_cache=self.cfg.uses_feature_cache,
            history=list(self.history),
        )

    def _record(
        self, phase: Phase, tr_loss: float, tr_acc: float, va_loss: float, va_acc: float, lr: float, t0: float
    ) -> None:
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        record = EpochRecord(
            epoch=self.epoch,
            phase=phase.name,
            train_loss=tr_loss,
            train_acc=tr_acc,
            val_loss=va_loss,
            val_acc=va_acc,
            lr=lr,
            seconds=time.perf_counter() - t0,
            trainable_params=trainable,
        )
        self.history.append(record)
        self._fire("on_epoch_end", record)

    def _phases(self):
        """Yield phases in order, honouring stop and early-stop requests."""
        for phase in self.phases:
            if self.should_stop:
                return
            self.phase, self._end_phase = phase, False
            self._fire("on_phase_start", phase)
            yield phase

    def _epochs(self, phase: Phase):
        for _ in range(phase.epochs):
            if self.should_stop or self._end_phase:
                return
            self.epoch += 1
            yield time.perf_counter()

    @torch.no_grad()
    def predict(self, split: str = "val") -> torch.Tensor:
        """Class probabilities for ``split`` (in ``dataset.items`` order), on the CPU.

        Uses the cached features or frozen-prefix maps when the run had them, so evaluation
        costs (almost) nothing extra.
        """
        self.model.eval()
        if split in self._features:
            head = self.model.get_submodule(classifier_name(self.model))
            return head(self._features[split][0]).float().softmax(-1).cpu()
        if split in self._maps and self._suffix is not None:
            net, loader = self._suffix, self._tensor_loader(*self._maps[split], shuffle=False)
        else:
            net, loader = self.model, self._loader(split, training=False)
        out = []
        for x, _ in loader:
            with self._autocast():
                out.append(net(self._to_device(x)).float().softmax(-1).cpu())
        return torch.cat(out)

    # -- full forward/backward path ---------------------------------------------------------------
    def _fit_full(self) -> None:
        train_loader = self._loader("train", training=True)
        val_loader = self._loader("val", training=False)
        n_batches = len(train_loader) + len(val_loader)
        self.units_total = float(self.epochs_total * n_batches)
        net: nn.Module = self.model
        split = self._frozen_prefix()
        if split is not None:
            self.units_total += n_batches  # running the prefix once
            cached = self._prefix_maps(split, "train"), self._prefix_maps(split, "val")
            if not self.should_stop and all(c is not None for c in cached):
                net = self._suffix = Suffix(self.model, split)
                self._maps = {"train": cached[0], "val": cached[1]}
                train_loader = self._tensor_loader(*cached[0], shuffle=True)
                val_loader = self._tensor_loader(*cached[1], shuffle=False)
        scaler = torch.amp.GradScaler(enabled=self.device.amp_dtype == torch.float16)
        for phase in self._phases():
            set_trainable(self.model, self.groups, phase.trainable, self.cfg.train_bn)
            frozen_bn = (
                [] if self.cfg.train_bn else frozen_bn_modules(self.model, self.groups, phase.trainable)
            )
            optimizer = torch.optim.AdamW(
                optimizer_param_groups(self.model, self.groups, phase.lrs, self.cfg.weight_decay)
            )
            steps = phase.epochs * len(train_loader)
            scheduler = _scheduler(optimizer, steps, warmup_steps=min(len(train_loader), steps // 5))
            for t0 in self._epochs(phase):
                self.model.train()
                for m in frozen_bn:
                    m.eval()
                # Sums stay on the device: reading them every step would stall a GPU.
                total_loss = torch.zeros((), device=self.device.device)
                correct = torch.zeros((), dtype=torch.long, device=self.device.device)
                seen = 0
                lr = optimizer.param_groups[0]["lr"]
                for step, (x, y) in enumerate(train_loader, start=1):
                    x, y = self._to_device(x), y.to(self.device.device, non_blocking=True)
                    with self._autocast():
                        logits = net(x)
                        loss = self.criterion(logits.float(), y)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    total_loss += loss.detach() * len(y)
                    correct += (logits.argmax(1) == y).sum()
                    seen += len(y)
                    if step % self.check_every == 0 or step == len(train_loader):
                        self._check_loss(total_loss, optimizer.param_groups[0]["lr"])
                    self.units_done += 1
                    self._fire("on_batch_end")
                    if self.should_stop:
                        return
                va_loss, va_acc = self._evaluate_loader(val_loader, net)
                if self.should_stop:
                    return
                n = max(seen, 1)
                self._record(phase, total_loss.item() / n, correct.item() / n, va_loss, va_acc, lr, t0)

    def _frozen_prefix(self) -> Split | None:
        """The bottom of the network that no phase trains, when the images are fixed (no
        augmentation) so that its output is too: run once instead of every epoch."""
        if self.cfg.augment != "none" or not self.reuse_frozen_prefix:
            return None
        trainable = {n for p in self.phases for g in self.groups if g.name in p.lrs for n in g.params}
        if self.cfg.train_bn:
            trainable |= bn_param_names(self.model)
        probe = ImageDataset(
            self.dataset.items["train"][:2],
            eval_transform(self.data_config),
            self.data_config["input_size"][-1],
        )  # not the train loader: drawing from it would change its shuffling
        sample = self._to_device(torch.stack([probe[i][0] for i in range(len(probe))]))
        with self._autocast():
            return frozen_prefix.find(self.model, trainable, sample)

    @torch.no_grad()
    def _prefix_maps(self, split: Split, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The prefix's output for every image of ``name``, on the device; None if they would
        not fit in ``MAX_MAP_BYTES`` (the full path runs instead)."""
        loader = self._loader(name, training=False)
        self.model.eval()
        maps, labels, size = [], [], 0
        for i, (x, y) in enumerate(loader):
            out = self._to_device(x)
            with self._autocast():
                for module in split.prefix:
                    out = module(out)
            maps.append(out)
            labels.append(y.to(self.device.device))
            size += out.numel() * out.element_size()
            if size / (i + 1) * len(loader) > frozen_prefix.MAX_MAP_BYTES:
                return None
            self.units_done += 1
            self._fire("on_stage", f"caching {name} feature maps below {split.boundary}", i + 1, len(loader))
            if self.should_stop:
                return None
        return torch.cat(maps), torch.cat(labels)

    def _tensor_loader(self, x: torch.Tensor, y: torch.Tensor, shuffle: bool) -> DataLoader:
        """Batches of cached maps in exactly the order the image loader would give."""
        generator = torch.Generator().manual_seed(self.cfg.seed)
        return DataLoader(
            torch.utils.data.TensorDataset(x, y),
            batch_size=self.cfg.batch_size,
            shuffle=shuffle,
            generator=generator,
        )

    @torch.no_grad()
    def _evaluate_loader(self, loader: DataLoader, net: nn.Module | None = None) -> tuple[float, float]:
        net = net or self.model
        self.model.eval()
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in loader:
            x, y = self._to_device(x), y.to(self.device.device, non_blocking=True)
            with self._autocast():
                logits = net(x).float()
            total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            self.units_done += 1
            self._fire("on_batch_end")
            if self.should_stop:
                break
        return total_loss / max(seen, 1), correct / max(seen, 1)

    # -- cached-feature fast path -----------------------------------------------------------------
    def _feature_key(self, split: str) -> str:
        """Changes whenever the features could: weights, preprocessing, device or any file."""
        digest = hashlib.sha256()
        ident = [
            self.cfg.backbone,
            self.weights_id,
            self.data_config,
            self.cfg.model_kwargs,
            self.device.device,
        ]
        digest.update(json.dumps(ident, sort_keys=True, default=str).encode())
        for path, label in self.dataset.items[split]:
            st = os.stat(path)
            digest.update(f"{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return f"{split}-{digest.hexdigest()[:32]}"

    @torch.no_grad()
    def extract_features(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled pre-logit features of ``split`` (what the classifier sees), on the device."""
        n_batches = math.ceil(len(self.dataset.items[split]) / self.cfg.batch_size)
        cache_file = None
        if self.feature_cache_dir is not None:
            cache_file = self.feature_cache_dir / f"{self._feature_key(split)}.safetensors"
            if cache_file.exists():
                from safetensors.torch import load_file

                try:
                    cached = load_file(str(cache_file), device=self.device.device)
                except Exception:  # a damaged cache entry is recomputed, never fatal
                    cache_file.unlink(missing_ok=True)
                else:
                    os.utime(cache_file)  # recently used: keep it when pruning
                    self.units_done += n_batches
                    self._fire("on_stage", f"loaded cached {split} features", n_batches, n_batches)
                    return cached["features"], cached["labels"]
        loader = self._loader(split, training=False)
        self.model.eval()
        feats, labels = [], []
        for i, (x, y) in enumerate(loader):
            with self._autocast():
                f = self.model.forward_head(self.model.forward_features(self._to_device(x)), pre_logits=True)
            feats.append(f.float())
            labels.append(y.to(self.device.device))
            self.units_done += 1
            self._fire("on_stage", f"caching {split} features", i + 1, len(loader))
            if self.should_stop:
                break
        out = torch.cat(feats), torch.cat(labels)
        if cache_file is not None and not self.should_stop:
            from safetensors.torch import save

            blob = save({"features": out[0].cpu().contiguous(), "labels": out[1].cpu().contiguous()})
            write_atomic(cache_file, blob)
            prune_feature_cache(cache_file.parent, FEATURE_CACHE_BYTES)
        return out

    def _fit_cached(self) -> None:
        n_train = math.ceil(len(self.dataset.items["train"]) / self.cfg.batch_size)
        n_val = math.ceil(len(self.dataset.items["val"]) / self.cfg.batch_size)
        self.units_total = n_train + n_val + self.epochs_total * n_train * _HEAD_BATCH_COST
        set_trainable(self.model, self.groups, ["head"])
        train_x, train_y = self.extract_features("train")
        if self.should_stop:
            return
        val_x, val_y = self.extract_features("val")
        if self.should_stop:
            return
        self._features = {"train": (train_x, train_y), "val": (val_x, val_y)}
        head = self.model.get_submodule(classifier_name(self.model))
        generator = torch.Generator().manual_seed(self.cfg.seed)
        for phase in self._phases():
            optimizer = torch.optim.AdamW(
                head.parameters(), lr=phase.lrs["head"], weight_decay=self.cfg.weight_decay
            )
            scheduler = _scheduler(optimizer, phase.epochs * n_train, warmup_steps=n_train)
            for t0 in self._epochs(phase):
                head.train()
                lr = optimizer.param_groups[0]["lr"]
                order = torch.randperm(len(train_y), generator=generator).to(train_y.device)
                total_loss, correct = 0.0, 0
                for idx in order.split(self.cfg.batch_size):
                    logits = head(train_x[idx])
                    loss = self.criterion(logits, train_y[idx])
                    self._check_loss(loss, optimizer.param_groups[0]["lr"])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    total_loss += loss.item() * len(idx)
                    correct += (logits.argmax(1) == train_y[idx]).sum().item()
                    self.units_done += _HEAD_BATCH_COST
                    self._fire("on_batch_end")
                    if self.should_stop:
                        return
                head.eval()
                with torch.no_grad():
                    val_logits = head(val_x)
                    va_loss = nn.functional.cross_entropy(val_logits, val_y).item()
                    va_acc = (val_logits.argmax(1) == val_y).float().mean().item()
                n = len(train_y)
                self._record(phase, total_loss / n, correct / n, va_loss, va_acc, lr, t0)
