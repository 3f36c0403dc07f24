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


def _assert_script_repeats(run: Run, data: Path, tmp_path: Path) -> None:
    """The script on ``data`` gives every epoch's validation loss and accuracy as the engine did,
    and keeps the same epoch."""
    history = run.metrics()
    epochs, stdout = _run_script(run, data, tmp_path)
    assert [(e, p) for e, p, _, _ in epochs] == [(h["epoch"], h["phase"]) for h in history]
    for (_, _, loss, acc), h in zip(epochs, history, strict=True):
        assert acc == pytest.approx(h["val_acc"], abs=1e-4)
        assert loss == pytest.approx(h["val_loss"], abs=1e-3)
    assert f"kept epoch {best_record(history)['epoch']}:" in stdout


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
    _assert_script_repeats(run, color_folders, tmp_path / "script")
    from safetensors import safe_open

    with safe_open(str(run.weights_path), "pt") as saved:
        assert int(saved.metadata()["best_epoch"]) == best_record(run.metrics())["epoch"]
    if strategy == "feature-extraction":
        assert len(run.metrics()) < 15  # early stopping ended both at the same epoch


def _write_txt_folders(root: Path, rows: list[tuple[str, str]]) -> Path:
    """One .txt file per text in class folders; one in cp1252, as a Windows editor saves it."""
    for i, (text, label) in enumerate(rows):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i:03d}.txt").write_bytes((text + "\n").encode("utf-8"))
    (root / rows[0][1] / "cafe.txt").write_bytes("Café résumé and the album chart.".encode("cp1252"))
    return root


@pytest.mark.parametrize(
    "layout, strategy, extra",
    [
        ("csv", "fine-tune-top", {"epochs": 3, "unfreeze_top": 1}),
        ("txt", "feature-extraction", {"epochs": 8, "lr": 0.05}),
    ],
)
def test_text_script_reproduces_the_engine_epoch_by_epoch(
    studio_home: Path, tmp_path: Path, layout: str, strategy: str, extra: dict
) -> None:
    """The real MiniLM (the bundled package), a CSV or class folders of .txt files: the script
    finds each text by its key in the user's data, and repeats the run's epochs."""
    from test_text import sentences, write_csv

    rows = sentences(8)
    if layout == "csv":
        data = write_csv(tmp_path / "reviews.csv", rows)
    else:
        data = _write_txt_folders(tmp_path / "texts", rows)
    run = _run_engine(
        data=data, backbone="all-minilm-l6-v2", weights="auto", catalog_only=True, image_size=None,
        batch_size=8, strategy=strategy, patience=2, **extra,
    )  # fmt: skip
    script = training_script(run)
    assert not any(text in script for text, _ in rows)  # keys only: none of the user's texts
    _assert_script_repeats(run, data, tmp_path / "script")


def test_text_script_says_what_it_cannot_find(studio_home: Path, tmp_path: Path) -> None:
    from test_text import sentences, write_csv

    from tl_core.text_models import TEXT_BACKBONES, bundled_folder

    data = write_csv(tmp_path / "reviews.csv", sentences(4))
    run = _run_engine(data=data, backbone="test_bert", image_size=None, epochs=1, batch_size=8)
    (tmp_path / "train.py").write_text(training_script(run))
    edited = write_csv(tmp_path / "edited.csv", sentences(4, seed=1))

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "train.py", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    # test_bert is no published encoder: the script asks for a folder before reading any data.
    out = script(str(data))
    assert out.returncode != 0 and "pass --weights FOLDER" in out.stderr
    out = script(str(edited), "--weights", str(bundled_folder(TEXT_BACKBONES["all-minilm-l6-v2"])))
    assert out.returncode != 0
    assert f"of the run's 12 texts are not in {edited}" in out.stderr and repr(str(data)) in out.stderr


def _write_layout(root: Path, layout: str, rows: list[tuple[str, str]]) -> Path:
    """The same texts as each kind of source a user may hand the studio."""
    import csv
    import json
    import zipfile

    from test_text import write_csv

    root.mkdir()
    if layout == "jsonl":
        path = root / "reviews.jsonl"
        path.write_text(
            "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8"
        )
        return path
    if layout == "tsv":
        with (root / "reviews.tsv").open("w", newline="", encoding="utf-16") as f:  # Excel's "Unicode text"
            csv.writer(f, delimiter="\t").writerows([("label", "text"), *((y, t) for t, y in rows)])
        return root / "reviews.tsv"
    if layout == "csv in a folder":
        (root / "data").mkdir()
        return write_csv(root / "data" / "reviews.csv", rows).parent.parent
    with zipfile.ZipFile(root / "texts.zip", "w") as zf:
        if layout == "zip of a csv":
            zf.write(write_csv(root / "reviews.csv", rows), "export/reviews.csv")
        else:  # class folders of .txt files, and the junk macOS adds to a zip
            for i, (text, label) in enumerate(rows):
                zf.writestr(f"texts/{label}/{i}.txt", text)
                zf.writestr(f"__MACOSX/texts/{label}/._{i}.txt", b"\x00\x05\x16\x07 not a text")
    return root / "texts.zip"


@pytest.mark.parametrize("layout", ["jsonl", "tsv", "csv in a folder", "zip of a csv", "zip of txt folders"])
def test_the_text_script_finds_the_runs_texts_in_every_layout(
    studio_home: Path, tmp_path: Path, layout: str
) -> None:
    """No training: the script's own read_data, on each source the studio scans, gives back
    exactly the run's split (texts, labels, order)."""
    import importlib.util

    from test_text import sentences

    from tl_core.backbones import create_backbone
    from tl_core.config import TrainConfig
    from tl_core.data import scan_dataset

    rows = [*sentences(4), ('Ünïcode “quotes”, a comma; a tab\there and a "quote"', "money")]
    data = _write_layout(tmp_path / "data", layout, rows)
    dataset = scan_dataset(data, seed=0)
    cfg = TrainConfig(data=str(data), backbone="test_bert", weights="none").resolved()
    _, info = create_backbone("test_bert", len(dataset.classes), "none")
    run = RunStore().create(cfg.to_dict())
    run.record_setup(cfg, dataset.profile, dataset.items, info)
    script = tmp_path / "train.py"
    script.write_text(training_script(run))
    spec = importlib.util.spec_from_file_location("exported_train", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines; main() runs only as a script
    assert module.read_data(str(data)) == {split: list(items) for split, items in dataset.items.items()}
    assert str(data if layout != "csv in a folder" else dataset.profile.root) == module.DATA_USED
