"""The held-out test split: scored once, with the kept weights, after training; never seen
while the epoch is chosen."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import tiny_config
from tl_core.evaluation import load_predictions
from tl_core.runner import JobSpec, run_job
from tl_core.runs import RunStore


def _train(data: Path, **kw) -> tuple[dict, object]:
    cfg = tiny_config(data, **kw).resolved()
    run = RunStore().create(cfg.to_dict())
    events: list[dict] = []
    run_job(JobSpec("job", cfg.to_dict(), str(run.dir), "cpu"), events.append, threading.Event())
    return events[-1]["fields"], run


def test_the_test_split_is_scored_once_after_training(
    studio_home: Path, split_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tl_core import training

    used: list[str] = []
    loader = training.Trainer.loader

    def spy(self, split: str, training: bool):  # type: ignore[no-untyped-def]
        used.append(split)
        return loader(self, split, training)

    monkeypatch.setattr(training.Trainer, "loader", spy)
    done, run = _train(split_folders, strategy="fine-tune-all", epochs=3, patience=None)
    assert done["status"] == "completed", done
    assert used.count("test") == 1 and used[-1] == "test"  # after every epoch and the val scoring
    preds = load_predictions(run, "test")
    test_files = sorted(str(p) for p in (split_folders / "test").rglob("*.*"))
    assert sorted(preds["path"]) == test_files
    status = run.status()
    assert status["test_acc"] == pytest.approx(preds["correct"].mean())
    assert done["result"]["test_acc"] == status["test_acc"]


def test_without_a_test_split_there_is_no_test_score(studio_home: Path, color_folders: Path) -> None:
    done, run = _train(color_folders, epochs=1)
    assert done["status"] == "completed"
    assert load_predictions(run, "test") is None and run.status()["test_acc"] is None


def test_a_held_out_test_fraction_leaves_the_validation_split_alone(
    studio_home: Path, color_folders: Path
) -> None:
    from tl_core.data import scan_dataset

    plain = scan_dataset(color_folders, seed=3)
    held = scan_dataset(color_folders, seed=3, test_fraction=0.2)
    assert held.items["val"] == plain.items["val"]
    assert (
        held.profile.counts["test"] == {"blue": 2, "green": 2, "red": 2} and held.profile.test_fraction == 0.2
    )
    train, test = {p for p, _ in held.items["train"]}, {p for p, _ in held.items["test"]}
    assert not train & test and train | test == {p for p, _ in plain.items["train"]}
    assert scan_dataset(color_folders, seed=3, test_fraction=0.2).items == held.items  # seeded


def test_a_test_folder_wins_over_a_test_fraction(studio_home: Path, split_folders: Path) -> None:
    from tl_core.data import scan_dataset

    ds = scan_dataset(split_folders, test_fraction=0.2)
    assert ds.profile.test_fraction is None and len(ds.items["test"]) == 4


def test_a_job_with_a_test_fraction_scores_it(studio_home: Path, color_folders: Path) -> None:
    done, run = _train(color_folders, epochs=1, test_fraction=0.2)
    assert done["status"] == "completed"
    assert len(load_predictions(run, "test")) == 6 and run.status()["test_acc"] is not None


def test_a_test_fraction_out_of_range_is_refused() -> None:
    from tl_core.errors import ConfigError

    with pytest.raises(ConfigError, match="test_fraction"):
        tiny_config(Path("x"), test_fraction=0.6).resolved()
