"""``TrainConfig``: every setting of a run, with defaults from the strategy registry.

A plain dataclass that round-trips through JSON, so a run folder's ``config.json`` is enough to
reproduce the run, and the CLI, the UI and notebooks all describe work the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import ConfigError
from .strategies import STRATEGIES, StrategySpec

DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_TEXT_BACKBONE = "all-minilm-l6-v2"
"""Offline, pretrained, fast on a CPU: see ``backbones.BACKBONES``."""

AUGMENT_PRESETS = ("none", "light", "strong")
CLASS_WEIGHTING = ("auto", "balanced", "none")


@dataclass
class TrainConfig:
    data: str = "digits"
    data_label: str = ""
    """The name the user knows the data by ("hymenoptera.zip"), for labels; not a path."""
    group: str = ""
    """Runs started together (an experiment such as "does pretraining help?") share this id."""
    backbone: str = DEFAULT_BACKBONE
    strategy: str = "feature-extraction"
    weights: str = "auto"
    epochs: int | None = None
    image_size: int | None = None
    batch_size: int = 32
    lr: float | None = None
    """Head learning rate; backbone groups get lower ones (see ``backbone_lr_scale``)."""
    backbone_lr_scale: float = 0.1
    lr_decay: float = 0.7
    """Per-group LR multiplier going from the top of the backbone towards the stem."""
    group_lrs: dict[str, float] = field(default_factory=dict)
    unfreeze: list[str] | None = None
    """Explicit layer groups to train in the main phase (the UI's freeze map)."""
    unfreeze_top: int = 2
    warmup_epochs: int = 1
    train_bn: bool = False
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    class_weights: str = "auto"
    augment: str = "none"
    patience: int | None = 5
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    """Share of each class held out as a test split, scored once at the end, when the data has
    no test/ folder (0: none)."""
    text_column: str | None = None
    """Texts in a table: the column holding them (None: guessed, ``text_data.guess_columns``)."""
    label_column: str | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``timm.create_model`` arguments (e.g. ``drop_rate``)."""
    catalog_only: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with strategy defaults filled in and every value checked."""
        spec = self.spec
        out = replace(self, epochs=self.epochs or spec.epochs, lr=self.lr or spec.lr)
        if not spec.pretrained and self.weights not in ("auto", "none"):
            raise ConfigError(f"{spec.name} trains random weights: use --weights none (or auto).")
        if not spec.pretrained:
            out.weights = "none"
        checks = [
            (out.epochs >= 1, f"epochs must be at least 1, got {out.epochs}"),
            (out.batch_size >= 1, f"batch size must be at least 1, got {out.batch_size}"),
            (0 < out.lr < 1, f"learning rate must be between 0 and 1, got {out.lr}"),
            (out.augment in AUGMENT_PRESETS, f"augment must be one of {AUGMENT_PRESETS}"),
            (out.class_weights in CLASS_WEIGHTING, f"class_weights must be one of {CLASS_WEIGHTING}"),
            (0 <= out.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (out.image_size is None or 16 <= out.image_size <= 1024, "image size must be 16-1024 px"),
            (0 < out.val_fraction < 1, "val_fraction must be between 0 and 1"),
            (0 <= out.test_fraction < 0.5, "test_fraction must be at least 0 and under 0.5"),
            (out.patience is None or out.patience >= 1, "patience must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message + ".")
        return out

    def for_modality(self, modality: str) -> TrainConfig:
        """The same settings for ``text`` or ``image`` data: a backbone of that kind (the
        default one when the current is of the other kind); texts are neither resized nor
        augmented."""
        from .text_models import is_text_backbone

        if modality == "text":
            moved = self if is_text_backbone(self.backbone) else self.for_backbone(DEFAULT_TEXT_BACKBONE)
            return replace(moved, image_size=None, augment="none")
        return self.for_backbone(DEFAULT_BACKBONE) if is_text_backbone(self.backbone) else self

    def for_backbone(self, name: str) -> TrainConfig:
        """The same settings on backbone ``name``: a freeze map names the old backbone's layer
        groups, so ``unfreeze`` and the group LRs are dropped (``unfreeze_top`` still applies)."""
        from .text_models import is_text_backbone

        if name == self.backbone:
            return self
        kwargs = self.model_kwargs
        if not is_text_backbone(name):  # pooling is a text encoder's setting: timm refuses it
            kwargs = {k: v for k, v in kwargs.items() if k != "pooling"}
        return replace(self, backbone=name, unfreeze=None, group_lrs={}, model_kwargs=kwargs)

    @property
    def spec(self) -> StrategySpec:
        """This config's entry in the strategy registry."""
        spec = STRATEGIES.get(self.strategy)
        if spec is None:
            raise ConfigError(f"Unknown strategy '{self.strategy}'. Choose one of: {', '.join(STRATEGIES)}.")
        return spec

    @property
    def uses_feature_cache(self) -> bool:
        """Frozen backbone and fixed inputs: features can be computed once and reused."""
        spec = STRATEGIES.get(self.strategy)
        return spec is not None and spec.caches_features(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
