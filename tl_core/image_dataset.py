"""Torch datasets over a scanned split: image files, and the same files decoded once.

Augmented training sees every image every epoch through a random transform, so the JPEG decode
(a third of a CPU's data time) repeats each epoch for nothing. ``decode_all`` keeps what
``load_rgb`` returns, as uint8 arrays, for a split that fits in ``DECODED_CACHE_BYTES``;
``ImageDataset`` then augments from memory. The arrays are the decoder's own output, so the
pixels, and therefore training, are exactly those of decoding every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import DatasetError
from .images import ImageProblem, load_rgb

DECODED_CACHE_BYTES = 1024**3
"""A split's decoded images are kept only if all of them together fit in this (per job)."""


def read(path: str, draft_size: int | None) -> Image.Image:
    """``load_rgb``, with a message for a file that was readable at scan time and is not now."""
    try:
        return load_rgb(path, draft_size)
    except ImageProblem as exc:
        raise DatasetError(f"{path} can no longer be read ({exc}); was it changed after the scan?") from exc


class ImageDataset(torch.utils.data.Dataset):
    """(path, label) pairs -> (tensor, label), decoding with the same loader the scan used, or
    reading ``decoded`` (``decode_all``'s arrays, in ``items`` order) when given."""

    def __init__(
        self,
        items: Sequence[tuple[str, int]],
        transform: Any,
        draft_size: int | None = None,
        decoded: Sequence[np.ndarray] | None = None,
    ):
        self.items = list(items)
        self.transform = transform
        self.draft_size = draft_size
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        if self.decoded is not None:
            image = Image.fromarray(self.decoded[index])
        else:
            image = read(path, self.draft_size)
        return self.transform(image), label


class _Decode(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[tuple[str, int]], draft_size: int | None):
        self.items, self.draft_size = list(items), draft_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(read(self.items[index][0], self.draft_size))


def _as_is(array: np.ndarray) -> np.ndarray:
    return array  # a named function: workers started by spawn must pickle it


def decode_all(
    items: Sequence[tuple[str, int]],
    draft_size: int | None,
    workers: int = 0,
    max_bytes: int = DECODED_CACHE_BYTES,
    on_batch: Callable[[int, int], bool] | None = None,
) -> list[np.ndarray] | None:
    """Every image of ``items`` decoded as ``load_rgb`` decodes it, as HxWx3 uint8 arrays; None
    when they would not fit in ``max_bytes`` (judged as they come) or ``on_batch(done, total)``
    returns True (stop)."""
    loader = torch.utils.data.DataLoader(
        _Decode(items, draft_size),
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        generator=torch.Generator(),  # its own: drawing from the global one would change augmentation
    )
    out: list[np.ndarray] = []
    size = 0
    for i, array in enumerate(loader, start=1):
        out.append(array)
        size += array.nbytes
        if size / i * len(items) > max_bytes:
            return None
        if on_batch is not None and on_batch(i, len(items)):
            return None
    return out


class TensorBatches(torch.utils.data.Dataset):
    """Cached tensors (maps or features) served a batch at a time: a ``DataLoader`` over it
    with ``collate_fn=TensorBatches.collate`` gives exactly the batches, in the same order, that
    it gives over the images (one indexing per batch, not one per image)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        if self.y.is_cuda:  # pinned and asynchronous: a plain copy would wait for the GPU every batch
            idx = idx.pin_memory().to(self.y.device, non_blocking=True)
        return self.x[idx], self.y[idx]

    @staticmethod
    def collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch
