"""Fold batch norm into the convolution before it, for the frozen passes that run once.

In eval mode a batch norm is a fixed per-channel scale and shift, so it can be folded into the
preceding convolution's weights and bias: one op fewer per block. On a 2-core CPU batch norm was
about 30% of a Lite0 forward pass. Only a copy is folded, and only for passes whose weights never
train (cached features, the frozen prefix's maps); the trained model keeps its batch norms.

Folding changes rounding, not the function: outputs agree to ~1e-6 relative. ``folded`` checks
that on a real batch and returns None (use the original) when they do not agree, e.g. when a
batch norm does not directly follow the convolution registered before it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .modes import eval_mode

RTOL, ATOL = 1e-3, 1e-4


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What remains of a batch norm once folded: timm's ``BatchNormAct2d`` keeps its activation."""
    act, drop = getattr(bn, "act", None), getattr(bn, "drop", None)
    rest = [m for m in (drop, act) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*rest) if rest else nn.Identity()


def pairs(module: nn.Module) -> list[tuple[nn.Module, str, nn.Conv2d, nn.BatchNorm2d]]:
    """(parent, batch norm's name, conv, batch norm) for every batch norm registered right after a
    convolution in the same parent: candidates, to be confirmed by ``fed_directly``."""
    out = []
    for parent in module.modules():
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, _FOLDABLE) and bn.running_mean is not None:
                out.append((parent, bn_name, conv, bn))
    return out


def fed_directly(module: nn.Module, sample: torch.Tensor, candidates: list) -> list:
    """The candidates whose batch norm received exactly its convolution's output on ``sample``
    (forward hooks): registration order alone says nothing about the data flow."""
    outputs: dict[int, torch.Tensor] = {}
    confirmed: set[int] = set()

    def conv_hook(i: int):  # noqa: ANN202
        return lambda module, args, out: outputs.__setitem__(i, out)

    def bn_hook(i: int):  # noqa: ANN202
        return lambda module, args: confirmed.add(i) if args and args[0] is outputs.get(i) else None

    hooks = []
    for i, (_, _, conv, bn) in enumerate(candidates):
        hooks += [conv.register_forward_hook(conv_hook(i)), bn.register_forward_pre_hook(bn_hook(i))]
    try:
        with torch.no_grad():
            module(sample)
    finally:
        for h in hooks:
            h.remove()
    return [c for i, c in enumerate(candidates) if i in confirmed]


def fold_in_place(module: nn.Module, sample: torch.Tensor) -> int:
    """Fold every batch norm that directly follows a convolution into it; returns how many were
    folded. ``module`` must be in eval mode and is changed: fold a copy."""
    count = 0
    for parent, bn_name, conv, bn in fed_directly(module, sample, pairs(module)):
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        conv.weight, conv.bias = weight, bias
        setattr(parent, bn_name, _after_norm(bn))
        count += 1
    return count


def _foldable_types() -> tuple[type, ...]:
    types: list[type] = [nn.BatchNorm2d]
    try:
        from timm.layers import BatchNormAct2d

        types.append(BatchNormAct2d)
    except ImportError:  # an older timm: plain batch norms only
        pass
    return tuple(types)


_FOLDABLE = _foldable_types()


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Full-precision float32 convolutions and matmuls. CUDA runs float32 convolutions as TF32 by
    default (10-bit mantissa, ~1e-3 relative): enough to fail the check on a correct fold."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
def folded(module: nn.Module, sample: torch.Tensor) -> nn.Module | None:
    """An eval-mode copy of ``module`` with its batch norms folded, checked against the original
    on ``sample`` in exact float32 (call it outside autocast); None when nothing folds or the outputs
    differ."""
    if not pairs(module):
        return None  # nothing to fold (a ViT): don't copy the model for nothing
    with eval_mode(module):
        copy_ = copy.deepcopy(module).eval()
        for p in copy_.parameters():
            p.requires_grad_(False)
        if fold_in_place(copy_, sample) == 0:
            return None
        with exact_float32():
            expected, got = module(sample), copy_(sample)
    if expected.shape != got.shape or not torch.allclose(got, expected, rtol=RTOL, atol=ATOL):
        return None
    return copy_
