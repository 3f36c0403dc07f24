"""The room, through the engine: private workspaces, the fair queue, quotas, double clicks,
the instructor token, the shared device lock, worker processes that die, the room board."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import tiny_config, wait_for
from tl_core.devicelock import DeviceLock, others_load, publish_load
from tl_core.errors import ConfigError, NotFound, QuotaExceeded
from tl_core.jobs import JobManager
from tl_core.queueing import expected_waits, service_order
from tl_core.room import RoomBoard, room_results
from tl_core.runs import Run
from tl_core.settings import StudioSettings
from tl_core.workspaces import SOLO, WorkspaceStore


def long_job(data: Path, **kw):
    return tiny_config(data, strategy="fine-tune-all", epochs=200, patience=None, **kw)


# -- workspaces ----------------------------------------------------------------------------
def test_workspace_ids_are_unguessable_and_names_checked(studio_home: Path) -> None:
    store = WorkspaceStore()
    a, b = store.create("Ada"), store.create("  Ada  ")
    assert a.id != b.id and len(a.id) >= 20 and b.name == "Ada"
    assert store.get(a.id).name == "Ada" and [w.id for w in store.list()] == [a.id, b.id]
    for bad in ("", "../../etc", "solo/../x", a.id[:-1] + "!"):
        assert not store.exists(bad)
    with pytest.raises(ConfigError, match="name"):
        store.create("   ")
    assert store.runs_dir(SOLO) == studio_home / "runs"  # the CLI's folder, as before


def test_two_workspaces_cannot_reach_each_others_jobs_or_runs(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager()
    store = manager.workspaces
    alice, bob = store.create("Alice"), store.create("Bob")
    job = manager.submit(tiny_config(color_folders, epochs=1), workspace=alice.id)
    snap = manager.wait(job, timeout=60, workspace=alice.id)
    assert snap.status == "completed" and snap.owner == "Alice"
    # Bob can't snapshot, stop, wait on or read the config of Alice's job: the same "not found"
    # as for an id that never existed.
    for call in (manager.snapshot, manager.stop, manager.job_config):
        with pytest.raises(NotFound) as theirs:
            call(job, workspace=bob.id)
        with pytest.raises(NotFound) as nobody:
            call("no-such-job", workspace=bob.id)
        assert str(theirs.value).replace(job, "X") == str(nobody.value).replace("no-such-job", "X")
    assert [j.job_id for j in manager.jobs(workspace=bob.id)] == []
    assert [j.job_id for j in manager.jobs(workspace=alice.id)] == [job]
    # Runs live in the workspace's own folder; Bob's store neither lists nor opens them.
    assert [r.run_id for r in manager.runs(alice.id).list()] == [snap.run_id]
    assert manager.runs(bob.id).list() == [] and manager.runs(SOLO).list() == []
    with pytest.raises(NotFound):
        manager.runs(bob.id).get(snap.run_id)
    with pytest.raises(NotFound):
        manager.runs(bob.id).get(f"../../{alice.id}/runs/{snap.run_id}")
    # The instructor (no workspace) sees everything.
    assert manager.snapshot(job).job_id == job


def test_workspace_uploads_are_swept_after_idle_time_runs_kept(studio_home: Path) -> None:
    from tl_core.fsutil import write_json_atomic

    store = WorkspaceStore()
    idle, busy = store.create("Idle"), store.create("Busy")
    for ws in (idle, busy):
        store.uploads_dir(ws.id).mkdir(parents=True)
        (store.uploads_dir(ws.id) / "x.zip").write_bytes(b"zip")
        store.runs(ws.id).create({"backbone": "resnet18"})
    stale = store.get(idle.id)
    stale.last_seen -= 25 * 3600
    write_json_atomic(store.root / idle.id / "workspace.json", stale.to_dict())
    assert store.sweep_uploads(24 * 3600) == [store.uploads_dir(idle.id)]
    assert not store.uploads_dir(idle.id).exists() and store.uploads_dir(busy.id).exists()
    assert len(store.runs(idle.id).list()) == 1  # the model stays


# -- the fair queue ------------------------------------------------------------------------
def test_service_order_is_round_robin_across_workspaces_fifo_within() -> None:
    queued = [("A", 1), ("A", 2), ("A", 3), ("A", 4), ("A", 5), ("B", 1), ("C", 1), ("B", 2)]
    order = service_order(queued, lambda j: j[0], last_served={"A": 7})
    # A was just served, so B and C (never served) go first; then turns rotate.
    assert order == [("B", 1), ("C", 1), ("A", 1), ("B", 2), ("A", 2), ("A", 3), ("A", 4), ("A", 5)]
    assert service_order([], lambda j: j[0], {}) == []
    assert expected_waits(["x", "y", "z"], 30.0, lambda j: 60.0) == [30.0, 90.0, 150.0]
    assert expected_waits(["x", "y"], None, lambda j: 60.0) == [None, None]


def test_manager_serves_workspaces_in_turn(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager()
    store = manager.workspaces
    greedy, polite = store.create("Greedy"), store.create("Polite")
    blocker = manager.submit(long_job(color_folders), workspace=greedy.id)
    greedy_jobs = [
        manager.submit(tiny_config(color_folders, epochs=1, seed=s), workspace=greedy.id) for s in (1, 2)
    ]
    polite_job = manager.submit(tiny_config(color_folders, epochs=1), workspace=polite.id)
    # The later arrival from another workspace is promised the next turn...
    assert manager.snapshot(polite_job).queue_position == 1
    assert [manager.snapshot(j).queue_position for j in greedy_jobs] == [2, 3]
    assert [s.job_id for s in manager.queue()] == [blocker, polite_job, *greedy_jobs]
    # ...and gets it.
    wait_for(lambda: manager.snapshot(blocker).epoch >= 1)
    manager.stop(blocker)
    for job in (polite_job, *greedy_jobs):
        assert manager.wait(job, timeout=60).status == "completed"
    starts = {j: manager.snapshot(j).started_at for j in (polite_job, *greedy_jobs)}
    assert starts[polite_job] < starts[greedy_jobs[0]] < starts[greedy_jobs[1]]


def test_queued_jobs_get_a_wait_estimate_once_a_job_has_finished(
    studio_home: Path, color_folders: Path
) -> None:
    manager = JobManager()
    first = manager.submit(tiny_config(color_folders, epochs=1))
    assert manager.wait(first, timeout=60).status == "completed"
    blocker = manager.submit(long_job(color_folders))
    queued = manager.submit(tiny_config(color_folders, epochs=1, seed=3))
    snap = manager.snapshot(queued)
    assert snap.queue_position == 1 and snap.wait_s is not None and snap.wait_s >= 0
    manager.stop(queued)
    manager.stop(blocker)
    manager.wait(blocker, timeout=30)


def test_quota_on_queued_jobs_per_workspace(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager(max_queued_per_workspace=2)
    ws = manager.workspaces.create("Quick")
    other = manager.workspaces.create("Other")
    running = manager.submit(long_job(color_folders), workspace=ws.id)
    queued = [manager.submit(tiny_config(color_folders, seed=s), workspace=ws.id) for s in (1, 2)]
    with pytest.raises(QuotaExceeded, match="2 job"):
        manager.submit(tiny_config(color_folders, seed=3), workspace=ws.id)
    other_job = manager.submit(tiny_config(color_folders, seed=4), workspace=other.id)  # own quota
    manager.stop(queued[0], workspace=ws.id)  # a freed slot can be used again
    queued.append(manager.submit(tiny_config(color_folders, seed=5), workspace=ws.id))
    for job in [*queued, other_job]:
        manager.stop(job)
    manager.stop(running)
    manager.wait(running, timeout=30)
    assert JobManager().max_queued_per_workspace is None  # solo: no limits


def test_a_group_of_jobs_is_queued_all_or_none(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager(max_queued_per_workspace=3)
    ws = manager.workspaces.create("Trio")
    running = manager.submit(long_job(color_folders), workspace=ws.id)
    manager.submit(tiny_config(color_folders, seed=1), workspace=ws.id)
    group = [tiny_config(color_folders, seed=s, group="g1") for s in (2, 3, 4)]
    with pytest.raises(QuotaExceeded, match="room for 3"):
        manager.submit_many(group, workspace=ws.id)
    assert len(manager.jobs(ws.id)) == 2 and len(manager.runs(ws.id).list()) == 2  # nothing half-queued
    ids = manager.submit_many(group[:2], workspace=ws.id)
    assert [manager.snapshot(j).group for j in ids] == ["g1", "g1"]
    assert {r.group for r in manager.runs(ws.id).list()} == {"", "g1"}
    for job in manager.jobs(ws.id):
        manager.stop(job.job_id)
    manager.wait(running, timeout=30)


def test_a_job_budget_is_its_own_time_limit_within_the_rooms(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager(time_limit_s=60.0)
    job = manager.submit(long_job(color_folders), time_limit_s=2.0)
    snap = manager.wait(job, timeout=60)
    assert snap.time_limit_s == 2.0 and snap.stage == "stopped at the time limit"
    roomy = manager.submit(tiny_config(color_folders), time_limit_s=600.0)
    assert manager.snapshot(roomy).time_limit_s == 60.0  # the room's limit still applies
    manager.wait(roomy, timeout=60)


def test_double_submit_with_the_same_request_id_is_one_job(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager()
    cfg = long_job(color_folders)
    first = manager.submit(cfg, request_id="tab-1:start")
    assert manager.submit(cfg, request_id="tab-1:start") == first
    second = manager.submit(cfg, request_id="tab-2:start")  # another tab, another request
    assert second != first and len(manager.jobs()) == 2
    manager.stop(second)
    manager.stop(first)
    manager.wait(first, timeout=30)


def test_time_limit_stops_and_keeps_best_weights(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager(time_limit_s=2.0)
    snap = manager.wait(manager.submit(long_job(color_folders)), timeout=60)
    assert snap.status == "stopped" and snap.stage == "stopped at the time limit"
    assert snap.trained and Run(snap.run_dir).weights_path.exists()
    assert snap.time_limit_s == 2.0


def test_stop_before_the_first_epoch_says_nothing_was_trained(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager()
    job = manager.submit(tiny_config(color_folders, strategy="fine-tune-all", batch_size=1, epochs=5))
    wait_for(
        lambda: manager.snapshot(job).stage in ("training", "loading backbone") or manager.snapshot(job).step
    )
    manager.stop(job)
    snap = manager.wait(job, timeout=30)
    assert snap.status == "stopped" and not snap.trained
    assert snap.stage.startswith("stopped before")
    assert not Run(snap.run_dir).weights_path.exists()


def test_finished_jobs_in_memory_are_bounded(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager(max_finished_jobs=2)
    jobs = [manager.submit(tiny_config(color_folders, epochs=1, seed=s)) for s in range(4)]
    for job in jobs[-1:]:
        manager.wait(job, timeout=60)
    wait_for(lambda: len(manager.jobs()) == 2)
    assert [j.job_id for j in manager.jobs()] == jobs[2:]
    assert len(manager.runs(SOLO).list()) == 4  # the runs themselves stay on disk


# -- settings and the instructor token -------------------------------------------------------
def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TL_STUDIO_WORKSHOP",
        "TL_STUDIO_INSTRUCTOR_TOKEN",
        "TL_STUDIO_MAX_QUEUED",
        "TL_STUDIO_ALLOW_PATHS",
    ):
        monkeypatch.delenv(name, raising=False)
    solo = StudioSettings.from_env()
    assert not solo.workshop and solo.max_queued_per_workspace is None and solo.job_time_limit_s is None
    assert solo.allow_local_paths and not solo.check_instructor("anything") and not solo.check_instructor("")
    monkeypatch.setenv("TL_STUDIO_WORKSHOP", "1")
    monkeypatch.setenv("TL_STUDIO_INSTRUCTOR_TOKEN", "s3cret-token")
    room = StudioSettings.from_env()
    assert room.workshop and room.max_queued_per_workspace == 3 and room.job_time_limit_s == 900
    assert not room.allow_local_paths
    assert room.check_instructor("s3cret-token")
    assert not room.check_instructor("s3cret-tokeN") and not room.check_instructor("")
    assert room.to_dict()["instructor_token"] == "set"  # never echoed
    monkeypatch.setenv("TL_STUDIO_MAX_QUEUED", "5")
    monkeypatch.setenv("TL_STUDIO_JOB_TIME_LIMIT_MIN", "0")
    tuned = StudioSettings.from_env()
    assert tuned.max_queued_per_workspace == 5 and tuned.job_time_limit_s is None
    monkeypatch.setenv("TL_STUDIO_MAX_QUEUED", "lots")
    with pytest.raises(ConfigError, match="TL_STUDIO_MAX_QUEUED"):
        StudioSettings.from_env()


# -- one device, many processes --------------------------------------------------------------
def test_device_lock_is_exclusive_and_first_come_first_served(studio_home: Path) -> None:
    holder = DeviceLock("cpu", poll_s=0.02)
    assert holder.acquire()
    publish_load("cpu", 2, root=holder.root)
    assert others_load("cpu", root=holder.root) == 0  # this process's own load isn't "others"
    got: list[str] = []
    said: list[str] = []

    def waiter(name: str) -> None:
        lock = DeviceLock("cpu", poll_s=0.02)
        lock.acquire(on_wait=said.append)
        got.append(name)
        time.sleep(0.05)
        lock.release()

    first = threading.Thread(target=waiter, args=("first",))
    first.start()
    wait_for(lambda: said, timeout=5)
    second = threading.Thread(target=waiter, args=("second",))
    second.start()
    time.sleep(0.3)
    assert got == [] and said[0].startswith("waiting for the device")
    holder.release()
    first.join(5)
    second.join(5)
    assert got == ["first", "second"]
    stop = threading.Event()
    stop.set()
    assert holder.acquire() and not DeviceLock("cpu").acquire(stop=stop)  # gives up when stopped
    holder.release()
    publish_load("cpu", 0, root=holder.root)


def test_two_managers_never_train_on_one_device_at_once(studio_home: Path, color_folders: Path) -> None:
    """The app's and a CLI's managers: the second waits, and says so."""
    app, cli = JobManager(), JobManager()
    running = app.submit(long_job(color_folders))
    wait_for(lambda: app.snapshot(running).epoch >= 1)
    waiting = cli.submit(tiny_config(color_folders, epochs=1))
    wait_for(lambda: cli.snapshot(waiting).stage.startswith("waiting for the device"))
    time.sleep(0.5)
    assert cli.snapshot(waiting).epoch == 0
    assert "1 job ahead" in cli.snapshot(waiting).stage  # the app published its load
    app.stop(running)
    assert cli.wait(waiting, timeout=60).status == "completed"
    assert cli.snapshot(waiting).started_at >= app.snapshot(running).started_at


def test_cli_waits_for_the_device_and_says_so(studio_home: Path, color_folders: Path) -> None:
    import subprocess
    import sys

    lock = DeviceLock("cpu")
    assert lock.acquire()
    publish_load("cpu", 2, root=lock.root)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tl_core.cli",
            "train",
            str(color_folders),
            "--backbone",
            "mobilenetv3_small_100",
            "--weights",
            "none",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"TL_STUDIO_HOME": str(studio_home)},
    )
    try:
        time.sleep(8)
        assert proc.poll() is None  # still waiting for the lock this test holds
    finally:
        lock.release()
        publish_load("cpu", 0, root=lock.root)
    out, err = proc.communicate(timeout=120)
    assert "waiting for the device: 2 jobs ahead" in err
    assert proc.returncode == 0, err


# -- worker processes ----------------------------------------------------------------------
def test_killed_worker_fails_only_its_job_and_the_next_job_completes(
    studio_home: Path, color_folders: Path
) -> None:
    manager = JobManager(executor="process")
    try:
        doomed = manager.submit(long_job(color_folders))
        wait_for(lambda: manager.snapshot(doomed).epoch >= 1)
        nxt = manager.submit(tiny_config(color_folders, epochs=2))
        pid = manager.executor.pids()["cpu"]
        assert pid != os.getpid()  # training is not in this process
        os.kill(pid, signal.SIGKILL)
        snap = manager.wait(doomed, timeout=30)
        assert snap.status == "failed"
        assert "the training process died: signal 9" in snap.error.lower()
        assert Run(snap.run_dir).status()["status"] == "failed"
        done = manager.wait(nxt, timeout=90)
        assert done.status == "completed", done.error
        assert [h["epoch"] for h in done.history] == [1, 2]
        assert manager.executor.restarts == 1 and manager.executor.pids()["cpu"] != pid
    finally:
        manager.shutdown()


def test_worker_process_reports_progress_and_stops(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager(executor="process")
    try:
        job = manager.submit(long_job(color_folders))
        wait_for(lambda: len(manager.snapshot(job).history) >= 2)  # epochs ended, not begun
        snap = manager.stop(job)
        assert snap.status == "stopping"
        snap = manager.wait(job, timeout=30)
        assert snap.status == "stopped" and 2 <= len(snap.history) < 200
        assert Run(snap.run_dir).weights_path.exists()
    finally:
        manager.shutdown()


# -- the room board --------------------------------------------------------------------------
def test_room_board_shares_only_what_was_shared(studio_home: Path, color_folders: Path) -> None:
    manager = JobManager()
    alice, bob = manager.workspaces.create("Alice"), manager.workspaces.create("Bob")
    shared = manager.wait(manager.submit(tiny_config(color_folders, epochs=2), workspace=alice.id), 60)
    private = manager.wait(manager.submit(tiny_config(color_folders, epochs=1), workspace=bob.id), 60)
    board = RoomBoard()
    assert board.leaderboard().empty
    entry = board.share(alice.id, shared.run_id)
    assert board.share(alice.id, shared.run_id) == entry  # sharing twice is one entry
    table = board.leaderboard()
    assert list(table["who"]) == ["Alice"] and table.loc[0, "rank"] == 1
    assert board.run(entry.entry_id).id == shared.run_id
    with pytest.raises(NotFound):
        board.run("made-up")
    with pytest.raises(NotFound):
        board.share(alice.id, private.run_id)  # a run from another workspace is not Alice's
    results = room_results()
    assert set(results["who"]) == {"Alice", "Bob"} and len(results) == 2
    assert "val accuracy" in results.to_csv(index=False)
    board.unshare(entry.entry_id)
    assert board.entries() == []


def test_run_labels_tell_runs_apart(studio_home: Path) -> None:
    store = WorkspaceStore()
    run = store.runs(SOLO).create(
        {
            "backbone": "efficientnet_lite0",
            "strategy": "fine-tune-top",
            "data": "/x/uploads/3032ad7f2bf61e6c-hymenoptera.zip",
            "data_label": "hymenoptera.zip",
        }
    )
    run.write_status("completed", best_val_acc=0.9412, epochs_run=3)
    label = run.summary().label
    assert label.startswith("hymenoptera.zip · fine-tune-top · 94.1% · ") and "3032ad7f" not in label


# -- the manager's bookkeeping, with an executor the test drives --------------------------------
class ScriptedExecutor:
    """Starts nothing: the test plays the worker's part by sending events."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.on_event = None
        self.fail_starts = False

    def start(self, spec, on_event) -> None:
        if self.fail_starts:
            raise RuntimeError("the executor was shut down")
        self.started.append(spec.job_id)
        self.on_event = on_event

    def stop(self, job_id: str) -> None: ...

    def warm(self, device: str, on_event) -> None: ...

    def describe(self) -> list:
        return []

    def shutdown(self) -> None: ...


