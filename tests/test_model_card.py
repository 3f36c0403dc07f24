"""The model card says what the run recorded: its data, model, schedule, figures and command;
and ``tl-studio train --config`` turns a run's config.json back into the same run."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_class_folders, tiny_config, train_job
from tl_core.errors import TLError
from tl_core.model_card import model_card
from tl_core.runs import Run, RunStore
from tl_core.ui_text import NO_TEST_SPLIT


def _colors(root: Path) -> Path:
    """Three classes of 12, plus one file the scan must skip."""
    data = make_class_folders(root, {"red": 12, "green": 12, "blue": 12})
    (data / "red" / "broken.jpg").write_bytes(b"nope")
    return data


@pytest.fixture(scope="module")
def tested_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Fine-tune-top with a held-out test split: two phases, val and test figures."""
    root = tmp_path_factory.mktemp("card")
    cfg = tiny_config(
        _colors(root / "colors"), strategy="fine-tune-top", epochs=3, unfreeze_top=1, test_fraction=0.2
    )
    return train_job(cfg.resolved(), root / "runs")


@pytest.fixture(scope="module")
def untested_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("card-no-test")
    return train_job(tiny_config(_colors(root / "colors"), epochs=1).resolved(), root / "runs")


def _copy(run: Run, tmp_path: Path) -> Run:
    """A copy to tamper with; the module's run stays as trained."""
    return Run(shutil.copytree(run.dir, tmp_path / run.id))


def _row(card: str, first: str) -> list[str]:
    """The cells after the first of the first Markdown table row that starts with ``first``."""
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            return cells[1:]
    raise AssertionError(f"no table row for {first!r} in:\n{card}")


def test_the_card_is_written_from_the_run(tested_run: Run) -> None:
    card = model_card(tested_run)
    profile = json.loads(tested_run.dataset_path.read_text())
    status = tested_run.status()
    config = json.loads(tested_run.config_path.read_text())

    assert "'blue', 'green', 'red'" in card
    for cls in ("blue", "green", "red"):  # 12 each: 2 validation, 2 test, the rest trains
        counts = [profile["counts"][s][cls] for s in ("train", "val", "test")]
        assert counts == [8, 2, 2] and _row(card, cls)[:3] == [str(n) for n in counts]
    assert _row(card, "**total**") == ["24", "6", "6"]
    assert "`red/broken.jpg`: not an image Pillow can read" in card

    assert "`test_efficientnet`" in card and "random initialisation" in card
    assert "`fine-tune-top`" in card
    assert _row(card, "warm up head") == ["1", "head 0.001"]
    assert _row(card, "fine-tune stage 5") == ["2", "head 0.001, stage 5 0.0001"]
    best = status["result"]["best_epoch"]
    assert f"weights are those of epoch {best}" in card

    assert f"Validation accuracy: **{status['best_val_acc']:.1%}** on 6 images" in card
    assert f"Test accuracy: **{status['test_acc']:.1%}** on 6 held-out images" in card
    assert NO_TEST_SPLIT not in card

    assert "Trained on 24 images (8 per class)" in card
    assert "not evaluated outside these classes or this data" in card
    assert f"tl-studio train {shlex.quote(config['data'])} --config config.json" in card
    assert "python train.py DATA_DIR" in card


def test_per_class_figures_are_the_runs_predictions(tested_run: Run) -> None:
    card = model_card(tested_run)
    for split, title in (("predictions.json", "validation"), ("test_predictions.json", "test")):
        rows = json.loads((tested_run.dir / split).read_text())
        section = card.split(f"Per class, {title} split:")[1]
        for cls in ("blue", "green", "red"):
            mine = [r for r in rows if r["true"] == cls]
            recall = sum(r["predicted"] == cls for r in mine) / len(mine)
            assert _row(section, cls)[1] == f"{recall:.2f}" and _row(section, cls)[3] == str(len(mine))


def test_figures_and_limitations_follow_what_the_run_recorded(tested_run: Run, tmp_path: Path) -> None:
    run = _copy(tested_run, tmp_path)
    status = json.loads(run.status_path.read_text())
    status["test_acc"] = 0.6667
    run.status_path.write_text(json.dumps(status))
    preds = json.loads((run.dir / "test_predictions.json").read_text())
    for row in preds:  # every blue image called red, the rest right
        row["predicted"] = "red" if row["true"] == "blue" else row["true"]
    (run.dir / "test_predictions.json").write_text(json.dumps(preds))

    card = model_card(run)
    assert "Test accuracy: **66.7%**" in card
    assert "'blue' is missed more often than the rest: recall 0.00 on the test split" in card
    assert "'red' is missed" not in card and "'green' is missed" not in card
    assert "Few training images (under 10): 'blue' (8), 'green' (8), 'red' (8)" in card


