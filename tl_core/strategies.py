"""The strategy registry: one ``StrategySpec`` per strategy, and the phases each one plans.

Everything the studio knows about a strategy lives in its entry: its summary, its default epochs
and LR, whether it can train on cached features, its rung on the wizard's ladder, and the planner
that turns a config into phases (which groups train, for how long, at which LRs). The config
defaults, the wizard and the CLI all read ``STRATEGIES``, so adding a strategy is one entry here.

The training loop only executes phases; all transfer-learning judgement lives here. This module
stays torch-free at import (``freezing`` loads inside the planners): ``config`` reads the
registry, and the app's first paint must not wait for torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig
    from .freezing import LayerGroup


@dataclass
class Phase:
    name: str
    epochs: int
    lrs: dict[str, float]
    """Learning rate per trainable group; groups not listed are frozen."""

    @property
    def trainable(self) -> list[str]:
        return list(self.lrs)


Planner = Callable[["TrainConfig", "list[LayerGroup]"], list[Phase]]


@dataclass(frozen=True)
class StrategySpec:
    name: str
    summary: str
    """One line for menus and ``--help``."""
    epochs: int
    """Default epochs, for a hand-picked config and the wizard alike."""
    lr: float
    """Default head learning rate."""
    planner: Planner
    rung: int
    """Position on the wizard's ladder, from "freeze everything" (0) to "train everything"."""
    ladder: str
    """The rung's short name on the ladder chart."""
    ladder_hint: str
    unfreeze_fraction: float
    """Share of the backbone's groups the wizard unfreezes when it recommends this rung."""
    pretrained: bool = True
    """False: random initialisation, so pretrained weights are refused."""
    frozen_backbone: bool = False
    """The backbone never trains, so with fixed inputs its features can be cached once."""
    takes_unfreeze: bool = False
    """The planner honours an explicit list of groups (``TrainConfig.unfreeze``)."""

    def caches_features(self, cfg: TrainConfig) -> bool:
        """Frozen backbone and fixed inputs (no augmentation, BatchNorm frozen)."""
        return self.frozen_backbone and cfg.augment == "none" and not cfg.train_bn


def _split_epochs(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _lrs(cfg: TrainConfig, groups: list[LayerGroup], names: list[str]) -> dict[str, float]:
    """Discriminative LRs for ``names`` plus the head: lower the nearer a group is to the input."""
    from .freezing import HEAD, group_learning_rates

    assert cfg.lr
    return group_learning_rates(
        groups, [*names, HEAD], cfg.lr, cfg.backbone_lr_scale, cfg.lr_decay, cfg.group_lrs
    )


def _warm_then(cfg: TrainConfig, groups: list[LayerGroup], target: list[str], label: str) -> list[Phase]:
    """Warm up the new head alone, so its random start doesn't disturb pretrained layers."""
    assert cfg.epochs
    warm = min(cfg.warmup_epochs, cfg.epochs - 1) if target else 0
    phases = [Phase("warm up head", warm, _lrs(cfg, groups, []))] if warm > 0 else []
    phases.append(Phase(label, cfg.epochs - warm, _lrs(cfg, groups, target)))
    return phases


def _body(groups: list[LayerGroup]) -> list[str]:
    from .freezing import HEAD

    return [g.name for g in groups if g.name != HEAD]


def _plan_head(cfg: TrainConfig, groups: list[LayerGroup]) -> list[Phase]:
    assert cfg.epochs
    return [Phase("train head", cfg.epochs, _lrs(cfg, groups, []))]


def _plan_top(cfg: TrainConfig, groups: list[LayerGroup]) -> list[Phase]:
    from .freezing import top_groups

    target = cfg.unfreeze if cfg.unfreeze is not None else top_groups(groups, cfg.unfreeze_top)
    return _warm_then(cfg, groups, list(target), f"fine-tune {', '.join(target)}" if target else "train head")


def _plan_all(cfg: TrainConfig, groups: list[LayerGroup]) -> list[Phase]:
    return _warm_then(cfg, groups, _body(groups), "fine-tune all")


def _plan_gradual(cfg: TrainConfig, groups: list[LayerGroup]) -> list[Phase]:
    """ULMFiT-style: head first, then one more group per stage; each new group 10x lower LR."""
    from .freezing import HEAD, top_groups

    assert cfg.epochs and cfg.lr
    n_stages = len(cfg.unfreeze) if cfg.unfreeze else min(3, len(_body(groups)))
    order = top_groups(groups, n_stages)[::-1]  # nearest the head first
    if cfg.unfreeze:
        order = [g.name for g in reversed(groups) if g.name in cfg.unfreeze and g.name != HEAD]
    n_stages = min(n_stages, max(cfg.epochs - 1, 0))
    per_phase = _split_epochs(cfg.epochs, n_stages + 1)
    phases = [Phase("warm up head", per_phase[0], {HEAD: cfg.lr})]
    for i in range(n_stages):
        live = order[: i + 1]
        rates = {HEAD: cfg.lr} | {g: cfg.lr * 10.0 ** -(k + 1) for k, g in enumerate(live)}
        rates |= {g: lr for g, lr in cfg.group_lrs.items() if g in rates}
        phases.append(Phase(f"unfreeze {live[-1]}", per_phase[i + 1], rates))
    return phases


def _plan_scratch(cfg: TrainConfig, groups: list[LayerGroup]) -> list[Phase]:
    assert cfg.epochs and cfg.lr
    return [Phase("train all", cfg.epochs, {g.name: cfg.lr for g in groups})]


# The one place strategies are defined (menus list them in this order). Defaults, measured on digits: the
# cached-feature head is cheap, so it gets more epochs, and a linear head on fixed features
# tolerates a higher LR (3e-3 reached 93.6% where 1e-3 reached 91.6% in the same 30 epochs).
# Fine-tunes cost more per epoch, so fewer.
STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec(
            name="feature-extraction",
            summary="Backbone frozen; only a new head is trained (on cached features).",
            epochs=30,
            lr=3e-3,
            planner=_plan_head,
            rung=0,
            ladder="feature extraction",
            ladder_hint="Freeze the whole backbone; train only a new head.",
            unfreeze_fraction=0.0,
            frozen_backbone=True,
        ),
        StrategySpec(
            name="fine-tune-top",
            summary="Warm up the head, then also train the top layer groups at a lower LR.",
            epochs=8,
            lr=1e-3,
            planner=_plan_top,
            rung=1,
            ladder="top 20%",
            ladder_hint="Also fine-tune the top fifth of the layer groups.",
            unfreeze_fraction=0.2,
            takes_unfreeze=True,
        ),
        StrategySpec(
            name="fine-tune-all",
            summary="Warm up the head, then train every layer with discriminative LRs.",
            epochs=8,
            lr=1e-3,
            planner=_plan_all,
            rung=3,
            ladder="all layers",
            ladder_hint="Fine-tune everything, with lower LRs near the input.",
            unfreeze_fraction=1.0,
        ),
        StrategySpec(
            name="gradual",
            summary="Warm up the head, then unfreeze one more group per stage, each 10x lower LR.",
            epochs=10,
            lr=1e-3,
            planner=_plan_gradual,
            rung=2,
            ladder="top 50%",
            ladder_hint="Unfreeze the top half, one group at a time.",
            unfreeze_fraction=0.5,
            takes_unfreeze=True,
        ),
        StrategySpec(
            name="from-scratch",
            summary="Random initialisation, everything trained: the baseline transfer beats.",
            epochs=30,
            lr=1e-3,
            planner=_plan_scratch,
            rung=4,
            ladder="from scratch",
            ladder_hint="Ignore pretraining; needs lots of data and compute.",
            unfreeze_fraction=1.0,
            pretrained=False,
        ),
    )
}


