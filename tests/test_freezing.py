from __future__ import annotations

import pytest
import timm
import torch.nn as nn

from tl_core.freezing import (
    HEAD,
    STEM,
    frozen_bn_modules,
    group_learning_rates,
    group_prefixes,
    layer_groups,
    match_groups,
    optimizer_param_groups,
    report,
    set_trainable,
    top_groups,
)

MODELS = [
    "test_efficientnet",
    "test_resnet",
    "test_vit",
    "test_convnext",
    "efficientnet_lite0",
    "mobilenetv3_small_100",
]


@pytest.mark.parametrize("name", MODELS)
def test_groups_run_stem_to_head_and_cover_every_parameter_once(name: str) -> None:
    model = timm.create_model(name, num_classes=3)
    groups = layer_groups(model)
    names = [g.name for g in groups]
    assert names[0] == STEM and names[-1] == HEAD and names[1] == "stage 1"
    assert len(groups) >= 4
    listed = [p for g in groups for p in g.params]
    assert sorted(listed) == sorted(n for n, _ in model.named_parameters())
    assert len(listed) == len(set(listed))
    head_module = model.get_classifier()
    assert sum(report(model, groups)[-1].total for _ in [0]) == sum(
        p.numel() for p in head_module.parameters()
    )


@pytest.mark.parametrize("name", MODELS)
def test_groups_read_as_module_names_and_match_back_exactly(name: str) -> None:
    """The exported train.py names groups by module and matches parameters at run time."""
    model = timm.create_model(name, num_classes=3)
    groups = layer_groups(model)
    prefixes = group_prefixes(groups)
    assert match_groups([n for n, _ in model.named_parameters()], prefixes) == {
        n: g.name for g in groups for n in g.params
    }
    assert sum(len(v) for v in prefixes.values()) < len(list(model.parameters())) / 3


def test_efficientnet_groups_by_module() -> None:
    prefixes = group_prefixes(layer_groups(timm.create_model("efficientnet_lite0", num_classes=3)))
    assert prefixes["stem"] == ["conv_stem", "bn1"]
    assert prefixes["stage 7"] == ["blocks.6", "conv_head", "bn2"]  # the pretrained neck
    assert prefixes["head"] == ["classifier"]


def test_pretrained_neck_joins_the_last_stage() -> None:
    groups = layer_groups(timm.create_model("efficientnet_lite0", num_classes=3))
    assert "conv_head.weight" in groups[-2].params
    assert groups[-1].params == ["classifier.weight", "classifier.bias"]


def test_set_trainable_reports_counts() -> None:
    model = timm.create_model("test_resnet", num_classes=3)
    groups = layer_groups(model)
    rows = set_trainable(model, groups, [HEAD, *top_groups(groups, 1)])
    by_name = {r.name: r for r in rows}
    assert by_name[HEAD].trainable == by_name[HEAD].total > 0
    assert by_name["stage 4"].trainable == by_name["stage 4"].total
    assert by_name[STEM].frozen and by_name["stage 1"].frozen
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(r.trainable for r in rows)
    with pytest.raises(ValueError, match="Unknown layer group"):
        set_trainable(model, groups, ["stage 99"])


def test_train_bn_keeps_batchnorm_trainable_in_frozen_groups() -> None:
    model = timm.create_model("test_resnet", num_classes=3)
    groups = layer_groups(model)
    set_trainable(model, groups, [HEAD], train_bn=True)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(p.requires_grad for m in bn for p in m.parameters())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert not any(p.requires_grad for m in convs for p in m.parameters())


def test_frozen_bn_modules_are_those_in_frozen_groups() -> None:
    model = timm.create_model("test_resnet", num_classes=3)
    groups = layer_groups(model)
    all_bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(frozen_bn_modules(model, groups, [HEAD])) == len(all_bn)
    partly = frozen_bn_modules(model, groups, [HEAD, "stage 4"])
    stage4 = {id(m) for m in model.layer4.modules() if isinstance(m, nn.BatchNorm2d)}
    assert stage4 and not stage4 & {id(m) for m in partly}


def test_discriminative_learning_rates_decay_towards_the_stem() -> None:
    groups = layer_groups(timm.create_model("test_resnet", num_classes=3))
    lrs = group_learning_rates(groups, [HEAD, "stage 4", "stage 3", "stage 2"], 1e-3, 0.1, 0.5)
    assert lrs == pytest.approx({HEAD: 1e-3, "stage 4": 1e-4, "stage 3": 5e-5, "stage 2": 2.5e-5})
    assert group_learning_rates(groups, [HEAD], 1e-3, overrides={HEAD: 5e-3}) == {HEAD: 5e-3}


def test_optimizer_groups_skip_decay_on_biases_and_norms() -> None:
    model = timm.create_model("test_resnet", num_classes=3)
    groups = layer_groups(model)
    set_trainable(model, groups, [HEAD, "stage 4"])
    pgs = optimizer_param_groups(model, groups, {HEAD: 1e-3, "stage 4": 1e-4}, weight_decay=0.05)
    assert {pg["group"] for pg in pgs} == {HEAD, "stage 4"}
    for pg in pgs:
        assert pg["weight_decay"] == (0.05 if pg["params"][0].ndim > 1 else 0.0)
    n = sum(p.numel() for pg in pgs for p in pg["params"])
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
