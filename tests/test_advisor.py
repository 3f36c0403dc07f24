"""Every cell of the decision framework, then how the rules combine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.advisor import (
    DOMAIN_RULES,
    LADDER,
    LADDER_FRACTION,
    LADDER_STRATEGY,
    SIMILARITY,
    SIZE_RULES,
    TASK_RULES,
    TASKS,
    Recommendation,
    WizardAnswers,
    apply_recommendation,
    guess_similarity,
    recommend,
    recommend_backbone,
    size_rule,
    wizard_defaults,
)
from tl_core.backbones import list_backbones
from tl_core.config import STRATEGIES, TrainConfig
from tl_core.data import DatasetProfile, scan_dataset
from tl_core.samples import SAMPLES, list_samples
from tl_core.strategies import list_strategies


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


# -- the ladder is the strategy registry --------------------------------------------------------
def test_ladder_is_read_from_the_strategy_registry() -> None:
    specs = list_strategies()
    assert [(s.ladder, s.ladder_hint) for s in specs] == LADDER
    assert [s.name for s in specs] == LADDER_STRATEGY
    assert [s.unfreeze_fraction for s in specs] == LADDER_FRACTION


# One set of answers per rung, with a GPU so no CPU cap trims the epochs.
RUNG_ANSWERS = [
    WizardAnswers(images_per_class=120, similarity="very-similar", has_gpu=True),
    WizardAnswers(images_per_class=1000, similarity="moderate", has_gpu=True),
    WizardAnswers(images_per_class=3000, similarity="different", has_gpu=True),
    WizardAnswers(images_per_class=3000, similarity="very-different", has_gpu=True),
    WizardAnswers(images_per_class=20_000, similarity="very-different", has_gpu=True),
]


@pytest.mark.parametrize(("rung", "answers"), list(enumerate(RUNG_ANSWERS)))
def test_recommended_lr_and_epochs_are_the_strategys_defaults(rung: int, answers: WizardAnswers) -> None:
    rec = recommend(answers)
    spec = STRATEGIES[rec.strategy]
    assert rec.rung == spec.rung == rung
    assert (rec.head_lr, rec.epochs, rec.unfreeze_fraction) == (spec.lr, spec.epochs, spec.unfreeze_fraction)
    cfg = apply_recommendation(rec, TrainConfig(), [f"stage {i}" for i in range(1, 9)]).resolved()
    assert cfg.strategy == spec.name and (cfg.weights == "none") == (not spec.pretrained)
    assert (cfg.unfreeze is not None) == spec.takes_unfreeze


def test_training_from_scratch_explains_itself_without_pretrained_advice() -> None:
    why = " ".join(recommend(RUNG_ANSWERS[4]).why)
    assert "random weights" in why
    assert "warmed up" not in why and "Pretrained layers" not in why


def test_cpu_trims_epochs_to_the_time_budget() -> None:
    rec = recommend(WizardAnswers(images_per_class=300, similarity="different", time_budget_min=6))
    assert rec.strategy == "fine-tune-top" and rec.epochs == 3


# -- where the wizard starts ----------------------------------------------------------------------
def profile(
    source: str, layout: str, n_classes: int = 10, per_class: int = 180, **facts: float
) -> DatasetProfile:
    classes = [str(i) for i in range(n_classes)]
    train, val = per_class * 4 // 5, per_class - per_class * 4 // 5
    return DatasetProfile(
        source=source,
        root=f"/data/{source}",
        layout=layout,
        classes=classes,
        counts={"train": dict.fromkeys(classes, train), "val": dict.fromkeys(classes, val)},
        **facts,
    )


@pytest.mark.parametrize("sample", list_samples(), ids=lambda s: s.name)
def test_every_sample_carries_valid_answers_with_a_reason(sample) -> None:
    assert sample.similarity in SIMILARITY and sample.task in TASKS
    assert len(sample.answers_why) > 80
    d = wizard_defaults(profile(sample.name, "sample", n_classes=sample.n_classes))
    assert (d.similarity, d.task, d.guessed, d.n_classes) == (
        sample.similarity,
        sample.task,
        False,
        sample.n_classes,
    )
    assert d.note == sample.answers_why


def test_digits_are_not_taught_as_everyday_photos() -> None:
    """The workshop's first dataset: the wizard must not explain digits as ImageNet-like photos."""
    d = wizard_defaults(profile("digits", "sample", per_class=180))
    assert d.similarity in ("different", "very-different") and d.task == "standard"
    assert "not photos" in d.note
    rec = recommend(WizardAnswers(d.images_per_class, d.n_classes, d.similarity, d.task, has_gpu=False))
    why = " ".join(rec.why)
    assert rec.strategy == "fine-tune-top"  # the domain pulls deeper; ~180 per class caps it
    assert "Everyday photos are what the backbone learned from" not in why
    assert "unlike everyday photos" in why and "Capped at the top 20%" in why and "overfit" in why


