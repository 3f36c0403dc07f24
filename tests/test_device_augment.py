"""Images packed on the device and augmented there: its logic, tested on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tl_core import device_augment as DA
from tl_core.image_dataset import decode_all
from tl_core.preprocessing import eval_transform

CONFIG = {
    "input_size": (3, 32, 32),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


@pytest.fixture
def photos(tmp_path: Path) -> list[tuple[str, int]]:
    rng = np.random.default_rng(0)
    items = []
    for i, (w, h) in enumerate([(60, 45), (45, 60), (50, 50), (200, 150)]):
        path = tmp_path / f"{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        items.append((str(path), i % 2))
    return items


def test_packed_validation_images_are_the_eval_transform(photos: list[tuple[str, int]]) -> None:
    decoded = decode_all(photos, 32)
    assert decoded is not None
    packed = DA.pack(decoded, CONFIG, training=False, device="cpu", threads=3)  # each in its place
    assert packed.shape == (4, 3, 32, 32) and packed.dtype == torch.uint8
    expected = torch.stack([eval_transform(CONFIG)(Image.fromarray(a)) for a in decoded])
    torch.testing.assert_close(DA.normalize(packed, CONFIG), expected, rtol=0, atol=1e-6)
    # Training keeps the central square the eval resize gives (36 px here), to crop from.
    assert DA.pack(decoded, CONFIG, training=True, device="cpu").shape == (4, 3, 36, 36)


def test_crop_boxes_follow_the_light_presets_scale_and_ratio() -> None:
    gen = torch.Generator().manual_seed(0)
    boxes = DA.crop_boxes(2000, 100, gen, "cpu")
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 100 + 1e-3).all()
    area, ratio = w * h / 100**2, w / h
    assert area.min() >= 0.6 - 1e-4 and area.max() <= 1 + 1e-4
    assert ratio.min() >= 0.75 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    assert 0.7 < area.mean() < 0.85 and 0.9 < ratio.mean() < 1.1  # spread, not one size


def test_augment_crops_flips_and_jitters_a_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    pixels = torch.zeros(64, 3, 40, 40, dtype=torch.uint8)
    pixels[:, :, :, 20:] = 200  # right half bright: a flip moves it to the left
    out = DA.augment(pixels, 24, gen)
    assert out.shape == (64, 3, 24, 24) and out.min() >= 0 and out.max() <= 1
    right_brighter = out[:, :, :, 16:].mean(dim=(1, 2, 3)) > out[:, :, :, :8].mean(dim=(1, 2, 3))
    assert 15 < right_brighter.sum() < 49  # about half flipped
    again = DA.augment(pixels, 24, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again)  # the generator decides everything
    # Jitter stays within its factors: a mid-grey image stays near mid-grey.
    grey = DA.jitter(torch.full((32, 3, 4, 4), 0.5), torch.Generator().manual_seed(1))
    assert grey.min() >= 0.5 * 0.9**2 - 1e-3 and grey.max() <= 0.5 * 1.1 + 1e-3