def test_without_a_test_split_the_validation_figure_is_called_optimistic(untested_run: Run) -> None:
    card = model_card(untested_run)
    assert NO_TEST_SPLIT in card and "Test accuracy" not in card
    assert "Per class, validation split:" in card and "Per class, test split:" not in card
    assert _row(card, "**total**") == ["30", "6"]  # no test column; the broken file counts nowhere
    assert "Trained on 30 images (10 per class)" in card
    assert _row(card, "train head")[0] == "1"


def test_an_uploads_private_path_stays_off_the_card(
    tested_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    run = _copy(tested_run, tmp_path)
    upload = home / "workspaces" / "k3y-0f-a-workspace" / "uploads" / "0123456789abcdef-colors.zip"
    config = json.loads(run.config_path.read_text()) | {"data": str(upload), "data_label": "colors.zip"}
    run.config_path.write_text(json.dumps(config))
    profile = json.loads(run.dataset_path.read_text()) | {"source": str(upload)}
    run.dataset_path.write_text(json.dumps(profile))
    weights = upload.parent / "fedcba9876543210-mine.safetensors"
    backbone = json.loads((run.dir / "backbone.json").read_text()) | {"weights_detail": f"file:{weights}"}
    (run.dir / "backbone.json").write_text(json.dumps(backbone))

    card = model_card(run)
    assert "k3y-0f-a-workspace" not in card and str(home) not in card
    assert "tl-studio train DATA --config config.json" in card
    assert "DATA is your copy of `colors.zip`" in card and "# colors.zip:" in card
    assert "Starting weights: file:mine.safetensors" in card


def test_a_run_that_never_trained_has_no_card(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create({"backbone": "test_efficientnet"})
    with pytest.raises(TLError, match="no trained model"):
        model_card(run)


# -- tl-studio train --config ------------------------------------------------------------------
def _settings(config: dict) -> dict:
    """What a reproduction must keep: everything but the data's label and the experiment."""
    return {k: v for k, v in config.items() if k not in ("data_label", "group")}


def test_the_cards_command_reproduces_the_run(tested_run: Run, tmp_path: Path) -> None:
    command = next(line for line in model_card(tested_run).splitlines() if line.startswith("tl-studio"))
    args = shlex.split(command)[1:] + ["--json"]
    env = os.environ | {"TL_STUDIO_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(  # from the run folder, where config.json is, as from an export
        [sys.executable, "-m", "tl_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tested_run.dir,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    again = json.loads(Path(summary["run_dir"], "config.json").read_text())
    assert _settings(again) == _settings(json.loads(tested_run.config_path.read_text()))
    assert summary["strategy"] == "fine-tune-top" and summary["epochs_run"] == 3
    assert (
        summary["dataset"]["n_train"] == 24 and summary["dataset"]["skipped"][0]["path"] == "red/broken.jpg"
    )


def _cli_config(*argv: str):
    from tl_core.cli import _build_parser, _train_config

    return _train_config(_build_parser().parse_args(["train", *argv]))


def test_flags_typed_after_config_override_it_and_nothing_else(tested_run: Run, tmp_path: Path) -> None:
    path = str(tested_run.config_path)
    recorded = json.loads(tested_run.config_path.read_text())
    same = _cli_config("--config", path)
    assert _settings(same.to_dict()) == _settings(recorded)

    other = str(tmp_path / "elsewhere")
    cfg = _cli_config(other, "--config", path, "--epochs", "1", "--patience", "0", "--train-bn")
    assert (cfg.data, cfg.epochs, cfg.patience, cfg.train_bn) == (other, 1, None, True)
    untouched = ("strategy", "backbone", "batch_size", "image_size", "unfreeze_top", "test_fraction", "lr")
    assert {k: getattr(cfg, k) for k in untouched} == {k: recorded[k] for k in untouched}
    assert recorded["batch_size"] != 32 and recorded["strategy"] != "feature-extraction"  # not the defaults

    plain = _cli_config("digits")  # no file: the defaults, as before --config existed
    assert (plain.batch_size, plain.strategy, plain.patience, plain.train_bn) == (
        32,
        "feature-extraction",
        5,
        False,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train"], "Give the data to train on"),
        (["train", "--config", "/no/such/config.json"], "Can't read the config file"),
        (["train", "--config", "NOT_JSON"], "is not valid JSON"),
        (["train", "--config", "LIST"], "holds no settings"),
    ],
)
def test_a_bad_config_is_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tl_core.cli import main

    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "list.json").write_text("[1, 2]")
    names = {"NOT_JSON": str(tmp_path / "bad.json"), "LIST": str(tmp_path / "list.json")}
    assert main([names.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tl-studio: error:") and message in err[0]
