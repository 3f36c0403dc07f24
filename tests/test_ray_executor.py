"""The Ray executor against a real local Ray (2 CPUs): the same runs as the local executor,
progress and stop through Ray, a killed actor failing only its job, and a bad address failing
fast. The two-node spread is in ``test_ray_cluster.py``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from conftest import tiny_config, wait_for
from tl_core.jobs import JobManager
from tl_core.runs import Run

RUN_FILES = {
    "backbone.json",
    "best.safetensors",
    "config.json",
    "data_config.json",
    "dataset.json",
    "features.safetensors",
    "labels.json",
    "metrics.jsonl",
    "predictions.json",
    "split.json",
    "status.json",
}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 * 1024**2)
    yield
    ray.shutdown()


@pytest.fixture
def ray_manager(local_ray: None, studio_home: Path) -> Iterator[JobManager]:
    from tl_core.ray_executor import RayExecutor

    manager = JobManager(executor=RayExecutor(cpus_per_job=1))
    yield manager
    manager.shutdown()


def long_job(data: Path, **kw):
    return tiny_config(data, strategy="fine-tune-all", epochs=200, patience=None, **kw)


def _files(run_dir: str) -> set[str]:
    return {p.name for p in Path(run_dir).iterdir() if not p.name.startswith(".")}


def test_two_jobs_through_ray_write_the_runs_the_local_executor_writes(
    ray_manager: JobManager, color_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tl_core.feature_space import load_snapshots

    events: list[tuple[str, dict]] = []
    deliver = ray_manager._on_event

    def record(job_id: str, event: dict) -> None:
        events.append((job_id, event))
        deliver(job_id, event)

    monkeypatch.setattr(ray_manager, "_on_event", record)
    cfg = tiny_config(color_folders, epochs=3, patience=None)
    ids = [ray_manager.submit(cfg), ray_manager.submit(cfg)]
    for job_id in ids:
        ray_manager.wait(job_id, timeout=120)
    local = JobManager()
    try:
        ref = local.wait(local.submit(cfg), timeout=120)
    finally:
        local.shutdown()
    assert ref.status == "completed", ref.error
    for job_id in ids:
        snap = ray_manager.snapshot(job_id)
        assert snap.status == "completed", snap.error
        assert [h["epoch"] for h in snap.history] == [1, 2, 3]
        assert snap.node and snap.device == "cpu"
        run, mine = Run(snap.run_dir), Run(ref.run_dir)
        # The run folder is written here, file for file as the local executor writes it...
        assert _files(snap.run_dir) == _files(ref.run_dir) == RUN_FILES
        for name in ("config.json", "split.json", "labels.json", "dataset.json", "data_config.json"):
            assert run.read_json(name) == mine.read_json(name), name  # the app's paths, not the node's
        assert [p["path"] for p in run.read_json("predictions.json")] == [
            p["path"] for p in mine.read_json("predictions.json")
        ]
        assert load_snapshots(run).paths == load_snapshots(mine).paths
        assert len(run.metrics()) == 3
        assert run.load_weights().keys() == mine.load_weights().keys()
        # ...and only the record of where it ran tells them apart.
        status = run.status()
        assert status["status"] == "completed" and status["epochs_run"] == 3
        assert status["node_id"] and status["device"] == "cpu" and "node" not in mine.status()
    for job_id in ids:  # progress came through Ray as it happened, the end last
        kinds = [e["type"] for j, e in events if j == job_id]
        stages = [e["fields"].get("stage") for j, e in events if j == job_id and e["type"] == "update"]
        assert kinds.count("history") == 3 and kinds.count("done") == 1 and kinds[-1] == "done"
        assert stages[0] == "scanning the data" and "training" in stages
        assert kinds.index("history") > kinds.index("update")


def test_stop_reaches_the_job_on_its_node_within_its_epoch_and_keeps_its_best_weights(
    ray_manager: JobManager, color_folders: Path
) -> None:
    job = ray_manager.submit(long_job(color_folders))
    wait_for(lambda: len(ray_manager.snapshot(job).history) >= 1, timeout=120)
    at_stop = len(ray_manager.stop(job).history)
    snap = ray_manager.wait(job, timeout=60)
    assert snap.status == "stopped" and snap.stage == "stopped"
    assert at_stop <= len(snap.history) <= at_stop + 1  # within the epoch it was in, not 200
    assert Run(snap.run_dir).weights_path.exists()
    assert Run(snap.run_dir).status()["status"] == "stopped"


def test_a_killed_actor_fails_its_job_readably_and_the_next_job_completes(
    ray_manager: JobManager, color_folders: Path
) -> None:
    doomed = ray_manager.submit(long_job(color_folders))
    wait_for(lambda: ray_manager.snapshot(doomed).epoch >= 1, timeout=120)
    ray.kill(ray_manager.executor._jobs[doomed].actor)
    snap = ray_manager.wait(doomed, timeout=60)
    assert snap.status == "failed"
    assert "died" in snap.error and "ray.kill" in snap.error and snap.node in snap.error
    assert Run(snap.run_dir).status()["status"] == "failed"
    nxt = ray_manager.wait(ray_manager.submit(tiny_config(color_folders, epochs=2)), timeout=120)
    assert nxt.status == "completed", nxt.error


def test_data_too_large_to_send_is_read_from_the_shared_path(
    local_ray: None, studio_home: Path, color_folders: Path
):
    from tl_core.ray_executor import RayExecutor

    manager = JobManager(executor=RayExecutor(cpus_per_job=1, max_data_mb=0))
    try:
        snap = manager.wait(manager.submit(tiny_config(color_folders, epochs=1)), timeout=120)
        assert not manager.executor._packs  # nothing went through the object store
    finally:
        manager.shutdown()
    assert snap.status == "completed", snap.error  # one machine: the path is "shared"


def test_a_gpu_job_on_a_cluster_without_gpus_fails_at_once(
    ray_manager: JobManager, color_folders: Path
) -> None:
    snap = ray_manager.wait(ray_manager.submit(tiny_config(color_folders, device="cuda")), timeout=60)
    assert snap.status == "failed" and snap.user_error
    assert "no node of the Ray cluster has one" in snap.error


def test_an_unreachable_cluster_fails_fast_with_one_line(tmp_path: Path) -> None:
    port = closed_port()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tl_core.cli", "train", "digits", "--ray-address", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"tl-studio: error: can't reach Ray at 127.0.0.1:{port}: Connection refused"
    assert took < 20  # seconds, not a hang (the Python start-up is most of it)


def closed_port() -> int:
    """A local port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_settings_and_cli_choose_the_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_core.cli import _build_parser, _settings
    from tl_core.errors import ConfigError
    from tl_core.settings import StudioSettings

    monkeypatch.setenv("TL_STUDIO_EXECUTOR", "ray")
    monkeypatch.setenv("TL_STUDIO_RAY_ADDRESS", "head:6379")
    monkeypatch.setenv("TL_STUDIO_RAY_CPUS", "4")
    s = StudioSettings.from_env()
    assert (s.executor, s.ray_address, s.ray_cpus_per_job) == ("ray", "head:6379", 4)
    args = _build_parser().parse_args(["train", "digits", "--executor", "local"])
    assert _settings(args).executor == "local"  # the flag wins over the environment
    monkeypatch.delenv("TL_STUDIO_EXECUTOR")
    args = _build_parser().parse_args(["app", "--ray-address", "other:1"])
    assert (_settings(args).executor, _settings(args).ray_address) == ("ray", "other:1")
    monkeypatch.setenv("TL_STUDIO_EXECUTOR", "slurm")
    with pytest.raises(ConfigError, match="use one of local, ray"):
        StudioSettings.from_env()
    assert json.dumps(s.to_dict())


