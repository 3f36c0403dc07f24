"""Pick the compute device and the settings that make it fast."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class DeviceSetup:
    device: str
    amp_dtype: torch.dtype | None
    """bf16 on GPUs that support it, else fp16 (with a grad scaler); ``None`` on CPU."""
    channels_last: bool
    pin_memory: bool

    @property
    def label(self) -> str:
        if self.device == "cuda":
            return f"cuda ({torch.cuda.get_device_name(0)})"
        return self.device


def detect_device(requested: str = "auto") -> DeviceSetup:
    """``auto`` means cuda, then Apple's mps, then cpu."""
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("CUDA was requested but no CUDA GPU is available; use --device cpu.")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceSetup("cuda", dtype, channels_last=True, pin_memory=True)
    if requested == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("MPS was requested but is not available; use --device cpu.")
        return DeviceSetup("mps", None, channels_last=False, pin_memory=False)
    if requested == "cpu":
        # oneDNN's convolutions run ~1.9x faster in NHWC: 55 vs 29 img/s for Lite0 on 2 cores.
        return DeviceSetup("cpu", None, channels_last=True, pin_memory=False)
    raise ConfigError(f"Unknown device '{requested}': use auto, cuda, mps or cpu.")
