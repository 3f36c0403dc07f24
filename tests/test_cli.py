from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"TL_STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tl_core.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_train_json_summary_is_the_last_stdout_line(tmp_path: Path, color_folders: Path) -> None:
    (color_folders / "red" / "broken.jpg").write_bytes(b"nope")
    out = cli("train", str(color_folders), "--image-size", "64", "--epochs", "10", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    for key in (
        "run_id",
        "run_dir",
        "strategy",
        "backbone",
        "best_val_acc",
        "epochs_run",
        "wall_s",
        "trainable_params",
        "total_params",
        "device",
        "dataset",
    ):
        assert key in summary
    assert summary["backbone"] == "efficientnet_lite0" and summary["strategy"] == "feature-extraction"
    assert summary["weights"].startswith("bundled") and summary["device"] == "cpu"
    assert summary["epochs_run"] == 10 and summary["trainable_params"] == 1280 * 3 + 3
    assert summary["dataset"]["classes"] == ["blue", "green", "red"]
    assert summary["dataset"]["n_train"] + summary["dataset"]["n_val"] == 36
    assert summary["dataset"]["skipped"] == [
        {"path": "red/broken.jpg", "reason": "not an image Pillow can read"}
    ]
    assert summary["best_val_acc"] > 0.7  # chance is 0.33
    assert Path(summary["run_dir"], "best.safetensors").is_file()
    assert Path(summary["run_dir"]).parent == tmp_path / "runs"
    assert "epoch  10" in out.stderr  # per-epoch metrics on stderr

    listed = cli("runs", "--json", home=tmp_path)
    assert json.loads(listed.stdout)[0]["run_id"] == summary["run_id"]
    image = str(next((color_folders / "green").glob("*.png")))
    pred = cli("predict", summary["run_id"], image, "--json", home=tmp_path)
    assert pred.returncode == 0, pred.stderr
    (row,) = json.loads(pred.stdout.strip().splitlines()[-1])
    assert row["image"] == image and len(row["top_k"]) == 3
    assert {t["label"] for t in row["top_k"]} == {"red", "green", "blue"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "/definitely/not/here"], "is not a folder, a .zip file"),
        (["train", "digits", "--backbone", "resnet9000"], "Unknown backbone 'resnet9000'"),
        (["train", "digits", "--backbone", "resnet18"], "tl-studio prefetch resnet18"),
        (["train", "digits", "--weights", "file:/no/such.safetensors"], "Weights file not found"),
        (["train", "digits", "--lr", "7"], "learning rate must be between 0 and 1"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = cli(*args, home=tmp_path)
    assert out.returncode == 2
    lines = [line for line in out.stderr.strip().splitlines() if line.startswith("tl-studio: error:")]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in out.stderr


def test_single_class_dataset_exits_2(tmp_path: Path, color_folders: Path) -> None:
    import shutil

    shutil.rmtree(color_folders / "green")
    shutil.rmtree(color_folders / "blue")
    out = cli("train", str(color_folders), home=tmp_path)
    assert out.returncode == 2 and "only one class" in out.stderr


def test_backbones_and_datasets_catalogs(tmp_path: Path) -> None:
    rows = json.loads(cli("backbones", "--json", home=tmp_path).stdout)
    assert len(rows) >= 8
    offline = {r["name"]: r["offline_ready"] for r in rows}
    assert offline["efficientnet_lite0"] is True and offline["resnet18"] is False
    text = cli("backbones", home=tmp_path).stdout
    assert "bundled" in text and "needs download" in text
    samples = json.loads(cli("datasets", "--json", home=tmp_path).stdout)
    assert samples[0]["name"] == "digits" and samples[0]["examples"] == 1797


def test_prefetch_offline_says_so(tmp_path: Path) -> None:
    out = cli("prefetch", "resnet18", home=tmp_path)
    assert out.returncode == 2 and "Could not download" in out.stderr
    out = cli("prefetch", "efficientnet_lite0", home=tmp_path)  # the bundled file is already here
    assert out.returncode == 0 and ".pth" in out.stdout


def test_app_command_starts_the_server(tmp_path: Path) -> None:
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"TL_STUDIO_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tl_core.cli", "app", "--server.port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
                    == b"ok"
                ):
                    return
            except OSError:
                time.sleep(0.3)
        pytest.fail("tl-studio app did not serve the app")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
