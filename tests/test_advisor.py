"""Every cell of the decision framework, then how the rules combine."""

from __future__ import annotations

import pytest

from tl_core.advisor import (
    DOMAIN_RULES,
    LADDER,
    SIZE_RULES,
    TASK_RULES,
    Recommendation,
    WizardAnswers,
    apply_recommendation,
    recommend,
    recommend_backbone,
    size_rule,
)
from tl_core.backbones import list_backbones
from tl_core.config import TrainConfig


@pytest.mark.parametrize(
    ("images", "rung"),
    [(1, 0), (499, 0), (500, 1), (1999, 1), (2000, 2), (9999, 2), (10_000, 3), (1_000_000, 3)],
)
def test_size_rules(images: int, rung: int) -> None:
    assert size_rule(images).rung == rung
    assert size_rule(images).why


def test_size_rule_reasons_name_their_range() -> None:
    assert "overfitting" in SIZE_RULES[0][1].why
    assert "all" in SIZE_RULES[-1][1].why


@pytest.mark.parametrize(
    ("similarity", "rung"), [("very-similar", 0), ("moderate", 1), ("different", 2), ("very-different", 3)]
)
def test_domain_rules(similarity: str, rung: int) -> None:
    assert DOMAIN_RULES[similarity].rung == rung
    # With plenty of data and a GPU, the domain alone decides (standard task).
    rec = recommend(WizardAnswers(images_per_class=3000, similarity=similarity, has_gpu=True))
    assert rec.rung == max(2, rung)


@pytest.mark.parametrize(("task", "shift"), [("simple", -1), ("standard", 0), ("fine-grained", 1)])
def test_task_rules(task: str, shift: int) -> None:
    assert TASK_RULES[task].rung == shift
    rec = recommend(WizardAnswers(images_per_class=1000, similarity="moderate", task=task, has_gpu=True))
    assert rec.rung == 1 + shift


def test_small_data_is_feature_extraction_for_photos() -> None:
    rec = recommend(WizardAnswers(images_per_class=120, similarity="very-similar"))
    assert (rec.strategy, rec.unfreeze_fraction, rec.head_lr, rec.augment) == (
        "feature-extraction",
        0.0,
        3e-3,
        "none",
    )
    assert any("overfitting" in w for w in rec.why)


def test_small_data_caps_deep_fine_tuning_even_for_far_domains() -> None:
    rec = recommend(WizardAnswers(images_per_class=300, similarity="very-different", has_gpu=True))
    assert rec.rung == 1 and rec.strategy == "fine-tune-top"
    assert any("Capped" in w for w in rec.why)
    assert rec.augment == "strong"  # small data that is fine-tuned: augment


def test_cpu_caps_large_fine_tunes() -> None:
    gpu = recommend(WizardAnswers(images_per_class=5000, n_classes=4, similarity="different", has_gpu=True))
    cpu = recommend(WizardAnswers(images_per_class=5000, n_classes=4, similarity="different", has_gpu=False))
    assert gpu.rung == 2 and cpu.rung == 1
    assert any("No GPU" in w for w in cpu.why)


def test_from_scratch_only_with_lots_of_non_photo_data_and_a_gpu() -> None:
    rec = recommend(WizardAnswers(images_per_class=20_000, similarity="very-different", has_gpu=True))
    assert rec.strategy == "from-scratch"
    rec = recommend(
        WizardAnswers(images_per_class=20_000, similarity="very-different", has_gpu=False, n_classes=2)
    )
    assert rec.strategy != "from-scratch"


def test_learning_rates_follow_the_framework() -> None:
    rec = recommend(WizardAnswers(images_per_class=1000, similarity="moderate", has_gpu=True))
    assert (rec.head_lr, rec.top_lr, rec.deep_lr) == (1e-3, 1e-4, 1e-5)
    assert any("warmed up" in w for w in rec.why) and any("Early stopping" in w for w in rec.why)


def test_ladder_has_five_rungs_in_order() -> None:
    assert [name for name, _ in LADDER] == [
        "feature extraction",
        "top 20%",
        "top 50%",
        "all layers",
        "from scratch",
    ]


def test_apply_recommendation_sets_groups_and_decay() -> None:
    body = [f"stage {i}" for i in range(1, 11)]
    rec = Recommendation(
        rung=2,
        strategy="gradual",
        unfreeze_fraction=0.5,
        head_lr=1e-3,
        top_lr=1e-4,
        deep_lr=1e-5,
        epochs=12,
        augment="light",
        batch_size=64,
    )
    cfg = apply_recommendation(rec, TrainConfig(), body)
    assert cfg.unfreeze == body[5:] and cfg.strategy == "gradual"
    assert cfg.lr * cfg.backbone_lr_scale == pytest.approx(1e-4)
    assert 1e-4 * cfg.lr_decay**4 == pytest.approx(1e-5)
    assert (cfg.epochs, cfg.augment, cfg.batch_size) == (12, "light", 64)


def test_backbone_recommendation_prefers_offline_and_cheap_on_cpu() -> None:
    specs = list_backbones()
    ready = {s.name: s.name.startswith("efficientnet_lite") for s in specs}
    name, why = recommend_backbone(specs, ready, has_gpu=False)
    assert name == "efficientnet_lite0" and "CPU" in why
    name, _ = recommend_backbone(specs, ready, has_gpu=True)
    assert name == "efficientnet_lite2"
    name, _ = recommend_backbone(specs, {s.name: True for s in specs}, has_gpu=True)
    assert name == "convnext_tiny"


def test_unknown_answers_are_rejected() -> None:
    with pytest.raises(ValueError):
        recommend(WizardAnswers(images_per_class=10, similarity="alien"))
