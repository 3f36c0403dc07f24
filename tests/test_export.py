from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import tiny_config
from tl_core.errors import TLError
from tl_core.export import bundle_bytes, training_plan, training_script, write_bundle
from tl_core.jobs import JobManager
from tl_core.runs import Run, RunStore


@pytest.fixture
def finished_run(tmp_path: Path, color_folders: Path) -> Run:
    manager = JobManager(tmp_path / "runs")
    cfg = tiny_config(color_folders, batch_size=8, strategy="fine-tune-top", epochs=3, unfreeze_top=1)
    snap = manager.wait(manager.submit(cfg), timeout=60)
    assert snap.status == "completed", snap.error
    return Run(snap.run_dir)


def test_bundle_holds_weights_labels_preprocessing_and_scripts(finished_run: Run, tmp_path: Path) -> None:
    path = write_bundle(finished_run, tmp_path / "bundle.zip")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "bundle")
    assert {
        "model.safetensors",
        "labels.json",
        "preprocessing.json",
        "config.json",
        "predict.py",
        "train.py",
    } <= names
    image = next(Path(json.loads((finished_run.dir / "dataset.json").read_text())["root"]).rglob("*.png"))
    out = subprocess.run(
        [sys.executable, "predict.py", str(image)],
        cwd=tmp_path / "bundle",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert any(c in out.stdout for c in ("red", "green", "blue")) and "%" in out.stdout


def test_standalone_script_reproduces_the_plan(
    finished_run: Run, tmp_path: Path, color_folders: Path
) -> None:
    plan = training_plan(finished_run)
    assert [p["name"] for p in plan["phases"]] == ["warm up head", "fine-tune stage 5"]
    assert sum(p["epochs"] for p in plan["phases"]) == 3
    assert len(plan["split"]["train"]) + len(plan["split"]["val"]) == 36
    with zipfile.ZipFile(__import__("io").BytesIO(bundle_bytes(finished_run))) as zf:
        script = zf.read("train.py").decode()
    assert "import tl_core" not in script and "from tl_core" not in script
    # Readable: the plan names modules, as the freeze map does, not thousands of parameters.
    plan_part = script[: script.index("# ---- the run's exact files")]
    assert "'stage 5': ['blocks.4'" in plan_part and "'head': ['classifier']" in plan_part
    assert "blocks.4.0" not in plan_part and len(plan_part.splitlines()) < 450  # not a line per parameter
    (tmp_path / "train.py").write_text(script)
    out = subprocess.run(
        [sys.executable, "train.py", str(color_folders), "--out", "re.safetensors"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "epoch 3 [fine-tune stage 5]" in out.stdout
    assert (tmp_path / "re.safetensors").stat().st_size > 10_000


def test_run_without_weights_cannot_be_exported(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create({"backbone": "resnet18"})
    with pytest.raises(TLError, match="no trained weights"):
        bundle_bytes(run)


def test_training_script_names_the_classifier_for_every_head_layout(
    studio_home: Path, color_folders: Path
) -> None:
    """RegNet's classifier sits inside timm's ClassifierHead (``head.fc``); its group is ``head``."""
    manager = JobManager(studio_home / "runs")
    cfg = tiny_config(color_folders, backbone="regnety_008", catalog_only=True, epochs=1)
    snap = manager.wait(manager.submit(cfg), timeout=120)
    assert snap.status == "completed", snap.error
    plan = training_plan(Run(snap.run_dir))
    assert plan["classifier"] == "head.fc" and plan["groups"]["head"] == ["head"]
    script = training_script(Run(snap.run_dir))
    assert "CLASSIFIER = 'head.fc'" in script
    compile(script, "train.py", "exec")
