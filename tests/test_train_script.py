"""The exported train.py is the engine's recipe in plain torch + timm: run as a separate
process on the same files, it reproduces the run epoch by epoch and keeps the same epoch."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import timm
import torch

from conftest import TINY_MODEL, tiny_config
from tl_core.best_epoch import best_record
from tl_core.export import training_script
from tl_core.runner import JobSpec, run_job
from tl_core.runs import Run, RunStore

EPOCH_LINE = re.compile(r"^epoch (\d+) \[(.+)\] val loss ([\d.]+) acc ([\d.]+)$", re.M)


def _run_engine(**overrides: object) -> Run:
    cfg = tiny_config(**overrides).resolved()
    run = RunStore().create(cfg.to_dict())
    events: list[dict] = []
    run_job(JobSpec("job", cfg.to_dict(), str(run.dir), "cpu"), events.append, threading.Event())
    assert events[-1]["fields"]["status"] == "completed", events[-1]
    return run


def _run_script(run: Run, data: Path, tmp_path: Path) -> tuple[list[tuple[int, str, float, float]], str]:
    tmp_path.mkdir()
    script = tmp_path / "train.py"
    script.write_text(training_script(run))
    out = subprocess.run(
        [sys.executable, str(script), str(data), "--out", str(tmp_path / "re.safetensors")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    epochs = [(int(e), p, float(loss), float(acc)) for e, p, loss, acc in EPOCH_LINE.findall(out.stdout)]
    return epochs, out.stdout


@pytest.fixture
def pretrained_file(tmp_path: Path) -> Path:
    """Stand-in pretrained weights: the tiny model at another seed, with a 1000-class head."""
    torch.manual_seed(123)
    path = tmp_path / "pretrained.pt"
    torch.save(timm.create_model(TINY_MODEL, num_classes=1000).state_dict(), path)
    return path


@pytest.mark.parametrize(
    "strategy, extra",
    [
        ("fine-tune-top", {"augment": "light", "epochs": 4, "unfreeze_top": 2}),
        ("fine-tune-top", {"epochs": 3, "unfreeze_top": 1}),  # the engine runs the frozen prefix once
        ("feature-extraction", {"epochs": 15, "lr": 0.9}),  # overshoots: early stopping ends it
    ],
)
def test_script_reproduces_the_engine_epoch_by_epoch(
    studio_home: Path, color_folders: Path, pretrained_file: Path, tmp_path: Path, strategy: str, extra: dict
) -> None:
    run = _run_engine(
        data=color_folders, strategy=strategy, weights=f"file:{pretrained_file}", patience=2, **extra
    )
    history = run.metrics()
    epochs, stdout = _run_script(run, color_folders, tmp_path / "script")
    assert [(e, p) for e, p, _, _ in epochs] == [(h["epoch"], h["phase"]) for h in history]
    for (_, _, loss, acc), h in zip(epochs, history, strict=True):
        assert acc == pytest.approx(h["val_acc"], abs=1e-4)
        assert loss == pytest.approx(h["val_loss"], abs=1e-3)
    from safetensors import safe_open

    with safe_open(str(run.weights_path), "pt") as saved:
        kept = int(saved.metadata()["best_epoch"])
    assert kept == best_record(history)["epoch"]
    assert f"kept epoch {kept}:" in stdout
    if strategy == "feature-extraction":
        assert len(history) < 15  # early stopping ended both at the same epoch
