"""What a run leaves behind: one record per epoch and the result of the whole fit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
    """``completed``, ``early-stopped``, ``stopped`` (by the user) or ``time-limit``."""
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
    inputs: str = "images"
    """What the epochs trained on: ``features``, ``maps`` (the frozen prefix's output),
    ``images`` or ``texts``."""
    baseline_acc: float | None = None
    """Texts: TF-IDF + logistic regression on the same split (``text_baseline``), to compare."""
    truncated: int | None = None
    """Texts: how many training and validation texts were cut at the model's maximum length."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
