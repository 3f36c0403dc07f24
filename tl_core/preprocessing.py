"""Transforms built by timm from the model's own data config, plus augmentation presets.

The data config (size, mean/std, interpolation, crop) is saved with every run so evaluation,
export and prediction reuse exactly what training used.
"""

from __future__ import annotations

from typing import Any

from torchvision.transforms import Compose

AUGMENT_KWARGS: dict[str, dict[str, Any]] = {
    "light": {"scale": (0.6, 1.0), "hflip": 0.5, "color_jitter": 0.1, "auto_augment": None, "re_prob": 0.0},
    "strong": {
        "scale": (0.25, 1.0),
        "hflip": 0.5,
        "color_jitter": 0.3,
        # mmax9: with inc1 a magnitude of 10 posterizes to 0 bits, which Pillow 13 refuses
        # ("bits must be between 1 and 8"), failing every job that drew it.
        "auto_augment": "rand-m9-mstd0.5-inc1-mmax9",
        "re_prob": 0.25,
    },
}


TIMM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
"""The data config's entries that ``create_transform`` takes."""


def _timm_cfg(data_config: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data_config.items() if k in TIMM_KEYS}


def eval_transform(data_config: dict[str, Any], uint8: bool = False) -> Compose:
    """Resize, centre-crop, normalise: what validation, export and prediction use.

    ``uint8``: stop at a uint8 tensor and leave ``ToTensor`` + ``Normalize`` to the device
    (timm's ``use_prefetcher``): data workers then send a quarter of the bytes.
    """
    from timm.data import create_transform

    return create_transform(**_timm_cfg(data_config), is_training=False, use_prefetcher=uint8)


def train_transform(data_config: dict[str, Any], augment: str = "none", uint8: bool = False) -> Compose:
    """``none`` is the eval transform (and lets features be cached); else a timm preset.
    ``uint8`` as for ``eval_transform``; not for presets with random erasing (see
    ``sends_uint8``)."""
    if augment == "none":
        return eval_transform(data_config, uint8)
    from timm.data import create_transform

    cfg = _timm_cfg(data_config)
    cfg.pop("crop_pct", None)
    cfg.pop("crop_mode", None)
    return create_transform(**cfg, is_training=True, use_prefetcher=uint8, **AUGMENT_KWARGS[augment])


def sends_uint8(augment: str) -> bool:
    """Whether a preset can end at uint8 pixels: timm leaves random erasing out of a
    ``use_prefetcher`` transform (its prefetcher erases on the device), so presets with it don't."""
    return not AUGMENT_KWARGS.get(augment, {}).get("re_prob")
