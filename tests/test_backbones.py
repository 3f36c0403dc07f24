from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import TINY_MODEL
from tl_core.backbones import (
    BACKBONES,
    available_sources,
    create_backbone,
    get_spec,
    list_backbones,
    load_weights,
    resolve_weights,
)
from tl_core.errors import BackboneError, WeightsUnavailable
from tl_core.preprocessing import eval_transform

ImageNetCats = {281, 282, 283, 284, 285}


def test_catalog_covers_the_families() -> None:
    specs = list_backbones()
    assert len(specs) >= 8
    families = {s.family for s in specs}
    assert {"ResNet", "EfficientNet", "EfficientNet-Lite", "MobileNetV3", "ConvNeXt", "ViT"} <= families
    assert {"convnext_tiny", "vit_small_patch16_224", "resnet18", "mobilenetv3_large_100"} <= set(BACKBONES)
    assert [s.name for s in list_backbones("efficientnet_lite*")] == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
    ]


@pytest.mark.parametrize("spec", list_backbones(), ids=lambda s: s.name)
def test_catalog_facts_match_timm(spec) -> None:
    """Parameter counts and input sizes are checked against timm itself, not trusted."""
    from torch.utils.flop_counter import FlopCounterMode

    model = timm.create_model(spec.name, pretrained=False).eval()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, spec.input_size, spec.input_size))
    assert counter.get_total_flops() / 2e9 == pytest.approx(spec.gmacs, rel=0.2)
    assert params_m == pytest.approx(spec.params_m, rel=0.03)
    assert model.pretrained_cfg["input_size"][-1] == spec.input_size
    assert 60 < spec.top1 < 90 and spec.best_for
    if spec.hub_tag:
        assert timm.models.get_pretrained_cfg(spec.hub_name).hf_hub_id


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(BackboneError, match="Unknown backbone 'resnet9000'.*tl-studio backbones"):
        get_spec("resnet9000")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_bundled_weights_are_really_pretrained(name: str) -> None:
    """The positional map is right only if a photo of a cat comes out as a cat."""
    from PIL import Image
    from skimage import data

    assert resolve_weights(get_spec(name), "auto") == "bundled"
    model, info = create_backbone(name, num_classes=1000, weights="bundled")
    # The new-head init replaced the ImageNet classifier; restore it from the package file.
    from tl_core.backbones import bundled_weights_path, read_state_dict

    load_weights(model, read_state_dict(bundled_weights_path(get_spec(name))), "bundled")
    model.eval()
    assert info.data_config["input_size"] == (3, get_spec(name).input_size, get_spec(name).input_size)
    x = eval_transform(info.data_config)(Image.fromarray(data.chelsea()))[None]
    with torch.no_grad():
        top3 = model(x).topk(3).indices[0].tolist()
    assert set(top3) <= ImageNetCats


def test_bundled_backbone_gets_a_fresh_head() -> None:
    model, info = create_backbone("efficientnet_lite0", num_classes=4)
    assert info.weights == "bundled" and info.num_classes == 4
    assert model.get_classifier().out_features == 4
    assert model.get_classifier().weight.abs().max() < 0.05  # near-zero init: uniform first guesses


def test_hub_offline_and_uncached_names_prefetch() -> None:
    spec = get_spec("resnet18")
    assert available_sources(spec) == {"bundled": False, "hub": False, "none": True}
    with pytest.raises(WeightsUnavailable, match="tl-studio prefetch resnet18"):
        create_backbone("resnet18", num_classes=2, weights="auto")


def test_weights_none_is_random() -> None:
    model, info = create_backbone("resnet18", num_classes=3, weights="none")
    assert info.weights == "none" and model.get_classifier().out_features == 3


def test_file_weights_safetensors_and_state_dict(tmp_path: Path) -> None:
    src = timm.create_model(TINY_MODEL, num_classes=5)
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    torch.save({"state_dict": src.state_dict()}, tmp_path / "w.pth")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pth"):
        model, info = create_backbone(TINY_MODEL, num_classes=2, weights=f"file:{path}", catalog_only=False)
        assert info.weights == "file"
        assert torch.equal(model.conv_stem.weight, src.conv_stem.weight)
        assert model.get_classifier().out_features == 2  # 5-class head dropped, new one made


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_file_weights_refuse_pickled_objects(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled code ran",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"weight": Payload()}))
    with pytest.raises(WeightsUnavailable, match="Refused.*unpickling arbitrary objects"):
        create_backbone(
            TINY_MODEL, num_classes=2, weights=f"file:{tmp_path / 'evil.pth'}", catalog_only=False
        )


def test_file_weights_for_another_architecture(tmp_path: Path) -> None:
    save_file(timm.create_model("test_resnet").state_dict(), tmp_path / "other.safetensors")
    with pytest.raises(WeightsUnavailable, match="different architecture"):
        create_backbone(
            TINY_MODEL, num_classes=2, weights=f"file:{tmp_path / 'other.safetensors'}", catalog_only=False
        )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="not found"):
        create_backbone(
            TINY_MODEL, num_classes=2, weights=f"file:{tmp_path / 'no.safetensors'}", catalog_only=False
        )


def test_data_config_comes_from_the_model_and_size_overrides() -> None:
    _, info = create_backbone("vit_small_patch16_224", num_classes=2, weights="none")
    assert info.data_config["mean"] == (0.5, 0.5, 0.5)  # ViT augreg's own normalisation
    model, info = create_backbone("vit_small_patch16_224", num_classes=2, weights="none", image_size=128)
    assert info.data_config["input_size"] == (3, 128, 128)
    assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 2)
