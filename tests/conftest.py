"""Shared fixtures: an isolated studio home, no network, tiny generated datasets."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# Before anything imports huggingface_hub: tests must never reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TL_STUDIO_HOME", tempfile.mkdtemp(prefix="tl-studio-test-home-"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

TINY_MODEL = "test_efficientnet"
"""timm's 100k-parameter EfficientNet: same API as the real ones, trains in milliseconds."""


def tiny_config(data: Path, **overrides: object):
    """A TrainConfig on the tiny model at 32 px, random init: seconds per run on a CPU."""
    from tl_core.config import TrainConfig

    base = dict(
        data=str(data), backbone=TINY_MODEL, weights="none", catalog_only=False, image_size=32, batch_size=4
    )
    return TrainConfig(**(base | overrides))


COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220)}


def write_image(
    path: Path, color: tuple[int, int, int], seed: int, size: int = 40, fmt: str | None = None
) -> Path:
    """A solid-ish colour image with noise, so classes are learnable but not identical."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color)[None, None, :] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(
        np.uint8
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_class_folders(root: Path, per_class: dict[str, int], start_seed: int = 0) -> Path:
    seed = start_seed
    for name, n in per_class.items():
        for i in range(n):
            ext = "jpg" if i % 2 else "png"
            write_image(root / name / f"{name}_{i:03d}.{ext}", COLORS[name], seed)
            seed += 1
    return root


def wait_for(predicate, timeout: float = 60.0) -> None:
    """Poll ``predicate`` until it holds: jobs run in other threads and processes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def studio_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    return home


@pytest.fixture
def color_folders(tmp_path: Path) -> Path:
    """Three learnable classes, 12 images each, as plain class folders."""
    return make_class_folders(tmp_path / "colors", {"red": 12, "green": 12, "blue": 12})


@pytest.fixture
def split_folders(tmp_path: Path) -> Path:
    root = tmp_path / "split"
    make_class_folders(root / "train", {"red": 8, "green": 8})
    make_class_folders(root / "val", {"red": 3, "green": 3}, start_seed=100)
    make_class_folders(root / "test", {"red": 2, "green": 2}, start_seed=200)
    return root


# -- a real app server and a real browser, for the end-to-end tests ---------------------------
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt install chromium)"
)


@contextlib.contextmanager
def serve_app(home: Path, **env: str) -> Iterator[str]:
    """``streamlit run app.py`` on a free port with its own studio home; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
        cwd=ROOT,
        env=os.environ | {"TL_STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1"} | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not become healthy:\n" + proc.stdout.read().decode())
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


# -- measuring callbacks: a real job, a real trainer on the CPU --------------------------------
def train_job(cfg, root: Path):
    """One job through the real runner, in this thread; returns its run folder."""
    import threading

    from tl_core.runner import JobSpec, run_job
    from tl_core.runs import RunStore

    run = RunStore(root).create(cfg.to_dict())
    events: list[dict] = []
    run_job(JobSpec("job", cfg.to_dict(), str(run.dir), "cpu"), events.append, threading.Event())
    assert events[-1]["fields"]["status"] == "completed", events[-1]["fields"]
    return run


def cpu_trainer(data: Path, make_callback, **kw):
    """A tiny model's ``Trainer`` on ``data``, with ``BestWeights`` then
    ``make_callback(backbone_info)``; returns (trainer, that callback)."""
    from tl_core.backbones import create_backbone
    from tl_core.data import scan_dataset
    from tl_core.devices import detect_device
    from tl_core.freezing import layer_groups
    from tl_core.training import BestWeights, Trainer, seed_everything

    cfg = tiny_config(data, **({"batch_size": 8} | kw))
    seed_everything(cfg.seed)
    dataset = scan_dataset(data, seed=cfg.seed)
    model, info = create_backbone(
        cfg.backbone, len(dataset.classes), cfg.weights, cfg.image_size, catalog_only=cfg.catalog_only
    )
    callback = make_callback(info)
    trainer = Trainer(
        model,
        layer_groups(model),
        cfg,
        dataset,
        info.data_config,
        detect_device("cpu"),
        [BestWeights(), callback],
    )
    return trainer, callback


def finished(epochs_run: int = 1):
    """The ``TrainResult`` of a run that ended normally after ``epochs_run`` epochs."""
    from tl_core.training import TrainResult

    return TrainResult("completed", 1.0, 0.1, 1, epochs_run, 0.0, 0, 0, "cpu", False)