def test_a_folder_named_like_a_sample_is_not_the_sample() -> None:
    d = wizard_defaults(profile("digits", "folders", grey_fraction=0.0, small_fraction=0.0))
    assert d.guessed and d.similarity == "very-similar"


@pytest.mark.parametrize(
    ("grey", "small", "answer", "because"),
    [
        (1.0, 1.0, "different", "tiny"),
        (0.9, 0.0, "moderate", "grey-scale"),
        (0.0, 0.85, "moderate", "tiny"),
        (0.5, 0.5, "very-similar", "colour"),
        (0.0, 0.0, "very-similar", "only a starting point"),
        (None, None, "very-similar", "only a starting point"),
    ],
)
def test_guessed_similarity_follows_what_the_scan_saw(grey, small, answer: str, because: str) -> None:
    got, reason = guess_similarity(grey, small)
    assert got == answer and because in reason


def test_an_uploads_answers_are_labelled_guesses() -> None:
    d = wizard_defaults(
        profile("cats.zip", "folders", n_classes=2, per_class=50, grey_fraction=1.0, small_fraction=0.0)
    )
    assert d.guessed and (d.similarity, d.task, d.images_per_class, d.n_classes) == (
        "moderate",
        "standard",
        50,
        2,
    )
    assert d.note.startswith("I guessed") and "change it if that's wrong" in d.note
    assert "**Specialised photos**" in d.note


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_a_scan_of_tiny_grey_scans_guesses_not_everyday_photos(tmp_path: Path) -> None:
    """Grey images stored as RGB (as the digits sample is) and as JPEG still count as grey."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(4):
            grey = rng.integers(0, 255, (12, 12), dtype=np.uint8)
            _write(tmp_path / "scans" / label / f"{i}.png", np.stack([grey] * 3, axis=-1))
            _write(tmp_path / "scans" / label / f"{i}.jpg", np.stack([grey] * 3, axis=-1))
    d = wizard_defaults(scan_dataset(tmp_path / "scans").profile)
    assert d.similarity == "different" and d.guessed


def test_a_scan_of_colour_photo_sized_images_guesses_everyday_photos(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(3):
            _write(
                tmp_path / "photos" / label / f"{i}.jpg", rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
            )
    p = scan_dataset(tmp_path / "photos").profile
    assert (p.grey_fraction, p.small_fraction) == (0.0, 0.0)
    assert wizard_defaults(p).similarity == "very-similar"


def test_the_digits_sample_scans_as_tiny_and_grey() -> None:
    p = scan_dataset("digits").profile
    assert p.grey_fraction == 1.0 and p.small_fraction == 1.0
    assert SAMPLES["digits"].similarity == guess_similarity(p.grey_fraction, p.small_fraction)[0]


def test_tiny_images_are_not_augmented_when_fine_tuning() -> None:
    """Crops and flips destroy 8-pixel digits (strong augmentation cost 15 points on the sample)."""
    photos = recommend(WizardAnswers(images_per_class=180, n_classes=10, similarity="different"))
    tiny = recommend(
        WizardAnswers(images_per_class=180, n_classes=10, similarity="different", tiny_images=True)
    )
    assert photos.strategy == tiny.strategy == "fine-tune-top"
    assert photos.augment == "strong" and tiny.augment == "none"
    assert any("tiny" in w and "mirrored" in w for w in tiny.why)


def test_the_digits_sample_is_known_to_be_tiny(studio_home: Path) -> None:
    defaults = wizard_defaults(scan_dataset("digits").profile)
    assert defaults.tiny_images and not defaults.guessed and defaults.similarity == "different"
