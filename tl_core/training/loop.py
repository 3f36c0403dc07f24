"""One epoch of training and one pass of validation, whatever the inputs are.

The same loop trains a whole network on images, the top of a network on the frozen prefix's
cached maps, or just the head on cached pooled features: ``Inputs`` says which network and
which batches. Running sums stay on the device; the loss is read every ``trainer.check_every``
steps, since each read waits for a GPU to finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..errors import TrainingFailed
from ..freezing import frozen_bn_modules, optimizer_param_groups, set_trainable
from ..strategies import Phase
from .records import EpochRecord

if TYPE_CHECKING:
    from .trainer import Trainer

NAN_CHECK_STEPS = 25
"""On a GPU the running loss is read every this many steps, not every step. A NaN or inf
propagates into the sum, so none is missed."""


class TrainingDiverged(TrainingFailed):
    """The loss became NaN or infinite."""


@dataclass
class Inputs:
    """What the loop feeds: ``net`` maps a batch of ``train``/``val`` to logits."""

    kind: str
    """``images``, ``maps`` (the frozen prefix's output) or ``features`` (pooled, pre-logit)."""
    net: nn.Module
    train: Iterable[Any]
    val: Iterable[Any]
    cost: float = 1.0
    """Progress units per batch: a batch of cached features costs ~1% of a backbone batch."""
    autocast: bool = True
    """Features are float32 and the head is tiny: it trains in full precision."""
    cached: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """The cached tensors per split, for ``predict`` and the measuring callbacks."""
    prefix: Callable[[], nn.Module] | None = None
    """For ``maps``: builds (once) the frozen prefix as it is run (batch norm folded), for
    other images (the forgetting meter's probe)."""


def scheduler(
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


def check_loss(trainer: Trainer, total: torch.Tensor, lr: float) -> None:
    if not torch.isfinite(total):
        raise TrainingDiverged(
            f"The loss became {total.item()} at epoch {trainer.epoch + 1}: training diverged. "
            f"Lower the learning rate (it was {lr:.2g}; try {lr / 10:.2g})."
        )


class Sums:
    """Loss and correct answers summed on the device: reading them every batch would stall a GPU."""

    def __init__(self, device: str):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen = 0

    def add(self, loss_sum: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss_sum
        self.correct += (logits.argmax(1) == y).sum()
        self.seen += len(y)

    def means(self) -> tuple[float, float]:
        n = max(self.seen, 1)
        return self.loss.item() / n, self.correct.item() / n


def train_epoch(
    trainer: Trainer,
    inputs: Inputs,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> tuple[float, float] | None:
    """Mean loss and accuracy over one pass of ``inputs.train``; None if stopped."""
    device = trainer.device.device
    sums, n_batches = Sums(device), len(inputs.train)  # type: ignore[arg-type]
    for step, (x, y) in enumerate(inputs.train, start=1):
        x, y = trainer.to_device(x), y.to(device, non_blocking=True)
        with trainer.autocast(inputs.autocast):
            logits = inputs.net(x)
            loss = trainer.criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        sums.add(loss.detach() * len(y), logits, y)
        if step % trainer.check_every == 0 or step == n_batches:
            check_loss(trainer, sums.loss, optimizer.param_groups[0]["lr"])
        trainer.units_done += inputs.cost
        trainer.fire("on_train_batch_end")
        if trainer.should_stop:
            return None
    return sums.means()


@torch.no_grad()
def evaluate(trainer: Trainer, inputs: Inputs) -> tuple[float, float] | None:
    """Mean loss and accuracy over ``inputs.val`` in eval mode; None if stopped."""
    device = trainer.device.device
    inputs.net.eval()
    sums = Sums(device)
    for x, y in inputs.val:
        x, y = trainer.to_device(x), y.to(device, non_blocking=True)
        with trainer.autocast(inputs.autocast):
            logits = inputs.net(x).float()
        sums.add(nn.functional.cross_entropy(logits, y, reduction="sum"), logits, y)
        trainer.units_done += inputs.cost
        trainer.fire("on_validation_batch_end")
        if trainer.should_stop:
            return None
    return sums.means()


def train_phase(trainer: Trainer, phase: Phase, inputs: Inputs, scaler: torch.amp.GradScaler) -> None:
    """A phase's epochs: its layers unfrozen, a fresh AdamW with an LR per layer group, warm-up
    then cosine; ends early on a stop or an early-stopping request."""
    model, groups, cfg = trainer.model, trainer.groups, trainer.cfg
    set_trainable(model, groups, phase.trainable, cfg.train_bn)
    frozen_bn = [] if cfg.train_bn else frozen_bn_modules(model, groups, phase.trainable)
    optimizer = torch.optim.AdamW(optimizer_param_groups(model, groups, phase.lrs, cfg.weight_decay))
    n = len(inputs.train)  # type: ignore[arg-type]
    schedule = scheduler(optimizer, phase.epochs * n, warmup_steps=min(n, phase.epochs * n // 5))
    for _ in range(phase.epochs):
        if trainer.should_stop or trainer.phase_ended:
            return
        trainer.epoch += 1
        t0, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        model.train()
        for m in frozen_bn:  # frozen layers keep their running statistics
            m.eval()
        trained = train_epoch(trainer, inputs, optimizer, schedule, scaler)
        validated = evaluate(trainer, inputs) if trained is not None else None
        if validated is None:
            return
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        record = EpochRecord(
            trainer.epoch, phase.name, *trained, *validated, lr, time.perf_counter() - t0, trainable
        )
        trainer.history.append(record)
        trainer.fire("on_epoch_end", record)
