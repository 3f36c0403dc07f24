"""Layer groups, freezing and discriminative learning rates, as small pure-ish functions.

Groups come from timm's ``group_matcher`` (stem, one group per stage, head), so "unfreeze the
top two stages" means the same thing for a ResNet, an EfficientNet and a ViT.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch.nn as nn

from .backbones import classifier_name

HEAD = "head"
STEM = "stem"
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class LayerGroup:
    name: str
    params: list[str]


@dataclass
class GroupReport:
    """One row of the freeze map."""

    name: str
    trainable: int
    total: int

    @property
    def frozen(self) -> bool:
        return self.trainable == 0


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Ordered groups from input to output: ``stem``, ``stage 1`` ... ``stage N``, ``head``.

    Falls back to one group per top-level child for models without ``group_matcher``. Layers
    that timm puts with the head but that are pretrained (EfficientNet's ``conv_head``,
    ConvNeXt's ``head.norm``, a ViT's final norm) join the last stage: "head" means only the
    new classifier this tool creates.
    """
    head_prefix = classifier_name(model) + "."
    names = [n for n, _ in model.named_parameters()]
    raw: list[list[str]]
    neck: list[str] = []
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        matcher = model.group_matcher(coarse=True)
        raw = [list(v) for v in group_parameters(model, matcher).values()]
        neck = _neck_patterns(matcher)
    else:
        by_child: dict[str, list[str]] = {}
        for n in names:
            by_child.setdefault(n.split(".")[0], []).append(n)
        raw = list(by_child.values())
    head = [n for n in names if n.startswith(head_prefix)]
    body: list[list[str]] = []
    is_neck: list[bool] = []
    for g in raw:
        rest = [n for n in g if not n.startswith(head_prefix)]
        if rest:
            body.append(rest)
            # Pretrained layers timm groups with the classifier, or pins after every block.
            is_neck.append(len(rest) < len(g) or all(any(re.match(p, n) for p in neck) for n in rest))
    while len(body) >= 3 and is_neck[-1]:
        is_neck.pop()
        tail = body.pop()
        body[-1] = body[-1] + tail
    first, block = getattr(model, "group_labels", (STEM, "stage"))  # a text model: embeddings, layer N
    groups = [LayerGroup(first, body[0])] if body else []
    groups += [LayerGroup(f"{block} {i}", g) for i, g in enumerate(body[1:], start=1)]
    groups.append(LayerGroup(HEAD, head))
    return groups


def group_prefixes(groups: list[LayerGroup]) -> dict[str, list[str]]:
    """Each group as the fewest module names that hold exactly its parameters (``blocks.6``,
    ``conv_head``): the freeze map in words a person can read, and what ``train.py`` matches
    parameter names against (``match_groups``) instead of listing thousands of them."""
    owner = {n: g.name for g in groups for n in g.params}
    under: dict[str, set[str]] = {}
    for name, group in owner.items():
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            under.setdefault(".".join(parts[:i]), set()).add(group)
    out: dict[str, list[str]] = {}
    for g in groups:
        prefixes: list[str] = []
        for name in g.params:
            parts = name.split(".")
            prefix = next(p for i in range(1, len(parts) + 1) if under[p := ".".join(parts[:i])] == {g.name})
            if prefix not in prefixes:
                prefixes.append(prefix)
        out[g.name] = prefixes
    return out


def match_groups(names: Iterable[str], prefixes: dict[str, list[str]]) -> dict[str, str]:
    """Parameter name -> group, by ``group_prefixes`` (the exported ``train.py`` does the same)."""
    return {
        n: g for n in names for g, ps in prefixes.items() if any(n == p or n.startswith(p + ".") for p in ps)
    }


def _neck_patterns(matcher: dict) -> list[str]:
    """Regexes timm pins after every block (ordinal 99999): the layers between blocks and head."""
    blocks = matcher.get("blocks", [])
    if isinstance(blocks, str):
        return []
    return [rx for rx, order in blocks if order is not None and order[0] >= 99999]


def group_names(groups: list[LayerGroup]) -> list[str]:
    return [g.name for g in groups]


def top_groups(groups: list[LayerGroup], n: int) -> list[str]:
    """Names of the ``n`` backbone groups nearest the head (not counting the head)."""
    body = [g.name for g in groups if g.name != HEAD]
    return body[len(body) - n :] if n > 0 else []


def report(model: nn.Module, groups: list[LayerGroup]) -> list[GroupReport]:
    params = dict(model.named_parameters())
    return [
        GroupReport(
            g.name,
            sum(params[n].numel() for n in g.params if params[n].requires_grad),
            sum(params[n].numel() for n in g.params),
        )
        for g in groups
    ]


