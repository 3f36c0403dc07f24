from __future__ import annotations

from dataclasses import replace

import pytest
import timm

from tl_core.config import STRATEGIES, TrainConfig
from tl_core.errors import ConfigError
from tl_core.freezing import HEAD, layer_groups
from tl_core.strategies import (
    StrategySpec,
    config_from_freeze_map,
    default_trainable,
    list_strategies,
    plan_phases,
)

GROUPS = layer_groups(timm.create_model("test_resnet", num_classes=3))  # stem, stage 1-4, head
BODY = [g.name for g in GROUPS if g.name != HEAD]


def plan(**kw):
    return plan_phases(TrainConfig(**kw).resolved(), GROUPS)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_phases_use_exactly_the_requested_epochs(strategy: str, epochs: int) -> None:
    phases = plan(strategy=strategy, epochs=epochs)
    assert sum(p.epochs for p in phases) == epochs
    assert all(p.epochs >= 1 for p in phases)
    assert all(HEAD in p.trainable for p in phases)


def test_feature_extraction_trains_only_the_head() -> None:
    (phase,) = plan(strategy="feature-extraction")
    assert phase.lrs == {HEAD: 3e-3}


def test_fine_tune_top_warms_up_the_head_first() -> None:
    warm, main = plan(strategy="fine-tune-top", epochs=6, lr=1e-3, unfreeze_top=2)
    assert warm.trainable == [HEAD] and warm.epochs == 1
    assert set(main.trainable) == {HEAD, "stage 4", "stage 3"} and main.epochs == 5
    assert main.lrs["stage 4"] == pytest.approx(1e-4)
    assert main.lrs["stage 3"] < main.lrs["stage 4"]


def test_explicit_unfreeze_list_wins() -> None:
    _, main = plan(strategy="fine-tune-top", epochs=4, unfreeze=["stage 1"])
    assert set(main.trainable) == {HEAD, "stage 1"}


def test_fine_tune_all_unfreezes_everything() -> None:
    _, main = plan(strategy="fine-tune-all", epochs=4)
    assert set(main.trainable) == {g.name for g in GROUPS}
    assert main.lrs["stem"] < main.lrs["stage 4"] < main.lrs[HEAD]


def test_gradual_unfreezes_one_group_per_stage_each_ten_times_lower() -> None:
    phases = plan(strategy="gradual", epochs=8, lr=1e-3)
    assert [p.trainable for p in phases][:2] == [[HEAD], [HEAD, "stage 4"]]
    last = phases[-1]
    assert last.lrs == pytest.approx({HEAD: 1e-3, "stage 4": 1e-4, "stage 3": 1e-5, "stage 2": 1e-6})


def test_from_scratch_forces_random_weights_and_rejects_pretrained() -> None:
    assert TrainConfig(strategy="from-scratch").resolved().weights == "none"
    with pytest.raises(ConfigError, match="random weights"):
        TrainConfig(strategy="from-scratch", weights="bundled").resolved()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("strategy", "yolo", "Unknown strategy"),
        ("lr", 5.0, "learning rate"),
        ("augment", "max", "augment"),
        ("epochs", -1, "epochs"),
        ("batch_size", 0, "batch size"),
        ("image_size", 8, "image size"),
    ],
)
def test_bad_settings_are_clear_errors(field: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value}).resolved()


def test_config_round_trips_through_json() -> None:
    import json

    cfg = TrainConfig(strategy="gradual", group_lrs={"stage 4": 1e-5}, unfreeze=["stage 4"])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# -- the registry ---------------------------------------------------------------------------------
def test_registry_lists_every_strategy_once_in_ladder_order() -> None:
    specs = list_strategies()
    assert sorted(s.name for s in specs) == sorted(STRATEGIES)
    assert [s.rung for s in specs] == list(range(len(specs)))  # one rung each, no gaps
    assert [s.unfreeze_fraction for s in specs] == sorted(s.unfreeze_fraction for s in specs)
    assert [s.name for s in list_strategies("fine-tune-*")] == ["fine-tune-top", "fine-tune-all"]


