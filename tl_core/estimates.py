"""Rough time-per-epoch estimates for *this* dataset on *this* machine.

One measured number (how fast this device runs EfficientNet-Lite0) calibrates a multiply-
accumulate rate; each backbone's cost then scales with its MACs, the image size and the number
of images. Good to a factor of about two, which is what choosing a backbone needs.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

from .backbones import BACKBONES, BackboneSpec, size_kwargs
from .config import TrainConfig
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
    """Includes computing cached features or frozen-prefix maps, once."""
    later_epoch_s: float


def runs_once(cfg: TrainConfig) -> bool:
    """Whether the engine runs ``frozen_share`` of the network once rather than every epoch
    (``frozen_prefix``): only when nothing is augmented."""
    return cfg.augment == "none" and not cfg.uses_feature_cache


def frozen_share(name: str, image_size: int, cfg: TrainConfig) -> float:
    """The share of a forward pass below the lowest layer ``cfg`` ever trains: no gradient flows
    there, and without augmentation it runs once (``runs_once``). 0 for feature extraction (its
    own path) and for a network that is not a chain of modules."""
    if cfg.uses_feature_cache or not cfg.spec.pretrained:
        return 0.0
    # Only what decides which layers ever train, so editing an LR does not recount every row.
    keys = ("strategy", "unfreeze", "unfreeze_top", "train_bn", "epochs", "warmup_epochs", "model_kwargs")
    plan = {k: getattr(cfg, k) for k in keys} | {"group_lrs": {g: 1e-3 for g in cfg.group_lrs}}
    return _frozen_share(name, image_size, json.dumps(plan, sort_keys=True, default=str))


@functools.lru_cache(maxsize=256)
def _frozen_share(name: str, image_size: int, plan: str) -> float:
    try:
        return _count_frozen_share(name, image_size, TrainConfig(backbone=name, **json.loads(plan)))
    except Exception:  # an estimate must never break the page: assume no shortcut
        return 0.0


def _count_frozen_share(name: str, image_size: int, cfg: TrainConfig) -> float:
    """Counted by torch's FLOP counter on a meta-device model: no weights, no arithmetic."""
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .freezing import ever_trained, layer_groups
    from .frozen_prefix import candidates, split_at
    from .strategies import plan_phases

    kwargs = dict(cfg.model_kwargs) | size_kwargs(BACKBONES.get(name), image_size)
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=2, **kwargs)
    groups = layer_groups(model)
    lrs = (p.lrs for p in plan_phases(cfg.resolved(), groups))
    trainable = ever_trained(model, groups, lrs, cfg.train_bn)
    x = torch.empty(1, 3, image_size, image_size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)  # through __call__, so the counter names modules from the root
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    with torch.no_grad():
        expected, out, chain = model.forward_features(x).shape, x, []
        for child in candidates(model):  # shapes only (meta): a ViT adds position embeddings in between
            out = child[1](out)
            chain.append(child)
            if out.shape == expected:
                break
        else:
            return 0.0
    split = split_at(chain, trainable)
    if split is None or split.start == len(chain) or not flops.get("Global"):
        return 0.0  # nothing frozen at the bottom, stochastic depth, or nothing but the head trains
    below = sum(flops.get(f"{type(model).__name__}.{child}", 0) for child, _ in chain[: split.start])
    return below / flops["Global"]


def estimate_epoch(
    spec: BackboneSpec,
    n_train: int,
    n_val: int,
    image_size: int | None,
    strategy: str,
    cached: bool,
    rate: float,
    frozen: float = 0.0,
    once: bool = False,
) -> EpochEstimate:
    """Seconds per epoch for ``spec``; ``cached`` means feature extraction on the feature cache.
    ``frozen`` is the share of a forward pass below every trained layer (``frozen_share``): no
    backward pass there, and with ``once`` it runs in the first epoch only."""
    size = image_size or spec.input_size
    per_image = spec.gmacs * (size / spec.input_size) ** 2 / rate
    forward_all = per_image * (n_train + n_val)
    if cached:
        return EpochEstimate(first_epoch_s=forward_all, later_epoch_s=0.05)
    if strategy == "feature-extraction":  # frozen backbone every epoch: forward only
        return EpochEstimate(first_epoch_s=forward_all, later_epoch_s=forward_all)
    backward = _TRAIN_COST - 1  # a backward pass costs about two forwards, where it runs
    if once:
        top = per_image * (1 - frozen) * (n_train * _TRAIN_COST + n_val)
        return EpochEstimate(first_epoch_s=forward_all * frozen + top, later_epoch_s=top)
    epoch = per_image * (n_train * (1 + backward * (1 - frozen)) + n_val)
    return EpochEstimate(first_epoch_s=epoch, later_epoch_s=epoch)


ONCE_NOTE = (
    "“≈A s, then ≈B s”: the layers that never train run once, in the first epoch; later epochs "
    "run only the layers that train."
)


def epoch_label(est: EpochEstimate, cached: bool, once: bool) -> str:
    """The Backbone table's "time per epoch" cell (``ONCE_NOTE`` explains the two-part form)."""
    if cached:
        return f"≈{est.first_epoch_s:.0f} s once, then <1 s"
    if once:
        return f"≈{est.first_epoch_s:.0f} s, then ≈{est.later_epoch_s:.0f} s"
    return f"≈{est.later_epoch_s:.0f} s"