def test_a_done_event_without_a_status_still_ends_the_job_and_moves_the_queue(
    studio_home: Path, color_folders: Path
) -> None:
    executor = ScriptedExecutor()
    manager = JobManager(executor=executor)
    first = manager.submit(tiny_config(color_folders, seed=1))
    second = manager.submit(tiny_config(color_folders, seed=2))
    executor.on_event(first, {"type": "done", "fields": {}})
    snap = manager.wait(first, timeout=1)
    assert snap.status == "failed" and snap.error and snap.finished_at
    assert executor.started == [first, second]  # the next job started


def test_queue_wait_counts_down_and_time_limited_jobs_count_towards_it(
    studio_home: Path, color_folders: Path
) -> None:
    executor = ScriptedExecutor()
    manager = JobManager(executor=executor)
    first = manager.submit(tiny_config(color_folders, seed=1))
    time.sleep(3)  # the first job "trains" for 3 s
    executor.on_event(
        first, {"type": "done", "fields": {"status": "stopped", "stage": "stopped at the time limit"}}
    )
    blocker = manager.submit(tiny_config(color_folders, seed=2))
    queued = manager.submit(tiny_config(color_folders, seed=3))
    before = manager.snapshot(queued).wait_s
    assert before is not None  # the time-limited job taught it how long jobs take
    time.sleep(1.1)
    after = manager.snapshot(queued).wait_s
    assert after is not None and after <= before - 1.0
    assert manager.snapshot(blocker).status == "running"


