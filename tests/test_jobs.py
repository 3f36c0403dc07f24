from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from conftest import tiny_config, wait_for
from tl_core.config import TrainConfig
from tl_core.errors import BackboneError, ConfigError, TLError
from tl_core.jobs import JobManager
from tl_core.runs import Run

tiny = tiny_config


def test_job_runs_in_background_and_writes_its_run_folder(tmp_path: Path, color_folders: Path) -> None:
    manager = JobManager(tmp_path / "runs")
    job_id = manager.submit(tiny(color_folders, epochs=3))
    assert len(job_id) >= 20  # unguessable, not a counter
    snap = manager.wait(job_id, timeout=60)
    assert snap.status == "completed", snap.error
    assert [h["epoch"] for h in snap.history] == [1, 2, 3]
    assert snap.result["epochs_run"] == 3 and snap.progress == 1.0
    run = Run(snap.run_dir)
    files = {p.name for p in run.dir.iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "status.json",
        "best.safetensors",
        "labels.json",
        "data_config.json",
    } <= files
    assert not [f for f in files if f.startswith(".")]  # no temp files left behind
    assert json.loads(run.labels_path.read_text()) == ["blue", "green", "red"]
    assert [m["epoch"] for m in run.metrics()] == [1, 2, 3]
    status = run.status()
    assert status["status"] == "completed" and status["best_val_acc"] == snap.result["best_val_acc"]
    weights = run.load_weights()
    assert weights["classifier.weight"].shape[0] == 3


def test_snapshot_is_a_copy(tmp_path: Path, color_folders: Path) -> None:
    manager = JobManager(tmp_path / "runs")
    job_id = manager.submit(tiny(color_folders, epochs=2))
    snap = manager.wait(job_id, timeout=60)
    snap.history.clear()
    snap.status = "tampered"
    again = manager.snapshot(job_id)
    assert again.status == "completed" and len(again.history) == 2


def test_fifo_queue_with_positions_and_stop(tmp_path: Path, color_folders: Path) -> None:
    manager = JobManager(tmp_path / "runs", max_per_device=1)
    first = manager.submit(tiny(color_folders, strategy="fine-tune-all", epochs=50, patience=None))
    second = manager.submit(tiny(color_folders, epochs=2))
    third = manager.submit(tiny(color_folders, epochs=2))
    assert manager.snapshot(first).status == "running"
    assert (manager.snapshot(second).status, manager.snapshot(second).queue_position) == ("queued", 1)
    assert manager.snapshot(third).queue_position == 2
    # Stopping a queued job is immediate and moves the others up.
    assert manager.stop(second).status == "stopped"
    assert manager.snapshot(third).queue_position == 1
    assert Run(manager.snapshot(second).run_dir).status()["status"] == "stopped"
    # Stopping the running job lets the next one start.
    wait_for(lambda: manager.snapshot(first).epoch >= 1)
    assert manager.stop(first).status in ("stopping", "stopped")
    assert manager.wait(first, timeout=30).status == "stopped"
    assert manager.wait(third, timeout=60).status == "completed"
    assert manager.snapshot(first).epoch < 50


def test_stop_during_feature_caching(tmp_path: Path, color_folders: Path) -> None:
    manager = JobManager(tmp_path / "runs")
    job_id = manager.submit(tiny(color_folders, batch_size=1))
    wait_for(lambda: manager.snapshot(job_id).stage.startswith("caching"))
    manager.stop(job_id)
    snap = manager.wait(job_id, timeout=30)
    assert snap.status == "stopped"
    assert snap.history == []


def test_user_errors_fail_the_job_with_the_message(tmp_path: Path) -> None:
    manager = JobManager(tmp_path / "runs")
    job_id = manager.submit(tiny(tmp_path / "missing"))
    snap = manager.wait(job_id, timeout=30)
    assert snap.status == "failed" and snap.user_error
    assert "is not a folder, a .zip file" in snap.error
    assert Run(snap.run_dir).status()["status"] == "failed"


def test_submit_rejects_bad_config_before_queueing(tmp_path: Path) -> None:
    manager = JobManager(tmp_path / "runs")
    with pytest.raises(BackboneError):
        manager.submit(TrainConfig(backbone="nope"))
    with pytest.raises(ConfigError):
        manager.submit(TrainConfig(epochs=-3))
    assert manager.jobs() == []
    with pytest.raises(TLError, match="No job"):
        manager.snapshot("not-a-job")


def test_jobs_are_visible_from_any_thread(tmp_path: Path, color_folders: Path) -> None:
    """A refreshed browser tab is another thread: it must find the job by id alone."""
    manager = JobManager(tmp_path / "runs")
    job_id = manager.submit(tiny(color_folders, epochs=1))
    seen: list[str] = []
    t = threading.Thread(target=lambda: seen.append(manager.wait(job_id, timeout=60).status))
    t.start()
    t.join()
    assert seen == ["completed"]


def test_finished_run_reloads_and_predicts(tmp_path: Path, color_folders: Path) -> None:
    from tl_core.inference import load_run_model, predict

    manager = JobManager(tmp_path / "runs")
    snap = manager.wait(manager.submit(tiny(color_folders, epochs=20, lr=3e-2)), timeout=60)
    loaded = load_run_model(snap.run_dir)
    assert loaded.labels == ["blue", "green", "red"]
    top = predict(loaded, next((color_folders / "red").glob("*.png")), top_k=2)
    assert len(top) == 2 and top[0][1] >= top[1][1]
    assert (
        abs(sum(p for _, p in predict(loaded, next((color_folders / "red").glob("*.png")), top_k=3)) - 1)
        < 1e-4
    )


def test_unexpected_errors_fail_the_job_not_the_process(tmp_path: Path, color_folders: Path) -> None:
    manager = JobManager(tmp_path / "runs")
    snap = manager.wait(manager.submit(tiny(color_folders, model_kwargs={"no_such_arg": 1})), timeout=60)
    assert snap.status == "failed" and not snap.user_error
    assert snap.error.startswith("Internal error (TypeError")
    assert "Traceback" in (Path(snap.run_dir) / "error.log").read_text()
    assert Run(snap.run_dir).status()["status"] == "failed"
