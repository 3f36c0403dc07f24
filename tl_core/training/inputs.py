"""What the loop trains on, chosen once per run, cheapest first.

- Only the head trains: the backbone's pooled features, computed once (``feature_cache``).
- The bottom of the network never trains and nothing is augmented: the frozen prefix's maps,
  computed once; the top trains on them (``frozen_prefix``).
- Otherwise images, decoded once and kept in memory when they fit (``image_dataset``), so an
  augmented epoch only augments.

None of these changes what is computed: the same layers see the same inputs in the same
batches (tests compare the trained weights with the plain path). The once-run parts have their
batch norms folded into their convolutions (``bn_folding``), which changes only rounding: about
1e-4 of the loss after a few epochs, and the same accuracies.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, RandomSampler

from .. import bn_folding, device_augment, frozen_prefix
from ..backbones import classifier_name
from ..freezing import HEAD, ever_trained, set_trainable
from ..frozen_prefix import Split, Suffix
from ..image_dataset import DECODED_CACHE_BYTES, ImageDataset, TensorBatches, decode_all
from ..modes import eval_mode
from ..preprocessing import eval_transform, sends_uint8, train_transform
from ..text_models import TextBatches, is_text, load_tokenizer
from .loop import Inputs

if TYPE_CHECKING:
    from .trainer import Trainer

HEAD_BATCH_COST = 0.01
"""A batch on cached features costs ~1% of a backbone batch; used for progress and ETA."""


def _batches(trainer: Trainer, split: str) -> int:
    return -(-len(trainer.dataset.items[split]) // trainer.cfg.batch_size)


def _loader(trainer: Trainer, dataset: torch.utils.data.Dataset, shuffle: bool, **kwargs: Any) -> DataLoader:
    """The order comes from the sampler's own generator, so it is the same with or without data
    workers, persistent or not (the loader's generator only seeds the workers)."""
    seed = trainer.cfg.seed
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=trainer.cfg.batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def image_loader(trainer: Trainer, split: str, training: bool) -> DataLoader:
    """Data workers send uint8 pixels where the preset allows (``preprocessing.sends_uint8``):
    a quarter of the bytes through shared memory and pinned copies; ``Trainer.to_device``
    normalises them on the device."""
    cfg, data_config, workers = trainer.cfg, trainer.data_config, trainer.workers
    uint8 = workers > 0 and (not training or sends_uint8(cfg.augment))
    transform = (
        train_transform(data_config, cfg.augment, uint8) if training else eval_transform(data_config, uint8)
    )
    size = data_config["input_size"][-1]
    dataset = ImageDataset(trainer.dataset.items[split], transform, size, trainer.decoded.get(split))
    return _loader(
        trainer,
        dataset,
        training,
        num_workers=workers,
        pin_memory=trainer.device.pin_memory,
        persistent_workers=workers > 0,
    )


def text_loader(trainer: Trainer, split: str, training: bool) -> DataLoader:
    """(text, label) rows, tokenized a batch at a time and padded to that batch's longest text
    (``text_models.TextBatches``). No workers: a fast tokenizer keeps up, and forked workers
    would fight over its threads."""
    if trainer.text_batches is None:
        trainer.text_batches = TextBatches(
            load_tokenizer(trainer.data_config), trainer.data_config["max_length"]
        )
    return _loader(trainer, trainer.dataset.items[split], training, collate_fn=trainer.text_batches)


def tensor_loader(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, shuffle: bool) -> DataLoader:
    """Batches of cached tensors in exactly the order the image loader gives the images."""
    return _loader(trainer, TensorBatches(x, y), shuffle, collate_fn=TensorBatches.collate)


def choose(trainer: Trainer) -> Inputs | None:
    """The cheapest inputs for the run; None if the user stopped while they were prepared."""
    if trainer.cfg.uses_feature_cache:
        return _features(trainer)
    split = frozen_split(trainer)
    if split is not None:
        maps = _maps(trainer, split)
        if maps is not None or trainer.should_stop:
            return maps
    return _images(trainer)


def _features(trainer: Trainer) -> Inputs | None:
    n = _batches(trainer, "train") + _batches(trainer, "val")
    trainer.units_total = trainer.units_done + n + trainer.epochs_total * n * HEAD_BATCH_COST
    set_trainable(trainer.model, trainer.groups, [HEAD])
    cached = {}
    for split in ("train", "val"):
        out = trainer.extract_features(split)
        if out is None:
            return None
        cached[split] = out
    head = trainer.model.get_submodule(classifier_name(trainer.model))
    return Inputs(
        "features",
        head,
        tensor_loader(trainer, *cached["train"], shuffle=True),
        tensor_loader(trainer, *cached["val"], shuffle=False),
        cost=HEAD_BATCH_COST,
        autocast=False,
        cached=cached,
    )


def features(trainer: Trainer, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Pooled pre-logit features of ``split`` (what the classifier sees), on the device; None if
    the user stopped. Computed, on a cache miss, by a batch-norm-folded copy of the frozen model,
    dropped afterwards."""

    def make_forward() -> Callable[[torch.Tensor], torch.Tensor]:
        net = frozen_forward(trainer, trainer.model)
        return lambda x: net.forward_head(net.forward_features(x), pre_logits=True).float()

    return trainer.cache.outputs(trainer, "features", split, make_forward)


def frozen_split(trainer: Trainer) -> Split | None:
    """The bottom of the network that no phase trains, when the images are fixed (no
    augmentation) so that its output is too: run once instead of every epoch."""
    if trainer.cfg.augment != "none" or not trainer.reuse_frozen_prefix or is_text(trainer.data_config):
        return None  # texts: each batch is padded to its own length, so there is no fixed map to keep
    lrs = (p.lrs for p in trainer.phases)
    trainable = ever_trained(trainer.model, trainer.groups, lrs, trainer.cfg.train_bn)
    with trainer.autocast():
        return frozen_prefix.find(trainer.model, trainable, sample(trainer))


def sample(trainer: Trainer) -> torch.Tensor:
    """Two training images as the network sees them, on the device, to check a shortcut on."""
    if trainer.sample is None:
        probe = ImageDataset(
            trainer.dataset.items["train"][:2],
            eval_transform(trainer.data_config),
            trainer.data_config["input_size"][-1],
        )  # not the train loader: drawing from it would change its shuffling
        trainer.sample = trainer.to_device(torch.stack([probe[i][0] for i in range(len(probe))]))
    return trainer.sample


def frozen_forward(trainer: Trainer, module: nn.Module) -> nn.Module:
    """``module`` (never trained in this run) with its batch norms folded when that checks out
    (``bn_folding``, in float32), for the passes that run it once over every image."""
    if not trainer.fold_batchnorm or not bn_folding.pairs(module):  # nothing to fold: no sample needed
        return module
    return bn_folding.folded(module, sample(trainer)) or module


def _maps(trainer: Trainer, split: Split) -> Inputs | None:
    n = _batches(trainer, "train") + _batches(trainer, "val")
    trainer.units_total = trainer.units_done + n + trainer.epochs_total * n
    prefix = functools.cache(lambda: frozen_forward(trainer, nn.Sequential(*split.prefix)))
    cached = {}
    for name in ("train", "val"):
        out = trainer.cache.outputs(
            trainer, f"feature maps below {split.boundary}", name, prefix, frozen_prefix.MAX_MAP_BYTES
        )
        if out is None:
            return None
        cached[name] = out
    return Inputs(
        "maps",
        Suffix(trainer.model, split),
        tensor_loader(trainer, *cached["train"], shuffle=True),
        tensor_loader(trainer, *cached["val"], shuffle=False),
        cached=cached,
        prefix=prefix,
    )


def _images(trainer: Trainer) -> Inputs | None:
    n = _batches(trainer, "train") + _batches(trainer, "val")
    trainer.units_total = trainer.units_done + trainer.epochs_total * n
    if is_text(trainer.data_config):
        return Inputs("texts", trainer.model, trainer.loader("train", True), trainer.loader("val", False))
    if trainer.keep_decoded and trainer.epochs_total > 1:
        budget = DECODED_CACHE_BYTES
        for split in ("train", "val"):
            trainer.units_total += _batches(trainer, split)
            decoded = decode_all(
                trainer.dataset.items[split],
                trainer.data_config["input_size"][-1],
                trainer.workers,
                budget,
                _decoding_progress(trainer, split),
            )
            if trainer.should_stop:
                return None
            if decoded is None:  # too big to keep: this split is decoded every epoch
                trainer.units_total = trainer.units_done + trainer.epochs_total * n
                break
            trainer.decoded[split] = decoded
            budget -= sum(a.nbytes for a in decoded)
        if _augment_on_device(trainer):
            return _device_images(trainer)
    return Inputs(
        "images", trainer.model, trainer.loader("train", training=True), trainer.loader("val", training=False)
    )


def _augment_on_device(trainer: Trainer) -> bool:
    """On a GPU, when both splits are decoded, fit on it, and the preset runs there."""
    wanted = trainer.augment_on_device
    if wanted is None:
        wanted = trainer.device.device == "cuda"
    decoded = trainer.decoded
    return (
        wanted
        and trainer.cfg.augment in device_augment.PRESETS
        and {"train", "val"} <= set(decoded)
        and device_augment.fits(len(decoded["train"]) + len(decoded["val"]), trainer.data_config)
    )


def _device_images(trainer: Trainer) -> Inputs:
    """Both splits packed on the device; training batches augmented there (``device_augment``)."""
    device, data_config = trainer.device.device, trainer.data_config
    augmented = trainer.cfg.augment != "none"
    batches = {}
    for split, training in (("train", True), ("val", False)):
        labels = torch.tensor([label for _, label in trainer.dataset.items[split]], device=device)
        pixels = device_augment.pack(
            trainer.decoded[split], data_config, training and augmented, device, os.cpu_count() or 1
        )
        order = tensor_loader(trainer, torch.arange(len(labels), device=device), labels, shuffle=training)
        generator = (
            torch.Generator(device=device).manual_seed(trainer.cfg.seed) if training and augmented else None
        )
        batches[split] = device_augment.DeviceBatches(pixels, order, data_config, generator)
    trainer.decoded.clear()  # the device holds them now
    return Inputs("images", trainer.model, batches["train"], batches["val"])


def _decoding_progress(trainer: Trainer, split: str) -> Callable[[int, int], bool]:
    total_batches = _batches(trainer, split)
    start = trainer.units_done

    def on_batch(done: int, total: int) -> bool:
        trainer.units_done = start + total_batches * done / total
        if done % trainer.cfg.batch_size == 0 or done == total:
            trainer.fire("on_stage", f"decoding {split} images (once, kept in memory)", done, total)
        return trainer.should_stop

    return on_batch


@torch.no_grad()
def pooled_features(trainer: Trainer, split: str, rows: Sequence[int]) -> torch.Tensor | None:
    """Pooled features of ``rows`` of ``split``, as the model is now, from the cached inputs
    (a slice of the cached features, or the trainable top run on the cached maps)."""
    inputs = trainer.inputs
    if inputs is None or split not in inputs.cached:
        return None
    x = inputs.cached[split][0][torch.as_tensor(list(rows), device=inputs.cached[split][0].device)]
    if inputs.kind == "features":
        return x.float()
    assert isinstance(inputs.net, Suffix)
    out = []
    with eval_mode(trainer.model):
        for chunk in x.split(trainer.cfg.batch_size):
            with trainer.autocast():
                out.append(inputs.net.pooled(chunk).float())
    return torch.cat(out) if out else x.new_zeros(0, trainer.model.num_features)