@pytest.mark.parametrize("spec", list_strategies(), ids=lambda s: s.name)
def test_each_strategy_is_complete(spec: StrategySpec) -> None:
    assert spec.summary.endswith(".") and spec.ladder and spec.ladder_hint
    assert spec.epochs >= 1 and 0 < spec.lr < 1
    resolved = TrainConfig(strategy=spec.name).resolved()
    assert (resolved.epochs, resolved.lr) == (spec.epochs, spec.lr)
    assert resolved.weights == ("auto" if spec.pretrained else "none")
    phases = plan_phases(resolved, GROUPS)
    trained = set().union(*(p.trainable for p in phases))
    assert (trained == {HEAD}) == spec.frozen_backbone  # only a frozen backbone trains the head alone
    if not spec.pretrained:
        assert trained == {g.name for g in GROUPS}  # random weights can't stay frozen


@pytest.mark.parametrize("spec", list_strategies(), ids=lambda s: s.name)
def test_feature_cache_only_for_a_frozen_backbone_with_fixed_inputs(spec: StrategySpec) -> None:
    assert TrainConfig(strategy=spec.name).uses_feature_cache == spec.frozen_backbone
    assert not TrainConfig(strategy=spec.name, augment="light").uses_feature_cache
    assert not TrainConfig(strategy=spec.name, train_bn=True).uses_feature_cache
    assert not TrainConfig(strategy="no-such-strategy").uses_feature_cache


@pytest.mark.parametrize("spec", [s for s in list_strategies() if s.takes_unfreeze], ids=lambda s: s.name)
def test_strategies_that_take_a_group_list_train_exactly_those_groups(spec: StrategySpec) -> None:
    phases = plan(strategy=spec.name, epochs=6, unfreeze=["stage 2", "stage 4"])
    assert set().union(*(p.trainable for p in phases)) == {HEAD, "stage 2", "stage 4"}
    assert phases[0].trainable == [HEAD]  # the head is warmed up first


def test_adding_a_strategy_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new entry is accepted by the config, planned and cached by its own rules."""
    probe = replace(
        STRATEGIES["feature-extraction"],
        name="probe",
        epochs=3,
        lr=2e-2,
        planner=lambda cfg, groups: plan_phases(replace(cfg, strategy="feature-extraction"), groups),
    )
    monkeypatch.setitem(STRATEGIES, "probe", probe)
    cfg = TrainConfig(strategy="probe").resolved()
    assert (cfg.epochs, cfg.lr, cfg.uses_feature_cache) == (3, 2e-2, True)
    assert plan_phases(cfg, GROUPS)[0].lrs == {HEAD: 2e-2}


# -- the freeze map ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", list_strategies(), ids=lambda s: s.name)
def test_freeze_map_round_trips_each_strategys_own_ticks(spec: StrategySpec) -> None:
    """Leaving the freeze map as the strategy set it keeps the strategy and what it trains."""
    cfg = TrainConfig(strategy=spec.name)
    ticks = default_trainable(cfg, GROUPS)
    back = config_from_freeze_map(cfg, ticks, {}, GROUPS)
    assert back.strategy == spec.name
    assert set(default_trainable(back, GROUPS)) == set(ticks)


def test_freeze_map_never_freezes_a_from_scratch_model() -> None:
    back = config_from_freeze_map(TrainConfig(strategy="from-scratch"), [HEAD], {HEAD: 1e-2}, GROUPS)
    assert back.strategy == "from-scratch" and back.unfreeze is None
    assert set(default_trainable(back, GROUPS)) == {g.name for g in GROUPS}


def test_freeze_map_picks_the_strategy_that_trains_the_ticks() -> None:
    fe = TrainConfig(strategy="feature-extraction")
    assert config_from_freeze_map(fe, [HEAD, "stage 4"], {}, GROUPS).strategy == "fine-tune-top"
    assert config_from_freeze_map(fe, [HEAD, *BODY], {}, GROUPS).strategy == "fine-tune-top"
    full = TrainConfig(strategy="fine-tune-all")
    assert config_from_freeze_map(full, [HEAD], {}, GROUPS).strategy == "feature-extraction"
