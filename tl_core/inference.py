"""Reload a finished run's model and classify new images with the run's own preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .backbones import BackboneInfo
from .config import TrainConfig
from .errors import TLError
from .images import load_rgb
from .preprocessing import eval_transform
from .runs import Run


@dataclass
class LoadedModel:
    model: nn.Module
    labels: list[str]
    data_config: dict
    config: TrainConfig
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """The extra ``timm.create_model`` arguments the architecture was built with."""
    text_batches: Any = None
    """Text models: the run's tokenizing collate (``text_models.TextBatches``), loaded once."""


def rebuild_model(run: Run, weights: bool = True, **timm_kwargs: Any) -> nn.Module:
    """The run's architecture, in eval mode: random init (never a download), then the kept
    epoch's weights unless ``weights=False`` (the layer groups need only the architecture).

    The one place a finished run becomes a model again: prediction, every export, the
    training script and the model card build it here.
    """
    return _build(run, run.config(), run.labels(), run.backbone(), weights, timm_kwargs)


def _build(
    run: Run,
    cfg: TrainConfig,
    labels: list[str],
    info: BackboneInfo | None,
    weights: bool,
    timm_kwargs: dict[str, Any],
) -> nn.Module:
    import timm

    from .text_models import is_text_backbone, rebuild_text_model

    if not cfg.backbone or not labels or info is None:
        raise TLError(f"{run.dir} is not a finished run (config, labels or backbone missing).")
    if is_text_backbone(cfg.backbone):
        model: nn.Module = rebuild_text_model(cfg.backbone, info.data_config, len(labels))
    else:
        model = timm.create_model(
            cfg.backbone, pretrained=False, num_classes=len(labels), **info.model_kwargs, **timm_kwargs
        )
    if weights:
        model.load_state_dict(run.load_weights())
    return model.eval()


def load_run_model(run: Run | str | Path, **timm_kwargs: Any) -> LoadedModel:
    """A finished run's model with what predicting needs: labels and preprocessing
    (``timm_kwargs`` go to ``timm.create_model``, e.g. a ``pretrained_cfg_overlay``)."""
    run = run if isinstance(run, Run) else Run(run)
    data_config = run.data_config()
    if not data_config:
        raise TLError(f"{run.dir} is not a finished run (its preprocessing is missing).")
    cfg, labels, info = run.config(), run.labels(), run.backbone()
    from .text_models import TextBatches, is_text, load_tokenizer

    model = _build(run, cfg, labels, info, True, timm_kwargs)
    loaded = LoadedModel(model, labels, data_config, cfg, info.model_kwargs if info else {})
    if is_text(data_config):
        loaded.text_batches = TextBatches(load_tokenizer(data_config), int(data_config["max_length"]))
    return loaded


def ranked(labels: list[str], logits: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The ``k`` most likely (label, probability) pairs of one image's logits, whatever ran them."""
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return [(labels[i], float(probs[i])) for i in np.argsort(-probs)[: min(k, len(labels))]]


@torch.no_grad()
def predict(loaded: LoadedModel, image: Image.Image | str | Path, top_k: int = 3) -> list[tuple[str, float]]:
    """Top-``k`` (label, probability) pairs for one image."""
    img = image if isinstance(image, Image.Image) else load_rgb(image)
    x = eval_transform(loaded.data_config)(img.convert("RGB"))[None]
    return ranked(loaded.labels, loaded.model(x)[0].float().numpy(), top_k)


@torch.no_grad()
def predict_text(loaded: LoadedModel, text: str, top_k: int = 3) -> list[tuple[str, float]]:
    """Top-``k`` (label, probability) pairs for one text, tokenized as the run was."""
    return ranked(loaded.labels, loaded.model(loaded.text_batches.encode([text]))[0].float().numpy(), top_k)
