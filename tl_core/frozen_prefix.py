"""Run a fine-tune's frozen bottom once, not every epoch.

When no layer below some point trains in any phase and the images are never augmented, that
part of the network computes the same feature maps for every image in every epoch. ``find``
locates the point, the trainer runs the prefix once per image and keeps its output maps, and
``Suffix`` trains the rest of the network on them. Nothing is approximated: the same layers see
the same inputs, in the same batches (tests compare the trained weights with the full path).
It is the fine-tuning analogue of the cached pooled features of feature extraction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

from .modes import eval_mode

MAX_MAP_BYTES = 2 * 1024**3
"""Maps bigger than this (all images together) are not kept: the full path runs instead."""


@dataclass
class Split:
    """``chain[:start]`` is the frozen prefix, run once; ``chain[start:]`` and the head train."""

    chain: list[tuple[str, nn.Module]]
    start: int

    @property
    def prefix(self) -> list[nn.Module]:
        return [m for _, m in self.chain[: self.start]]

    @property
    def boundary(self) -> str:
        """The first module that trains, for messages."""
        return self.chain[self.start][0] if self.start < len(self.chain) else "the head"


def candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level modules in order, with ``Sequential`` containers (blocks, stages) opened up."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            out += [(f"{name}.{n}", m) for n, m in child.named_children()]
        else:
            out.append((name, child))
    return out


@torch.no_grad()
def feature_chain(model: nn.Module, sample: torch.Tensor) -> list[tuple[str, nn.Module]] | None:
    """``forward_features`` as a plain chain of modules, checked on ``sample``; None when it is
    not one (a ViT adds position embeddings between its modules)."""
    try:
        with eval_mode(model):
            return _chain(model, sample)
    except (RuntimeError, TypeError, ValueError):  # a module that can't take the previous output
        return None


def _chain(model: nn.Module, sample: torch.Tensor) -> list[tuple[str, nn.Module]] | None:
    expected = model.forward_features(sample)
    x, chain = sample, []
    for name, module in candidates(model):
        x = module(x)
        chain.append((name, module))
        if x.shape == expected.shape and torch.allclose(x, expected, rtol=1e-4, atol=1e-5):
            return chain
    return None


def deterministic(modules: Iterable[nn.Module]) -> bool:
    """No dropout or stochastic depth: a frozen layer in train mode then gives fixed outputs."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
                return False
            if float(getattr(m, "drop_prob", 0.0) or 0.0) > 0:  # timm's DropPath
                return False
    return True


def find(model: nn.Module, trainable: set[str], sample: torch.Tensor) -> Split | None:
    """Where the always-frozen prefix ends, or None when running it once would not help (nothing
    frozen at the bottom, a non-chain architecture, or a stochastic frozen layer).

    Args:
        trainable: every parameter name that trains in any phase.
    """
    chain = feature_chain(model, sample)
    return split_at(chain, trainable) if chain is not None else None


def split_at(chain: list[tuple[str, nn.Module]], trainable: set[str]) -> Split | None:
    """``chain`` split below its first module with a ``trainable`` parameter; None when that is
    the first module or a layer below it is stochastic."""
    start = next(
        (
            i
            for i, (name, module) in enumerate(chain)
            if any(f"{name}.{p}" in trainable for p, _ in module.named_parameters())
        ),
        len(chain),
    )
    if start == 0 or not deterministic(m for _, m in chain[:start]):
        return None
    return Split(chain, start)


class Suffix(nn.Module):
    """The part of the network that trains, fed with the prefix's cached maps."""

    def __init__(self, model: nn.Module, split: Split):
        super().__init__()
        self.model = model
        self.rest = [m for _, m in split.chain[split.start :]]

    def forward_features(self, maps: torch.Tensor) -> torch.Tensor:
        for module in self.rest:
            maps = module(maps)
        return maps

    def pooled(self, maps: torch.Tensor) -> torch.Tensor:
        """What the classifier sees (pre-logits), as ``forward_head(..., pre_logits=True)``."""
        return self.model.forward_head(self.forward_features(maps), pre_logits=True)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.forward_features(maps))
