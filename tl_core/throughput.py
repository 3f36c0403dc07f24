"""``tl-studio bench --throughput MODEL``: does the data path keep the accelerator busy?

A fine-tune-all of ``MODEL`` is timed twice in one process with the engine's own loop, optimizer
and precision: once on the real data path (files decoded, augmented and batched by the engine's
loader, its workers and pinned memory) and once on synthetic batches already on the device. The
ratio says how much the data path costs: near 1, the model is the bottleneck, as it should be.
Weights are random (``pretrained=False``): speed does not depend on them, and nothing is
downloaded.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SAMPLE_IMAGES = {"cuda": 1536, "cpu": 48}
"""Photos written when no data is given: a few GPU epochs' worth, or a few CPU batches."""
SAMPLE_BATCH = {"cuda": 128, "cpu": 16}
TIMED_EPOCHS = {"cuda": 3, "cpu": 1}
"""A GPU epoch of the sample is under a second: time several, or the figure is noise."""


@dataclass
class Throughput:
    model: str
    device: str
    data: str
    image_size: int
    batch_size: int
    images: int
    """Training images per epoch; several epochs are timed on a GPU (``TIMED_EPOCHS``)."""
    workers: int
    augment_on_device: bool
    """Whether the real data path augmented on the device (``device_augment``)."""
    real_img_s: float
    synthetic_img_s: float
    decode_s: float
    """The one-time decoding of the images into memory (not in ``real_img_s``)."""

    @property
    def ratio(self) -> float:
        return self.real_img_s / self.synthetic_img_s if self.synthetic_img_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def write_sample_photos(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` photo-sized JPEGs (500x375, smooth colour fields with noise) in two class folders:
    the decode cost of real photos without shipping any."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(n):
        cls = folder / ("a" if i % 2 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        fx, fy, phase = rng.uniform(0.005, 0.05, 2).tolist() + [rng.uniform(0, 6.3)]
        base = np.stack([np.sin(xx * fx + phase + c) * np.cos(yy * fy - c) for c in range(3)], -1)
        pixels = 127 + 100 * base + rng.normal(0, 12, base.shape)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(cls / f"{i:05d}.jpg", quality=88)
    return folder


def measure(
    model_name: str,
    data: str | None = None,
    image_size: int = 224,
    batch_size: int | None = None,
    device: str = "auto",
    augment: str = "light",
    augment_on_device: bool | None = None,
) -> Throughput:
    """Images per second of a fine-tune-all of ``model_name``, on real files and on synthetic
    device tensors (module docstring), in batches of the same sizes. Each path runs one untimed
    epoch first (workers start, kernels are chosen), then ``TIMED_EPOCHS``."""
    from .devices import detect_device

    setup = detect_device(device)
    kind = _kind(setup)
    batch_size = batch_size or SAMPLE_BATCH[kind]
    with tempfile.TemporaryDirectory() as tmp:
        source = data or str(write_sample_photos(Path(tmp) / "photos", SAMPLE_IMAGES[kind]))
        label = data or "generated photos"
        return _measure(model_name, source, label, image_size, batch_size, setup, augment, augment_on_device)


def _kind(setup: Any) -> str:
    """The sample sizes' key: a GPU, or anything else."""
    return "cuda" if setup.device == "cuda" else "cpu"


def _measure(
    model_name: str,
    source: str,
    label: str,
    image_size: int,
    batch_size: int,
    setup: Any,
    augment: str,
    augment_on_device: bool | None,
) -> Throughput:
    import torch

    from .backbones import create_backbone
    from .config import TrainConfig
    from .data import scan_dataset
    from .device_augment import DeviceBatches
    from .freezing import layer_groups, optimizer_param_groups, set_trainable
    from .training import Inputs, Trainer, seed_everything
    from .training import inputs as choose_inputs
    from .training.loop import scheduler, train_epoch

    cfg = TrainConfig(
        data=source,
        backbone=model_name,
        strategy="fine-tune-all",
        weights="none",
        image_size=image_size,
        batch_size=batch_size,
        augment=augment,
        epochs=2,
        warmup_epochs=0,
        catalog_only=False,
    )
    seed_everything(0)
    dataset = scan_dataset(source, val_fraction=0.05, seed=0)
    model, info = create_backbone(model_name, len(dataset.classes), "none", image_size, catalog_only=False)
    groups = layer_groups(model)
    trainer = Trainer(model, groups, cfg, dataset, info.data_config, setup)
    trainer.augment_on_device = augment_on_device
    model.to(setup.device)
    if setup.channels_last:
        model.to(memory_format=torch.channels_last)
    started = time.perf_counter()
    real = choose_inputs.choose(trainer)
    assert real is not None
    decode_s = time.perf_counter() - started
    phase = trainer.phases[-1]
    set_trainable(model, groups, phase.trainable)
    optimizer = torch.optim.AdamW(optimizer_param_groups(model, groups, phase.lrs, cfg.weight_decay))
    n_batches = len(real.train)  # type: ignore[arg-type]
    scaler = torch.amp.GradScaler(enabled=setup.amp_dtype == torch.float16)
    gen = torch.Generator(device=setup.device).manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, device=setup.device, generator=gen)
    y = torch.randint(0, len(dataset.classes), (batch_size,), device=setup.device, generator=gen)
    if setup.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    n_images = len(dataset.items["train"])
    sizes = [batch_size] * (n_images // batch_size) + [n_images % batch_size] * (n_images % batch_size > 0)
    synthetic = Inputs("images", model, [(x[:n], y[:n]) for n in sizes], [])  # the real batches' sizes
    epochs = TIMED_EPOCHS[_kind(setup)]
    schedule = scheduler(optimizer, 2 * (1 + epochs) * n_batches, 0)

    def img_s(inputs: Inputs) -> float:
        model.train()
        train_epoch(trainer, inputs, optimizer, schedule, scaler)  # warm-up: workers, kernels
        if setup.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(epochs):
            train_epoch(trainer, inputs, optimizer, schedule, scaler)  # reads the loss: synchronised
        return epochs * n_images / (time.perf_counter() - t0)

    real_img_s = img_s(real)
    synthetic_img_s = img_s(synthetic)
    return Throughput(
        model=model_name,
        device=setup.label,
        data=label,
        image_size=image_size,
        batch_size=batch_size,
        images=n_images,
        workers=trainer.workers,
        augment_on_device=isinstance(real.train, DeviceBatches),
        real_img_s=real_img_s,
        synthetic_img_s=synthetic_img_s,
        decode_s=decode_s,
    )


def report(result: Throughput) -> str:
    return "\n".join(
        [
            f"{result.model}, fine-tune-all at {result.image_size} px, batch {result.batch_size}, "
            f"on {result.device} ({result.workers} data workers; {result.data}, {result.images} images; "
            f"augmented on the {'device' if result.augment_on_device else 'CPU'})",
            f"real data path   {result.real_img_s:9.1f} img/s (after decoding once in {result.decode_s:.1f} s)",
            f"synthetic tensors{result.synthetic_img_s:9.1f} img/s",
            f"the data path reaches {100 * result.ratio:.0f}% of the synthetic figure",
        ]
    )
