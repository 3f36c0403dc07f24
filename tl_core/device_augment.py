"""A split decoded once into one uint8 tensor on the accelerator, augmented there in batches.

With data workers a GPU still waits for the CPU to crop, flip and jitter every image. For a
dataset that fits, ``pack`` keeps each image once, resized as the eval transform resizes it, and
``augment`` draws the ``light`` preset for a whole batch in a few tensor ops on the device.

Accuracy cost, stated: validation is the eval transform exactly (tested). Training differs from
timm's per-image ``light`` preset in three ways: the random crop is taken from the central square
the eval transform keeps (a 4:3 photo loses its outer eighths on each side to cropping), resampled
bilinearly by ``roi_align`` (timm: bicubic), and colour jitter applies brightness, contrast and
saturation in a fixed order (timm: a random order).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PRESETS = ("none", "light")
"""What runs on the device; ``strong`` (RandAugment) stays with timm on the CPU."""
SCALE, RATIO = (0.6, 1.0), (3 / 4, 4 / 3)
"""The ``light`` preset's crop (``preprocessing.AUGMENT_KWARGS``)."""
JITTER = 0.1
DEVICE_BYTES = 2 * 1024**3
"""Splits bigger than this together stay on the CPU path."""


def _resize_and_crops(data_config: dict[str, Any]) -> tuple[Any, int, int]:
    """The eval transform's own resize, its size, and the crop (the model's input size)."""
    from torchvision.transforms import CenterCrop, Resize

    from .preprocessing import eval_transform

    steps = eval_transform(data_config).transforms
    resize = next(t for t in steps if isinstance(t, Resize))
    crop = next(t for t in steps if isinstance(t, CenterCrop))
    side = resize.size if isinstance(resize.size, int) else min(resize.size)
    return resize, int(side), int(crop.size[0])


def pack(
    decoded: Sequence[np.ndarray], data_config: dict[str, Any], training: bool, device: str, threads: int = 1
) -> torch.Tensor:
    """Images as one (N, 3, S, S) uint8 tensor on ``device``: resized as the eval transform does,
    then its centre crop (validation) or the central square that training crops from. Pillow
    resizes without the GIL, so ``threads`` share the work."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image
    from torchvision.transforms.functional import center_crop, pil_to_tensor

    resize, side, crop = _resize_and_crops(data_config)
    size = side if training else crop
    out = torch.empty(len(decoded), 3, size, size, dtype=torch.uint8)

    def put(i: int) -> None:
        out[i] = pil_to_tensor(center_crop(resize(Image.fromarray(decoded[i])), [size, size]))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(put, range(len(decoded))))
    return out.to(device)


def fits(n_images: int, data_config: dict[str, Any], max_bytes: int = DEVICE_BYTES) -> bool:
    _, side, _ = _resize_and_crops(data_config)
    return n_images * 3 * side * side <= max_bytes


def normalize(
    x: torch.Tensor, data_config: dict[str, Any], stats: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """uint8 or [0, 1] pixels to the model's input, as ``ToTensor`` + ``Normalize``; ``stats``
    (``mean_std``) saves making them again for every batch."""
    if x.dtype == torch.uint8:
        x = x.float() / 255
    mean, std = stats or mean_std(data_config, x.device)
    return (x - mean) / std


def mean_std(data_config: dict[str, Any], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(data_config["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(data_config["std"], device=device).view(1, 3, 1, 1)
    return mean, std


def crop_boxes(n: int, side: int, generator: torch.Generator, device: str, tries: int = 10) -> torch.Tensor:
    """``RandomResizedCrop``'s boxes for ``n`` images of ``side`` px, as (x0, y0, x1, y1): as
    torchvision, up to ``tries`` draws of area and aspect each, the first that fits kept, else
    the whole image."""

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator, device=device)

    area = uniform(*SCALE, n, tries) * side * side
    ratio = torch.exp(uniform(math.log(RATIO[0]), math.log(RATIO[1]), n, tries))
    w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
    fits = (w <= side) & (h <= side)
    first = fits.float().argmax(dim=1, keepdim=True)  # the first draw that fits (0 if none)
    any_fits = fits.any(dim=1)
    w = torch.where(any_fits, w.gather(1, first).squeeze(1), torch.full_like(w[:, 0], side))
    h = torch.where(any_fits, h.gather(1, first).squeeze(1), torch.full_like(h[:, 0], side))
    x0 = uniform(0, 1, n) * (side - w)
    y0 = uniform(0, 1, n) * (side - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def jitter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation, each by a factor in [0.9, 1.1] per image ([0, 1] pixels)."""
    n = len(x)

    def factor() -> torch.Tensor:
        return (1 - JITTER + 2 * JITTER * torch.rand(n, generator=generator, device=x.device)).view(
            n, 1, 1, 1
        )

    x = (x * factor()).clamp(0, 1)
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    c = factor()
    x = (c * x + (1 - c) * mean).clamp(0, 1)
    s = factor()
    return (s * x + (1 - s) * _gray(x)).clamp(0, 1)


@torch.no_grad()
def augment(pixels: torch.Tensor, out_size: int, generator: torch.Generator) -> torch.Tensor:
    """The ``light`` preset on a batch of (B, 3, S, S) uint8 images, in [0, 1]: a random resized
    crop to ``out_size``, a horizontal flip half the time, colour jitter."""
    from torchvision.ops import roi_align

    n, device = len(pixels), pixels.device
    boxes = crop_boxes(n, pixels.shape[-1], generator, str(device))
    rois = torch.cat([torch.arange(n, device=device, dtype=boxes.dtype).unsqueeze(1), boxes], dim=1)
    x = roi_align(
        pixels.float() / 255, rois, output_size=out_size, spatial_scale=1.0, sampling_ratio=2, aligned=True
    )
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    return jitter(x, generator)


@dataclass
class DeviceBatches:
    """Batches from a packed split, in ``order``'s batches (the image loader's order), augmented
    on the device for training or centre-cropped already (validation)."""

    pixels: torch.Tensor
    order: Any
    """Yields (indices, labels) batches on the device: ``training.inputs.tensor_loader`` over
    indices and labels."""
    data_config: dict[str, Any]
    generator: torch.Generator | None = None
    """Set for training: the augmentation's random numbers, on the device."""

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = int(self.data_config["input_size"][-1])
        stats = mean_std(self.data_config, self.pixels.device)
        for idx, y in self.order:
            batch = self.pixels[idx]
            x = augment(batch, size, self.generator) if self.generator is not None else batch
            yield normalize(x, self.data_config, stats), y
