"""Outputs of the frozen part of a network, computed once per image and reused.

Two kinds share one cache: pooled features (feature extraction: only the head trains) and the
frozen prefix's feature maps (fine-tuning without augmentation: only the top trains, see
``frozen_prefix``). Both are kept on the device for the run and on disk as safetensors, keyed
by everything they depend on, so trying another learning rate on the same data, backbone and
weights starts warm. The least recently used files go first when the folder outgrows its budget.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..fsutil import prune_lru, write_atomic

if TYPE_CHECKING:
    from .trainer import Trainer

FEATURE_CACHE_BYTES = 2 * 1024**3
"""Least-recently-used cache files beyond this are deleted (a digits run takes ~9 MB of
features, ~20 MB of Lite0 maps at 128 px)."""
MAX_ENTRY_BYTES = FEATURE_CACHE_BYTES // 4
"""Bigger outputs stay in memory only: writing them would evict most of the cache."""

Pair = tuple[torch.Tensor, torch.Tensor]


def prune_feature_cache(folder: Path, max_bytes: int) -> list[Path]:
    """Delete the least recently used cache files until the folder fits in ``max_bytes``."""
    return prune_lru(folder.glob("*.safetensors"), max_bytes)


class FeatureCache:
    """``outputs(trainer, kind, split, forward)``: ``forward`` over every image of a split, from
    disk when an earlier run computed the same thing. ``folder=None`` keeps nothing on disk
    (random weights: nothing would ever be reused)."""

    def __init__(self, folder: Path | None, max_bytes: int = FEATURE_CACHE_BYTES):
        self.folder = folder
        self.max_bytes = max_bytes

    def key(self, trainer: Trainer, kind: str, split: str) -> str:
        """Changes whenever the outputs could: what is cached, weights, preprocessing, device,
        precision, or any file (or text)."""
        digest = hashlib.sha256()
        cfg, device = trainer.cfg, trainer.device
        ident = [kind, cfg.backbone, trainer.weights_id, trainer.data_config, cfg.model_kwargs, device.device]
        ident += [str(device.amp_dtype), device.channels_last, trainer.fold_batchnorm]
        digest.update(json.dumps(ident, sort_keys=True, default=str).encode())
        text = trainer.dataset.profile.modality == "text"
        for item, label in trainer.dataset.items[split]:
            if text:  # the item is the text itself
                digest.update(f"{item}\0{label}\n".encode())
                continue
            st = os.stat(item)
            digest.update(f"{item}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return f"{split}-{digest.hexdigest()[:32]}"

    def _load(self, file: Path, device: str) -> Pair | None:
        from safetensors.torch import load_file

        try:
            cached = load_file(str(file), device=device)
        except Exception:  # a damaged entry is recomputed, never fatal
            file.unlink(missing_ok=True)
            return None
        os.utime(file)  # recently used: keep it when pruning
        return cached["x"], cached["y"]

    def _save(self, file: Path, out: Pair) -> None:
        from safetensors.torch import save

        if out[0].numel() * out[0].element_size() > min(MAX_ENTRY_BYTES, self.max_bytes // 4):
            return  # kept in memory for this run only
        write_atomic(file, save({"x": out[0].cpu().contiguous(), "y": out[1].cpu().contiguous()}))
        prune_feature_cache(file.parent, self.max_bytes)

    @torch.no_grad()
    def outputs(
        self,
        trainer: Trainer,
        kind: str,
        split: str,
        make_forward: Callable[[], Callable[[torch.Tensor], torch.Tensor]],
        max_bytes: float = float("inf"),
    ) -> Pair | None:
        """``make_forward()`` (built only on a miss; run in eval mode, under the run's autocast)
        over every image of ``split`` with the eval transform, and the labels, on the device.
        None when the user stopped or the outputs would outgrow ``max_bytes`` (judged as they
        come). ``kind`` names what is cached in progress messages ("features", "feature maps
        below blocks.5")."""
        n_batches = -(-len(trainer.dataset.items[split]) // trainer.cfg.batch_size)
        file = None
        if self.folder is not None:
            file = self.folder / f"{self.key(trainer, kind, split)}.safetensors"
            cached = self._load(file, trainer.device.device) if file.exists() else None
            if cached is not None:
                trainer.units_done += n_batches
                trainer.fire("on_stage", f"loaded cached {split} {kind}", n_batches, n_batches)
                return cached
        loader = trainer.loader(split, training=False)
        trainer.model.eval()
        forward = make_forward()
        xs, ys, size = [], [], 0
        for i, (x, y) in enumerate(loader, start=1):
            with trainer.autocast():
                out = forward(trainer.to_device(x))
            xs.append(out)
            ys.append(y.to(trainer.device.device))
            size += out.numel() * out.element_size()
            if size / i * len(loader) > max_bytes:
                return None
            trainer.units_done += 1
            trainer.fire("on_stage", f"caching {split} {kind}", i, len(loader))
            if trainer.should_stop:
                return None
        result = torch.cat(xs), torch.cat(ys)
        if file is not None:
            self._save(file, result)
        return result
