"""Turn a strategy name into phases: which groups train, for how long, at which LRs.

The training loop only executes phases; all transfer-learning judgement lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import TrainConfig
from .freezing import HEAD, LayerGroup, group_learning_rates, top_groups


@dataclass
class Phase:
    name: str
    epochs: int
    lrs: dict[str, float]
    """Learning rate per trainable group; groups not listed are frozen."""

    @property
    def trainable(self) -> list[str]:
        return list(self.lrs)


def _split_epochs(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def plan_phases(cfg: TrainConfig, groups: list[LayerGroup]) -> list[Phase]:
    """The schedule for ``cfg.strategy`` (``cfg`` must be ``resolved()``)."""
    assert cfg.epochs and cfg.lr
    body = [g.name for g in groups if g.name != HEAD]

    def lrs(names: list[str]) -> dict[str, float]:
        return group_learning_rates(
            groups, [*names, HEAD], cfg.lr, cfg.backbone_lr_scale, cfg.lr_decay, cfg.group_lrs
        )

    if cfg.strategy == "feature-extraction":
        return [Phase("train head", cfg.epochs, lrs([]))]
    if cfg.strategy == "from-scratch":
        return [Phase("train all", cfg.epochs, {g.name: cfg.lr for g in groups})]

    if cfg.strategy == "fine-tune-top":
        target = cfg.unfreeze if cfg.unfreeze is not None else top_groups(groups, cfg.unfreeze_top)
        label = f"fine-tune {', '.join(target)}" if target else "train head"
    elif cfg.strategy == "fine-tune-all":
        target, label = body, "fine-tune all"
    else:  # gradual
        n = len(cfg.unfreeze) if cfg.unfreeze else min(3, len(body))
        return _gradual(cfg, groups, n)

    warm = min(cfg.warmup_epochs, cfg.epochs - 1) if target else 0
    phases = [Phase("warm up head", warm, lrs([]))] if warm > 0 else []
    phases.append(Phase(label, cfg.epochs - warm, lrs(list(target))))
    return phases


def _gradual(cfg: TrainConfig, groups: list[LayerGroup], n_stages: int) -> list[Phase]:
    """ULMFiT-style: head first, then one more group per stage; each new group 10x lower LR."""
    assert cfg.epochs and cfg.lr
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


def config_from_freeze_map(
    cfg: TrainConfig, trainable: list[str], group_lrs: dict[str, float], groups: list[LayerGroup]
) -> TrainConfig:
    """Turn the UI's freeze map (groups ticked "train", an LR per group) into a config.

    No backbone group ticked means feature extraction; every group ticked keeps a full
    fine-tune; anything else fine-tunes exactly the ticked groups after a head warm-up
    (gradual keeps its one-group-per-stage schedule over them).
    """
    from dataclasses import replace

    body = [g.name for g in groups if g.name != HEAD]
    ticked = [g for g in body if g in trainable]
    if not ticked:
        strategy = "feature-extraction" if cfg.strategy != "from-scratch" else cfg.strategy
        return replace(
            cfg,
            strategy=strategy,
            unfreeze=None,
            group_lrs={HEAD: group_lrs[HEAD]} if HEAD in group_lrs else {},
        )
    if cfg.strategy == "from-scratch":
        return replace(cfg, unfreeze=None, group_lrs={})
    if len(ticked) == len(body) and cfg.strategy == "fine-tune-all":
        strategy = "fine-tune-all"
    elif cfg.strategy == "gradual":
        strategy = "gradual"
    else:
        strategy = "fine-tune-top"
    return replace(cfg, strategy=strategy, unfreeze=ticked, group_lrs=dict(group_lrs))


def default_trainable(cfg: TrainConfig, groups: list[LayerGroup]) -> list[str]:
    """Which groups the main phase of ``cfg`` trains: the freeze map's starting ticks."""
    return plan_phases(cfg.resolved(), groups)[-1].trainable
