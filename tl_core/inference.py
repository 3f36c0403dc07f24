"""Reload a finished run's model and classify new images with the run's own preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

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


def load_run_model(run: Run | str | Path) -> LoadedModel:
    """Rebuild the architecture (random init, no download) and load ``best.safetensors``."""
    import timm

    run = run if isinstance(run, Run) else Run(run)
    cfg_dict = run.read_json("config.json")
    labels = run.read_json("labels.json")
    data_config = run.read_json("data_config.json")
    if not cfg_dict or not labels or not data_config:
        raise TLError(f"{run.dir} is not a finished run (config, labels or data config missing).")
    cfg = TrainConfig.from_dict(cfg_dict)
    kwargs = (run.read_json("backbone.json") or {}).get("model_kwargs", cfg.model_kwargs)
    model = timm.create_model(cfg.backbone, pretrained=False, num_classes=len(labels), **kwargs)
    model.load_state_dict(run.load_weights())
    model.eval()
    data_config["input_size"] = tuple(data_config["input_size"])
    return LoadedModel(model, list(labels), data_config, cfg)


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
