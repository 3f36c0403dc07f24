"""``tl-studio bench``: both recipes run on the same split, and the figures come back as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import TINY_MODEL


def test_bench_runs_the_tutorial_loop_and_the_engine_on_the_same_data(
    studio_home: Path, color_folders: Path
) -> None:
    cmd = [sys.executable, "-m", "tl_core.cli", "bench", str(color_folders), "--backbone", TINY_MODEL]
    cmd += ["--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "8", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["n_train"], result["n_val"]) == (30, 6)  # 36 images, 20% of each class held out
    seen = {(m["recipe"], m["strategy"]) for m in result["measures"]}
    recipes = ("tutorial", "engine", "engine-warm")
    assert seen == {(r, s) for r in recipes for s in ("feature-extraction", "fine-tune-top")}
    for m in result["measures"]:
        assert len(m["epoch_s"]) == 2 and 0 <= m["best_val_acc"] <= 1 and m["peak_rss_mb"] > 0
    assert all(ratio > 0 for ratio in result["speedup"].values())
    assert set(result["speedup_warm"]) == set(result["speedup"])
    # The second engine run on the same data reads the cached features and maps.
    warm = {m["strategy"]: m for m in result["measures"] if m["recipe"] == "engine-warm"}
    cold = {m["strategy"]: m for m in result["measures"] if m["recipe"] == "engine"}
    assert all(warm[s]["best_val_acc"] == cold[s]["best_val_acc"] for s in cold)
    assert "the engine is" in proc.stderr
    assert not (studio_home / "runs").exists()  # the engine's runs went to a scratch home


def test_bench_refuses_an_unknown_strategy(color_folders: Path) -> None:
    cmd = [sys.executable, "-m", "tl_core.cli", "bench", str(color_folders), "--strategies", "gradual"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bench compares feature-extraction and fine-tune-top" in proc.stderr


def test_throughput_times_the_data_path_and_synthetic_tensors(studio_home: Path) -> None:
    """Without DATA it writes its own photos; both paths train and come back as JSON."""
    cmd = [sys.executable, "-m", "tl_core.cli", "bench", "--throughput", TINY_MODEL, "--device", "cpu"]
    cmd += ["--image-size", "32", "--batch-size", "8", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (
        result["model"] == TINY_MODEL and result["device"] == "cpu" and result["data"] == "generated photos"
    )
    assert result["images"] >= 40 and result["batch_size"] == 8
    assert result["real_img_s"] > 0 and result["synthetic_img_s"] > 0
    assert result["ratio"] == result["real_img_s"] / result["synthetic_img_s"]
    assert "the data path reaches" in proc.stderr


def test_bench_without_data_says_what_it_needs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tl_core.cli", "bench"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "bench needs DATA" in proc.stderr
