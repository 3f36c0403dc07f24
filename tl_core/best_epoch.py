"""The one rule that picks the epoch whose weights are kept.

The lowest validation loss over the whole run, across phases; a tie goes to the higher
validation accuracy. Loss is the finer signal (accuracy on a small validation set moves in
steps of one image), and one rule everywhere means early stopping waits for exactly what the
saved model is chosen by. The trainer's ``BestWeights`` and ``EarlyStopping``, its result,
Results, the verdicts and the exported ``train.py`` all use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

RULE = "lowest validation loss across all phases (a tie goes to the higher accuracy)"


def key(val_loss: float, val_acc: float) -> tuple[float, float]:
    """Smaller is better; a NaN loss ranks last."""
    return (val_loss if not math.isnan(val_loss) else math.inf, -val_acc)


def is_better(val_loss: float, val_acc: float, best: tuple[float, float] | None) -> bool:
    """Whether an epoch with these figures beats ``best`` (a ``key``; None: nothing yet)."""
    return best is None or key(val_loss, val_acc) < best


def best_record(history: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The kept epoch of a run's history (``metrics.jsonl`` rows)."""
    return min(history, key=lambda h: key(float(h["val_loss"]), float(h["val_acc"])))


def kept_record(history: Sequence[Mapping[str, Any]], result: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The epoch whose weights a run saved: the one its result recorded (runs trained before
    this rule kept their most accurate epoch), else the rule's pick (a run still training)."""
    recorded = (result or {}).get("best_epoch")
    if recorded:
        for h in history:
            if int(h["epoch"]) == int(recorded):
                return h
    return best_record(history)
