"""Every GPU of one machine: the device pool, placement across it, and the restriction.

No GPU needed: the pool is injected (``JobManager(devices=[...])``) and the executor only
records where each job was placed; the test plays the worker by sending ``done`` events.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_config
from tl_core.devices import gpu_ids, visible_devices
from tl_core.errors import ConfigError
from tl_core.executors import worker_env
from tl_core.jobs import JobManager
from tl_core.queueing import pooled_waits
from tl_core.runs import Run
from tl_core.settings import StudioSettings

TWO_GPUS = ["cuda:0", "cuda:1"]


class PlacingExecutor:
    """Starts nothing; remembers which device each job was placed on."""

    def __init__(self) -> None:
        self.placed: dict[str, str] = {}
        self.on_event = None

    def start(self, spec, on_event) -> None:
        self.placed[spec.job_id] = spec.device
        self.on_event = on_event

    def finish(self, job_id: str) -> None:
        self.on_event(job_id, {"type": "done", "fields": {"status": "completed", "stage": "completed"}})

    def stop(self, job_id: str) -> None: ...

    def warm(self, device: str, on_event) -> None: ...

    def describe(self) -> list:
        return []

    def shutdown(self) -> None: ...


@pytest.fixture
def pool(studio_home: Path) -> tuple[JobManager, PlacingExecutor]:
    executor = PlacingExecutor()
    return JobManager(executor=executor, devices=TWO_GPUS), executor


# -- the pool and its restriction --------------------------------------------------------------
def test_visible_devices_are_every_gpu_or_the_restriction() -> None:
    gpus = ["0", "1", "2"]
    assert visible_devices(None, gpus) == ["cuda:0", "cuda:1", "cuda:2"]
    assert visible_devices("all", gpus) == ["cuda:0", "cuda:1", "cuda:2"]
    assert visible_devices("0, 2", gpus) == ["cuda:0", "cuda:2"]
    assert visible_devices("cuda:1,1", gpus) == ["cuda:1"]  # named twice is once
    assert visible_devices("cpu", gpus) == ["cpu"]
    assert visible_devices(None, []) == ["cpu"]  # this machine has no GPU: as before


def test_a_restriction_naming_a_missing_gpu_says_what_there_is() -> None:
    with pytest.raises(ConfigError, match=r"'3'.*cuda:0, cuda:1, cuda:2"):
        visible_devices("0,3", ["0", "1", "2"])
    with pytest.raises(ConfigError, match="no GPU"):
        visible_devices("0", [])
    with pytest.raises(ConfigError, match="mixes GPUs"):
        visible_devices("0,cpu", ["0"])
    with pytest.raises(ConfigError, match="'gpu1'"):
        visible_devices("gpu1", ["0", "1"])


def test_gpu_ids_are_physical_under_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_ids() == ["2", "3"]
    assert visible_devices("3", None) == ["cuda:3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_devices() == ["cuda:0", "cuda:1"]


def test_the_restriction_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert StudioSettings.from_env().devices is None
    monkeypatch.setenv("TL_STUDIO_DEVICES", " 0,2 ")
    assert StudioSettings.from_env().devices == "0,2"


def test_a_gpu_worker_sees_only_its_own_card() -> None:
    env = worker_env("cuda:1", {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["PATH"] == "/bin"
    assert "CUDA_VISIBLE_DEVICES" not in worker_env("cpu", {"PATH": "/bin"})


# -- placement ---------------------------------------------------------------------------------
def test_two_jobs_run_at_once_on_two_gpus_and_a_third_takes_the_first_free_one(
    pool: tuple[JobManager, PlacingExecutor], color_folders: Path
) -> None:
    manager, executor = pool
    a, b, c = (manager.submit(tiny_config(color_folders, seed=s)) for s in (1, 2, 3))
    assert [executor.placed.get(j) for j in (a, b, c)] == ["cuda:0", "cuda:1", None]
    assert manager.snapshot(b).status == "running" and manager.snapshot(b).device == "cuda:1"
    assert Run(manager.snapshot(b).run_dir).status()["device"] == "cuda:1"
    waiting = manager.snapshot(c)
    assert waiting.status == "queued" and waiting.queue_position == 1 and waiting.device == ""
    executor.finish(b)
    assert executor.placed[c] == "cuda:1" and manager.snapshot(c).device == "cuda:1"
    assert {s.device for s in manager.queue()} == {"cuda:0", "cuda:1"}  # the instructor's view


def test_fairness_across_workspaces_holds_over_the_pool(
    pool: tuple[JobManager, PlacingExecutor], color_folders: Path
) -> None:
    manager, executor = pool
    alice, bob = manager.workspaces.create("Alice"), manager.workspaces.create("Bob")
    mine = [manager.submit(tiny_config(color_folders, seed=s), workspace=alice.id) for s in range(4)]
    bobs = manager.submit(tiny_config(color_folders, seed=9), workspace=bob.id)
    assert set(executor.placed) == set(mine[:2])  # both GPUs busy with Alice's first two
    assert manager.snapshot(bobs).queue_position == 1  # Bob goes before Alice's third
    executor.finish(mine[0])
    assert bobs in executor.placed and executor.placed[bobs] == "cuda:0"
    assert mine[2] not in executor.placed


def test_a_job_pinned_to_a_gpu_waits_for_that_one(
    pool: tuple[JobManager, PlacingExecutor], color_folders: Path
) -> None:
    manager, executor = pool
    busy = manager.submit(tiny_config(color_folders, seed=1, device="cuda:1"))
    pinned = manager.submit(tiny_config(color_folders, seed=2, device="cuda:1"))
    later = manager.submit(tiny_config(color_folders, seed=3))
    assert executor.placed[busy] == "cuda:1"
    assert pinned not in executor.placed  # cuda:0 is free, but it asked for cuda:1
    assert executor.placed[later] == "cuda:0"  # not stuck behind the pinned job
    executor.finish(later)
    assert pinned not in executor.placed
    executor.finish(busy)
    assert executor.placed[pinned] == "cuda:1"


def test_a_gpu_outside_the_pool_is_refused_at_submit(
    pool: tuple[JobManager, PlacingExecutor], color_folders: Path
) -> None:
    manager, _ = pool
    with pytest.raises(ConfigError, match=r"cuda:5.*cuda:0, cuda:1"):
        manager.submit(tiny_config(color_folders, device="cuda:5"))
    cpu_only = JobManager(executor=PlacingExecutor(), devices=["cpu"])
    with pytest.raises(ConfigError, match="cpu"):
        cpu_only.submit(tiny_config(color_folders, device="cuda"))


def test_cpu_jobs_on_a_gpu_server_keep_their_own_queue(
    pool: tuple[JobManager, PlacingExecutor], color_folders: Path
) -> None:
    manager, executor = pool
    jobs = [manager.submit(tiny_config(color_folders, seed=s, device="cpu")) for s in (1, 2)]
    gpu = manager.submit(tiny_config(color_folders, seed=3))
    assert executor.placed == {jobs[0]: "cpu", gpu: "cuda:0"}
    assert manager.snapshot(jobs[1]).status == "queued"


def test_waits_are_estimated_over_every_slot_of_the_pool() -> None:
    slots = [("cuda:0", 10.0), ("cuda:1", 30.0)]
    anywhere = lambda job: ["cuda:0", "cuda:1"]  # noqa: E731
    assert pooled_waits(["x", "y", "z"], slots, anywhere, lambda j: 60.0) == [10.0, 30.0, 70.0]
    only_1 = lambda job: ["cuda:1"]  # noqa: E731
    assert pooled_waits(["x", "y"], slots, only_1, lambda j: 60.0) == [30.0, 90.0]
    assert pooled_waits(["x"], [("cuda:0", None), ("cuda:1", 5.0)], anywhere, lambda j: 1.0) == [None]


def test_worker_processes_get_every_gpu_and_threads_the_first(
    studio_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert JobManager(executor="process").devices == TWO_GPUS  # starts no worker yet
    assert JobManager(executor="thread").devices == ["cuda:0"]  # "cuda" in this process
    with pytest.raises(ConfigError, match="executor='process'"):
        JobManager(executor="thread", devices=TWO_GPUS)


def test_a_job_placed_on_a_gpu_trains_on_cuda_in_its_worker(
    studio_home: Path, color_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its worker sees only that card, as ``cuda``, whatever the config named."""
    import threading

    import tl_core.devices
    from tl_core.runner import JobSpec, Reporter, _prepare

    asked: list[str] = []

    def fake_detect(requested: str = "auto") -> tl_core.devices.DeviceSetup:
        asked.append(requested)
        return tl_core.devices.DeviceSetup("cpu", None, channels_last=False, pin_memory=False)

    monkeypatch.setattr(tl_core.devices, "detect_device", fake_detect)
    config = tiny_config(color_folders, device="cuda:1").resolved().to_dict()
    for device in ("cuda:1", "cpu"):
        run = JobManager(executor=PlacingExecutor(), devices=["cpu"]).runs().create(config)
        spec = JobSpec(job_id="j", config=config, run_dir=str(run.dir), device=device)
        _prepare(spec, Reporter(lambda event: None, threading.Event()), run)
    assert asked == ["cuda", "cuda:1"]  # a CPU placement leaves the config alone
