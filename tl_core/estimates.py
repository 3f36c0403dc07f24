"""Rough time-per-epoch estimates for *this* dataset on *this* machine.

One measured number (how fast this device runs EfficientNet-Lite0) calibrates a multiply-
accumulate rate; each backbone's cost then scales with its MACs, the image size and the number
of images. Good to a factor of about two, which is what choosing a backbone needs.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from .backbones import BackboneSpec
from .devices import detect_device

_TRAIN_COST = 3.0
"""Forward + backward costs about three forwards."""


@functools.lru_cache(maxsize=4)
def device_gmacs_per_second(device: str = "auto") -> float:
    """Measured once per process: Lite0 forward passes at 224 px on ``device``."""
    import timm
    import torch

    setup = detect_device(device)
    model = timm.create_model("efficientnet_lite0").eval().to(setup.device)
    x = torch.randn(8, 3, 224, 224, device=setup.device)
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x[:2])  # warm-up
        if setup.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if setup.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return 0.40 * len(x) / seconds


@dataclass
class EpochEstimate:
    first_epoch_s: float
    """Includes computing cached features, for feature extraction."""
    later_epoch_s: float


def estimate_epoch(
    spec: BackboneSpec,
    n_train: int,
    n_val: int,
    image_size: int | None,
    strategy: str,
    cached: bool,
    rate: float,
) -> EpochEstimate:
    """Seconds per epoch for ``spec``; ``cached`` means feature extraction on the feature cache."""
    size = image_size or spec.input_size
    per_image = spec.gmacs * (size / spec.input_size) ** 2 / rate
    forward_all = per_image * (n_train + n_val)
    if cached:
        return EpochEstimate(first_epoch_s=forward_all, later_epoch_s=0.05)
    cost = 1.0 if strategy == "feature-extraction" else _TRAIN_COST  # frozen: no backbone backward
    epoch = per_image * (n_train * cost + n_val)
    return EpochEstimate(first_epoch_s=epoch, later_epoch_s=epoch)