def test_a_job_waiting_for_a_busy_cluster_stops_at_once(ray_manager: JobManager, color_folders: Path) -> None:
    from tl_core.ray_executor import WAITING

    @ray.remote(num_cpus=2)
    class Hog:  # another user's work holding every CPU of the cluster
        def ready(self) -> bool:
            return True

    hog = Hog.remote()
    ray.get(hog.ready.remote())
    try:
        job = ray_manager.submit(tiny_config(color_folders, epochs=1))
        wait_for(lambda: ray_manager.snapshot(job).stage == WAITING, timeout=60)
        wait_for(lambda: ray_manager.executor._jobs[job].actor is not None)  # asked Ray for room
        ray_manager.stop(job)
        snap = ray_manager.wait(job, timeout=30)
        assert (snap.status, snap.stage, snap.history) == ("stopped", "stopped while waiting", [])
        assert Run(snap.run_dir).status()["status"] == "stopped"
    finally:
        ray.kill(hog)


def test_a_finished_jobs_worker_takes_the_next_job_and_is_let_go_when_idle(
    ray_manager: JobManager, color_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ray_manager.wait(ray_manager.submit(tiny_config(color_folders, epochs=1)), timeout=120)
    second = ray_manager.wait(ray_manager.submit(tiny_config(color_folders, epochs=1)), timeout=120)
    assert first.status == second.status == "completed"
    pids = [Run(s.run_dir).status()["pid"] for s in (first, second)]
    assert pids[0] == pids[1]  # one worker process, torch imported once
    executor = ray_manager.executor
    assert len(executor._idle) == 1
    monkeypatch.setattr("tl_core.ray_executor.IDLE_S", 0.0)
    wait_for(lambda: not executor._idle, timeout=30)  # its CPU goes back to the cluster


def test_a_node_with_another_version_of_the_studio_says_so(
    ray_manager: JobManager, color_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tl_core.ray_executor.__version__", "9.9.9")  # the app's side only
    snap = ray_manager.wait(ray_manager.submit(tiny_config(color_folders, epochs=1)), timeout=120)
    assert snap.status == "failed" and snap.user_error
    assert "the app 9.9.9: install the same version on every node" in snap.error