def test_a_job_that_cannot_start_fails_alone(studio_home: Path, color_folders: Path) -> None:
    executor = ScriptedExecutor()
    manager = JobManager(executor=executor)
    executor.fail_starts = True
    doomed = manager.submit(tiny_config(color_folders, seed=1))
    assert manager.wait(doomed, timeout=1).status == "failed"
    executor.fail_starts = False
    fine = manager.submit(tiny_config(color_folders, seed=2))
    assert manager.snapshot(fine).status == "running" and executor.started == [fine]


def test_a_stale_ticket_left_by_a_dead_waiter_does_not_block(studio_home: Path) -> None:
    lock = DeviceLock("cpu", poll_s=0.02)
    lock.root.mkdir(parents=True, exist_ok=True)
    stale = lock.root / "cpu.wait.00000000000000000001.deadbeef"
    stale.touch()  # nobody holds it: its waiter died (or the machine restarted)
    stop = threading.Event()
    timer = threading.Timer(5, stop.set)
    timer.start()
    try:
        assert lock.acquire(stop=stop)
    finally:
        timer.cancel()
        lock.release()
    assert not stale.exists()


def test_a_group_larger_than_the_quota_says_so_and_a_failed_group_leaves_nothing(
    studio_home: Path, color_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = JobManager(max_queued_per_workspace=2)
    ws = manager.workspaces.create("Solo")
    trio = [tiny_config(color_folders, seed=s) for s in (1, 2, 3)]
    with pytest.raises(QuotaExceeded, match="queues 3 runs at once"):
        manager.submit_many(trio, workspace=ws.id)
    from tl_core.runs import RunStore

    real_create, calls = RunStore.create, []

    def full_disk(self: RunStore, config: dict, kind: str = "train"):
        calls.append(config)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_create(self, config, kind)

    monkeypatch.setattr(RunStore, "create", full_disk)
    with pytest.raises(OSError):
        manager.submit_many(trio[:2], workspace=ws.id)
    assert manager.jobs(ws.id) == [] and manager.runs(ws.id).list() == []
