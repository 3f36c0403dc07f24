"""The small choices a run makes before it trains: seeds, class weights, data workers."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import numpy as np
import torch

IMBALANCE_FOR_WEIGHTS = 3.0


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


def default_workers(device: str) -> int:
    """Data-loading processes when the config leaves it open: on a GPU, enough to decode and
    augment while it computes (up to 8, half the cores); on a CPU none, since they would take
    the cores the model needs."""
    return min(8, (os.cpu_count() or 2) // 2) if device == "cuda" else 0
