"""Grad-CAM: the heat lands where the class evidence is, on every catalog backbone, and the
shared model is left as it was found."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn as nn
from PIL import Image

from conftest import TINY_MODEL
from tl_core.backbones import create_backbone, list_backbones
from tl_core.config import TrainConfig
from tl_core.errors import BackboneError
from tl_core.gradcam import (
    example_caption,
    explain,
    grad_cam,
    overlay,
    pick_examples,
    target_layer,
)
from tl_core.inference import LoadedModel

SIZE, CELL = 64, 32
"""2x2 cells of 32 px; the tiny model at output stride 16 sees them as a 4x4 feature map."""
DATA_CONFIG = {
    "input_size": (3, SIZE, SIZE),
    "interpolation": "bilinear",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.25, 0.25, 0.25),
    "crop_pct": 1.0,
    "crop_mode": "center",
}
CLASS_COLORS = {0: (230, 25, 25), 1: (25, 25, 230)}
DISTRACTOR = (25, 205, 25)
"""In every image, whatever its class: as loud as the class patch but says nothing."""


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from a second thread, and on a busy 2-core machine
    OpenMP's spin-waiting made them ~20x slower (2.9 s vs 0.12 s a step, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def patch_image(label: int, rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int]]:
    """Grey noise, the class's colour in one cell and the distractor in another; returns the
    image and the class patch's cell (row, col)."""
    arr = rng.integers(100, 156, (SIZE, SIZE, 3)).astype(np.uint8)
    cells = rng.permutation(4)[:2]
    (r, c), (dr, dc) = divmod(int(cells[0]), 2), divmod(int(cells[1]), 2)
    arr[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = CLASS_COLORS[label]
    arr[dr * CELL : (dr + 1) * CELL, dc * CELL : (dc + 1) * CELL] = DISTRACTOR
    return Image.fromarray(arr), (r, c)


def as_batch(images: list[Image.Image]) -> torch.Tensor:
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in images])
    return (x - 0.5) / 0.25


@pytest.fixture(scope="module")
def patch_model() -> LoadedModel:
    """The tiny timm model trained (~2 s) to tell a red patch from a blue one anywhere in the
    image, with a green patch that never matters."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    model = timm.create_model(TINY_MODEL, pretrained=False, num_classes=2, output_stride=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        labels = rng.integers(0, 2, 16)
        x = as_batch([patch_image(int(y), rng)[0] for y in labels])
        loss = nn.functional.cross_entropy(model(x), torch.from_numpy(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    model.eval()
    return LoadedModel(model, ["red", "blue"], DATA_CONFIG, TrainConfig())


def test_heatmap_peaks_on_the_patch_that_carries_the_class(patch_model: LoadedModel):
    rng = np.random.default_rng(1)
    hits, n = 0, 12
    for i in range(n):
        label = i % 2
        img, (r, c) = patch_image(label, rng)
        with torch.no_grad():
            assert int(patch_model.model(as_batch([img])).argmax()) == label  # it did learn
        cam = explain(patch_model, img, target=label)
        peak_r, peak_c = np.unravel_index(int(cam.heatmap.argmax()), cam.heatmap.shape)
        hits += (peak_r // CELL, peak_c // CELL) == (r, c)
    assert hits >= n - 1, f"the heat peaked on the class patch in only {hits} of {n} images"


def test_explain_shows_the_image_as_the_model_saw_it(patch_model: LoadedModel, tmp_path):
    img, _ = patch_image(0, np.random.default_rng(2))
    img.save(tmp_path / "one.png")
    cam = explain(patch_model, tmp_path / "one.png", target=0)
    assert cam.image.shape == (SIZE, SIZE, 3) and cam.image.dtype == np.uint8
    assert np.abs(cam.image.astype(int) - np.asarray(img).astype(int)).max() <= 1
    assert cam.heatmap.shape == (SIZE, SIZE) and cam.heatmap.dtype == np.float32
    assert cam.heatmap.min() >= 0 and cam.heatmap.max() == pytest.approx(1.0) and not cam.flat


@pytest.mark.parametrize("name", [s.name for s in list_backbones()] + [TINY_MODEL])
def test_every_backbone_has_a_target_layer_and_a_heatmap(name: str):
    model, info = create_backbone(name, 3, "none", 64, catalog_only=name != TINY_MODEL)
    layer_name, layer = target_layer(model)
    assert layer is model.get_submodule(model.feature_info[-1]["module"]) and layer_name
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        predicted = int(model.eval()(x).argmax())
    heat = grad_cam(model, x, predicted)
    assert heat.shape == (64, 64)
    assert np.isfinite(heat).all() and heat.min() >= 0
    # Not all zeros: for class-token ViTs this holds only because the last block's input is
    # explained (its output's patch tokens never reach the head).
    assert heat.max() == pytest.approx(1.0) and heat.std() > 0
    assert not layer._forward_hooks and not layer._forward_pre_hooks  # the model is left as found


def test_a_model_without_feature_stages_gets_a_clear_error():
    with pytest.raises(BackboneError, match="feature stages"):
        target_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))


def test_other_threads_use_the_model_undisturbed_while_it_is_explained(patch_model: LoadedModel):
    """The app shares one loaded model between sessions: a prediction in another thread,
    during an explanation, must run as usual and not feed the explanation."""
    model = patch_model.model
    x = as_batch([patch_image(1, np.random.default_rng(3))[0]])
    with torch.no_grad():
        expected = model(x)
    _, layer = target_layer(model)
    seen: list[torch.Tensor] = []
    started, release = threading.Event(), threading.Event()

    def slow_hook(module, args, output):  # holds the explanation inside its forward pass
        if threading.current_thread() is threading.main_thread():
            started.set()
            release.wait(10)

    def other_thread():
        started.wait(10)
        with torch.no_grad():
            seen.append(model(x))
        release.set()

    handle = layer.register_forward_hook(slow_hook)
    worker = threading.Thread(target=other_thread)
    worker.start()
    try:
        heat = grad_cam(model, x, 1)
    finally:
        handle.remove()
        worker.join(10)
    assert seen and torch.allclose(seen[0], expected)
    assert heat.max() == pytest.approx(1.0)


def test_overlay_blends_the_heat_over_the_image():
    image = np.full((8, 8, 3), 200, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[:4] = 1.0
    out = overlay(image, heat)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    hot, cold = out[0, 0].astype(int), out[7, 7].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # red where the evidence is, blue where none


def test_pick_examples_and_captions():
    preds = pd.DataFrame(
        {
            "path": ["a", "b", "c", "d", "e"],
            "true": ["3", "3", "8", "8", "3"],
            "predicted": ["3", "8", "8", "3", "3"],
            "confidence": [0.6, 0.93, 0.99, 0.4, 0.8],
        }
    )
    preds["correct"] = preds["true"] == preds["predicted"]
    right, wrong = pick_examples(preds, 2)
    assert list(right["path"]) == ["c", "e"] and list(wrong["path"]) == ["b", "d"]
    easy = pd.DataFrame(
        {
            "path": ["x", "y", "z"],
            "true": ["3", "3", "8"],
            "predicted": ["3", "3", "8"],
            "confidence": [0.99, 0.98, 0.5],
        }
    ).assign(correct=True)
    right, _ = pick_examples(easy, 2)
    assert list(right["path"]) == ["x", "z"]  # each class's most confident before a second 3
    right, wrong = pick_examples(preds, 5, true_class="3")
    assert list(right["path"]) == ["e", "a"] and list(wrong["path"]) == ["b"]
    assert example_caption(wrong.iloc[0]) == "predicted 8 · true 3 · 93%"
