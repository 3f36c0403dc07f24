"""``TrainConfig`` takes its defaults from the strategy registry, and stays cheap to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tl_core.config import STRATEGIES, TrainConfig

# Experiments and saved runs depend on these defaults: changing one is a decision, not a refactor.
DEFAULTS = {
    "feature-extraction": (30, 3e-3),
    "fine-tune-top": (8, 1e-3),
    "fine-tune-all": (8, 1e-3),
    "gradual": (10, 1e-3),
    "from-scratch": (30, 1e-3),
}


def test_strategy_defaults_are_pinned() -> None:
    assert list(STRATEGIES) == list(DEFAULTS)
    for name, (epochs, lr) in DEFAULTS.items():
        cfg = TrainConfig(strategy=name).resolved()
        assert (cfg.epochs, cfg.lr) == (epochs, lr), name


def test_explicit_values_win_over_strategy_defaults() -> None:
    cfg = TrainConfig(strategy="gradual", epochs=3, lr=5e-4).resolved()
    assert (cfg.epochs, cfg.lr) == (3, 5e-4)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_spec_is_the_configs_registry_entry(name: str) -> None:
    assert TrainConfig(strategy=name).spec is STRATEGIES[name]


def test_unknown_strategy_lists_the_choices() -> None:
    from tl_core.errors import ConfigError

    with pytest.raises(ConfigError, match="fine-tune-top"):
        _ = TrainConfig(strategy="yolo").spec


def test_importing_the_config_does_not_load_torch() -> None:
    """The UI imports the config on every page; the registry must not pull torch in with it."""
    code = "import sys, tl_core.config, tl_core.advisor; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
