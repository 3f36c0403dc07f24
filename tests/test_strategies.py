from __future__ import annotations

import pytest
import timm

from tl_core.config import STRATEGIES, TrainConfig
from tl_core.errors import ConfigError
from tl_core.freezing import HEAD, layer_groups
from tl_core.strategies import plan_phases

GROUPS = layer_groups(timm.create_model("test_resnet", num_classes=3))  # stem, stage 1-4, head


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