def list_strategies(filter: str = "") -> list[StrategySpec]:
    """Registered strategies in ladder order, optionally filtered by an fnmatch pattern."""
    specs = sorted(STRATEGIES.values(), key=lambda s: s.rung)
    return [s for s in specs if not filter or fnmatch(s.name, filter)]


def plan_phases(cfg: TrainConfig, groups: list[LayerGroup]) -> list[Phase]:
    """The schedule for ``cfg.strategy`` (``cfg`` must be ``resolved()``)."""
    assert cfg.epochs and cfg.lr
    return STRATEGIES[cfg.strategy].planner(cfg, groups)


def config_from_freeze_map(
    cfg: TrainConfig, trainable: list[str], group_lrs: dict[str, float], groups: list[LayerGroup]
) -> TrainConfig:
    """Turn the UI's freeze map (groups ticked "train", an LR per group) into a config.

    No backbone group ticked means feature extraction; every group ticked keeps a full
    fine-tune; anything else fine-tunes exactly the ticked groups after a head warm-up
    (gradual keeps its one-group-per-stage schedule over them). Training from scratch keeps
    every group training whatever is ticked: random weights can't stay frozen.
    """
    from .freezing import HEAD

    body = _body(groups)
    ticked = [g for g in body if g in trainable]
    spec = STRATEGIES[cfg.strategy]
    if not spec.pretrained:
        return replace(cfg, unfreeze=None, group_lrs={})
    if not ticked:
        head_only = {HEAD: group_lrs[HEAD]} if HEAD in group_lrs else {}
        return replace(cfg, strategy="feature-extraction", unfreeze=None, group_lrs=head_only)
    # Strategies that take a group list keep their own schedule over the ticked groups; a full
    # fine-tune with every group ticked stays one; anything else trains exactly the ticked groups.
    keeps = spec.takes_unfreeze or (len(ticked) == len(body) and not spec.frozen_backbone)
    strategy = cfg.strategy if keeps else "fine-tune-top"
    return replace(cfg, strategy=strategy, unfreeze=ticked, group_lrs=dict(group_lrs))


def default_trainable(cfg: TrainConfig, groups: list[LayerGroup]) -> list[str]:
    """Which groups the main phase of ``cfg`` trains: the freeze map's starting ticks."""
    return plan_phases(cfg.resolved(), groups)[-1].trainable