def set_trainable(
    model: nn.Module, groups: list[LayerGroup], trainable: Iterable[str], train_bn: bool = False
) -> list[GroupReport]:
    """Freeze every group except ``trainable``; return the resulting freeze map.

    With ``train_bn`` (fastai's default) BatchNorm weights in frozen groups stay trainable,
    which lets a frozen backbone adapt its feature statistics to the new domain cheaply.
    """
    wanted = set(trainable)
    unknown = wanted - set(group_names(groups))
    if unknown:
        raise ValueError(f"Unknown layer group(s): {', '.join(sorted(unknown))}")
    bn_params = bn_param_names(model) if train_bn else set()
    params = dict(model.named_parameters())
    for g in groups:
        for n in g.params:
            params[n].requires_grad_(g.name in wanted or n in bn_params)
    return report(model, groups)


def ever_trained(
    model: nn.Module, groups: list[LayerGroup], lrs: Iterable[dict[str, float]], train_bn: bool
) -> set[str]:
    """Every parameter some phase trains (``lrs``: each phase's LR per group), batch norms
    kept trainable by ``train_bn`` included: what is not in it never changes."""
    live = {name for phase_lrs in lrs for name in phase_lrs}
    names = {n for g in groups if g.name in live for n in g.params}
    return names | bn_param_names(model) if train_bn else names


def bn_param_names(model: nn.Module) -> set[str]:
    return {
        f"{mod_name}.{p_name}" if mod_name else p_name
        for mod_name, mod in model.named_modules()
        if isinstance(mod, _BN_TYPES)
        for p_name, _ in mod.named_parameters(recurse=False)
    }


def frozen_bn_modules(
    model: nn.Module, groups: list[LayerGroup], trainable: Iterable[str]
) -> list[nn.Module]:
    """BatchNorm layers inside frozen groups: keep them in eval mode while training.

    Updating running statistics of a frozen layer silently changes its features (the Keras
    guide's advice); ``train_bn`` opts out of this, as fastai does.
    """
    wanted = set(trainable)
    frozen_params = {n for g in groups if g.name not in wanted for n in g.params}
    out = []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, _BN_TYPES):
            own = [f"{mod_name}.{p}" for p, _ in mod.named_parameters(recurse=False)]
            if own and all(n in frozen_params for n in own):
                out.append(mod)
    return out


def group_learning_rates(
    groups: list[LayerGroup],
    trainable: Iterable[str],
    head_lr: float,
    backbone_lr_scale: float = 0.1,
    decay: float = 0.7,
    overrides: dict[str, float] | None = None,
) -> dict[str, float]:
    """Discriminative LRs: head at ``head_lr``; the top trainable backbone group at
    ``head_lr * backbone_lr_scale``; each group further down multiplied by ``decay``.

    Early layers hold generic edges and textures that transfer as they are, so they move least.
    """
    wanted = set(trainable)
    lrs: dict[str, float] = {}
    depth = 0
    for g in reversed(groups):
        if g.name not in wanted:
            continue
        if g.name == HEAD:
            lrs[g.name] = head_lr
        else:
            lrs[g.name] = head_lr * backbone_lr_scale * decay**depth
            depth += 1
    for name, lr in (overrides or {}).items():
        if name in lrs:
            lrs[name] = lr
    return lrs


def optimizer_param_groups(
    model: nn.Module, groups: list[LayerGroup], lrs: dict[str, float], weight_decay: float
) -> list[dict]:
    """AdamW parameter groups: one LR per layer group, no weight decay on biases and norms."""
    params = dict(model.named_parameters())
    out: list[dict] = []
    for g in groups:
        if g.name not in lrs:
            continue
        live = [n for n in g.params if params[n].requires_grad]
        decay = [params[n] for n in live if params[n].ndim > 1]
        no_decay = [params[n] for n in live if params[n].ndim <= 1]
        for plist, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if plist:
                out.append({"params": plist, "lr": lrs[g.name], "weight_decay": wd, "group": g.name})
    # BatchNorm params kept trainable by train_bn live in frozen groups: give them the head LR.
    seen = {id(p) for pg in out for p in pg["params"]}
    extra = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if extra:
        out.append(
            {"params": extra, "lr": lrs.get(HEAD, max(lrs.values())), "weight_decay": 0.0, "group": "bn"}
        )
    return out


def describe_backbone(
    name: str, num_classes: int, **model_kwargs: object
) -> tuple[list[LayerGroup], dict[str, int]]:
    """Layer groups and parameter totals of ``name`` without loading weights (for the UI)."""
    import timm

    from .text_models import is_text_backbone, text_architecture

    if is_text_backbone(name):
        model = text_architecture(name, num_classes)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **model_kwargs)
    groups = layer_groups(model)
    totals = {r.name: r.total for r in report(model, groups)}
    return groups, totals


def freeze_rows(totals: dict[str, int], trainable: Iterable[str]) -> list[GroupReport]:
    """The freeze map for a set of ticked groups, computed from totals alone (no model)."""
    wanted = set(trainable)
    return [GroupReport(name, total if name in wanted else 0, total) for name, total in totals.items()]
