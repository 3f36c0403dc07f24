"""Grad-CAM: where in an image the model found its evidence for a class.

Captum's ``LayerGradCam`` on the backbone's last feature stage, found through timm's
``feature_info``, so every catalog backbone works the same way: CNN stages give a spatial map
directly, and a vision transformer's patch tokens are laid back on their grid first. The heat
is upsampled onto the image exactly as the model saw it (the run's own resize and crop), so it
lines up with what is shown.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from PIL import Image

from .errors import BackboneError
from .evaluation import misclassified
from .modes import eval_mode

COLORMAP = "jet"
"""The Grad-CAM paper's colours (blue: no evidence, red: most), which learners meet in papers."""
ALPHA = 0.45
"""Share of the heat colours in the blend: the image stays readable under the heat."""


@dataclass
class CamResult:
    image: np.ndarray
    """(H, W, 3) uint8: the image as the model saw it (resized, cropped, un-normalised)."""
    heatmap: np.ndarray
    """(H, W) float32 in [0, 1]: the evidence for ``target``, 1 at its strongest."""
    target: int

    @property
    def flat(self) -> bool:
        """Nothing in the image speaks for ``target`` more than elsewhere (the heat is all zero)."""
        return not bool(self.heatmap.max() > 0)


def target_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The last feature stage (timm's ``feature_info``): the most semantic layer that still
    knows where things are."""
    info = getattr(model, "feature_info", None)
    try:
        name = info[-1]["module"]  # type: ignore[index]
        return name, model.get_submodule(name)
    except (TypeError, IndexError, KeyError, AttributeError):
        raise BackboneError(
            f"{type(model).__name__} does not list its feature stages (timm's feature_info), so "
            "Grad-CAM can't find a layer to explain. Use a backbone from the catalog."
        ) from None


def _explains_layer_input(model: nn.Module) -> bool:
    """A ViT that classifies from its class token never sends the last block's patch-token
    outputs to the head, so their gradients are zero: explain that block's input instead,
    whose patch tokens reach the class token through the block's attention."""
    return getattr(model, "global_pool", None) == "token" and getattr(model, "num_prefix_tokens", 0) > 0


class _Probe(nn.Module):
    """An identity that carries the spatial map Captum hooks, made fresh for each call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@contextlib.contextmanager
def _probe(model: nn.Module, image_hw: tuple[int, int]) -> Iterator[_Probe]:
    """Route the target layer's output (or input) through a fresh ``_Probe``, for this thread
    only: the app shares one loaded model between sessions, and another thread's forward pass
    (a "try it" prediction) must neither see nor feed this explanation."""
    _, layer = target_layer(model)
    reduction = int(model.feature_info[-1].get("reduction", 32))  # type: ignore[index]
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    probe, owner = _Probe(), threading.get_ident()

    def route(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # (B, C, h, w)
            return probe(x)
        if x.ndim == 3:  # (B, tokens, C): lay the patch tokens back on their grid
            patches = x[:, prefix:]
            h = max(image_hw[0] // reduction, 1)
            w = patches.shape[1] // h
            if h * w != patches.shape[1]:
                raise BackboneError(
                    f"Can't lay {patches.shape[1]} tokens of {type(model).__name__} on a grid for Grad-CAM."
                )
            grid = patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
            return torch.cat([x[:, :prefix], probe(grid).flatten(2).transpose(1, 2)], dim=1)
        raise BackboneError(f"Grad-CAM can't read a {x.ndim}-D feature map of {type(model).__name__}.")

    if _explains_layer_input(model):

        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            return (route(args[0]), *args[1:]) if threading.get_ident() == owner else None

        handle = layer.register_forward_pre_hook(pre_hook)
    else:

        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            return route(output) if threading.get_ident() == owner else None

        handle = layer.register_forward_hook(hook)
    try:
        yield probe
    finally:
        handle.remove()


def grad_cam(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """The (H, W) heatmap in [0, 1] for one normalised input ``x`` of shape (1, 3, H, W).

    All zeros when nothing in the image speaks for ``target`` (Grad-CAM keeps only positive
    evidence).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    with eval_mode(model), _probe(model, (x.shape[-2], x.shape[-1])) as probe:
        cam = LayerGradCam(model, probe).attribute(x, target=int(target), relu_attributions=True)
    up = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    heat = up[0, 0].clamp(min=0).float().cpu().numpy()
    top = float(heat.max())
    return (heat / top).astype(np.float32) if top > 0 else np.zeros_like(heat, dtype=np.float32)


def model_view(x: torch.Tensor, data_config: dict[str, Any]) -> np.ndarray:
    """The normalised input back as an (H, W, 3) uint8 image: exactly the pixels the model saw."""
    mean = torch.tensor(data_config["mean"], dtype=x.dtype)[:, None, None]
    std = torch.tensor(data_config["std"], dtype=x.dtype)[:, None, None]
    img = (x[0].detach().cpu() * std + mean).clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def explain(loaded: Any, image: Image.Image | str | Path, target: int) -> CamResult:
    """Grad-CAM of a run's model (``inference.LoadedModel``) for ``target`` on one image, with
    the run's own preprocessing."""
    from .images import load_rgb
    from .preprocessing import eval_transform

    img = image if isinstance(image, Image.Image) else load_rgb(image)
    x = eval_transform(loaded.data_config)(img.convert("RGB"))[None]
    heat = grad_cam(loaded.model, x, target)
    return CamResult(image=model_view(x, loaded.data_config), heatmap=heat, target=int(target))


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The heat in ``COLORMAP`` colours blended over the image, as (H, W, 3) uint8."""
    from matplotlib import colormaps  # the colour tables only: no plotting backend loads

    colors = colormaps[COLORMAP](np.clip(heatmap, 0, 1))[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255 + alpha * colors
    return (blended * 255).round().clip(0, 255).astype(np.uint8)


# ---- which images to explain -----------------------------------------------------------------------


def pick_examples(
    preds: pd.DataFrame, n: int, true_class: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(correct, misclassified) validation predictions, ``n`` of each, most confident first:
    sure and right shows what the model relies on; sure and wrong is the most instructive
    mistake (and often a mislabelled image). Across all classes, each class's most confident
    comes before any class's second, so the picks show several classes, not one easy one."""
    rows = preds if true_class is None else preds[preds["true"] == true_class]

    def spread(df: pd.DataFrame) -> pd.DataFrame:
        df = df.sort_values("confidence", ascending=False, kind="stable")
        rank = df.groupby("true", sort=False).cumcount()
        return df.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")

    right = spread(rows[rows["correct"]]).head(n).reset_index(drop=True)
    return right, spread(misclassified(rows)).head(n).reset_index(drop=True)


def example_caption(row: Any) -> str:
    """ "predicted 3 · true 8 · 93%": what the model said, the truth, and how sure it was."""
    return f"predicted {row['predicted']} · true {row['true']} · {row['confidence']:.0%}"
