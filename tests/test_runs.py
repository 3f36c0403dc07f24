from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tl_core.errors import TLError
from tl_core.runs import Run, RunStore


def test_create_list_and_reload(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = store.create({"backbone": "resnet18", "strategy": "feature-extraction", "data": "digits"})
    b = store.create({"backbone": "efficientnet_lite0", "strategy": "gradual", "data": "x"})
    b.write_status("completed", best_val_acc=0.9, epochs_run=4)
    listed = RunStore(tmp_path).list()  # a "new process" view of the same folder
    assert {r.run_id for r in listed} == {a.id, b.id}
    summary = {r.run_id: r for r in listed}[b.id]
    assert (summary.status, summary.best_val_acc, summary.epochs_run, summary.strategy) == (
        "completed",
        0.9,
        4,
        "gradual",
    )
    assert store.get(a.id).dir == a.dir
    with pytest.raises(TLError):
        store.get("../../etc")


def test_run_of_a_dead_process_shows_interrupted(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create({"backbone": "resnet18"})
    # Another process marks it running, then dies without a final status.
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); from tl_core.runs import Run; "
        "Run(sys.argv[1]).write_status('running')"
    )
    subprocess.run([sys.executable, "-c", code, str(run.dir), str(Path(__file__).parents[1])], check=True)
    assert json.loads(run.status_path.read_text())["status"] == "running"
    st = run.status()
    assert st["status"] == "interrupted" and "ended before it finished" in st["error"]
    assert RunStore(tmp_path).list()[0].status == "interrupted"


def test_own_running_run_stays_running(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create({})
    run.write_status("running")
    assert run.status()["status"] == "running"


def test_metrics_tolerate_a_torn_last_line(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create({})
    run.append_metrics({"epoch": 1, "val_acc": 0.5})
    with run.metrics_path.open("a") as fh:
        fh.write('{"epoch": 2, "val_a')  # power cut mid-write
    assert run.metrics() == [{"epoch": 1, "val_acc": 0.5}]


def test_weights_round_trip_atomically(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create({})
    with pytest.raises(TLError, match="no saved weights"):
        run.load_weights()
    run.save_weights({"w": torch.ones(2, 2)}, metadata={"classes": "a,b"})
    assert torch.equal(run.load_weights()["w"], torch.ones(2, 2))
    assert sorted(p.name for p in run.dir.iterdir()) == ["best.safetensors", "config.json", "status.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.write_json("status.json", {"status": "completed"})
    with pytest.raises(TypeError):
        from tl_core.fsutil import write_atomic

        write_atomic(run.status_path, 12345)  # type: ignore[arg-type]
    assert json.loads(run.status_path.read_text()) == {"status": "completed"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_delete_removes_a_finished_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    keep = store.create({"backbone": "resnet18"})
    gone = store.create({"backbone": "resnet18"})
    gone.write_status("completed", best_val_acc=0.8, epochs_run=2)
    keep.write_status("stopped")
    gone.save_weights({"w": torch.ones(1)})
    store.delete(gone.id)
    assert [r.run_id for r in store.list()] == [keep.id]
    assert sorted(p.name for p in tmp_path.iterdir()) == [keep.id]  # no tombstone left
    with pytest.raises(TLError, match="No run"):
        store.get(gone.id)
    with pytest.raises(TLError, match="No run"):
        store.delete(gone.id)


def test_delete_refuses_an_active_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    queued = store.create({})  # a new run is "queued" by this process
    with pytest.raises(TLError, match="still queued: stop it first"):
        store.delete(queued.id)
    queued.write_status("running")
    with pytest.raises(TLError, match="still running"):
        store.delete(queued.id)
    assert store.get(queued.id).dir.is_dir()
    queued.write_status("stopped")
    store.delete(queued.id)
    assert store.list() == []


def test_half_deleted_run_never_shows(tmp_path: Path) -> None:
    """A crash after the rename but before the removal leaves a hidden tombstone: it is not a
    run, can't be opened, and the next delete sweeps it."""
    store = RunStore(tmp_path)
    a, b = store.create({}), store.create({})
    a.write_status("completed")
    b.write_status("completed")
    tomb = tmp_path / f".deleted-{a.id}-abc123"
    a.dir.rename(tomb)
    assert [r.run_id for r in store.list()] == [b.id]
    with pytest.raises(TLError):
        store.get(tomb.name)
    store.delete(b.id)
    assert list(tmp_path.iterdir()) == []


def test_a_finished_run_reads_back_typed_and_rebuilds_its_model(
    studio_home: Path, color_folders: Path
) -> None:
    import threading

    from conftest import tiny_config
    from tl_core.backbones import BackboneInfo
    from tl_core.config import TrainConfig
    from tl_core.data import DatasetProfile
    from tl_core.inference import rebuild_model
    from tl_core.runner import JobSpec, run_job
    from tl_core.runs import RunStatus

    cfg = tiny_config(color_folders, epochs=1).resolved()
    run = RunStore().create(cfg.to_dict())
    run_job(JobSpec("job", cfg.to_dict(), str(run.dir), "cpu"), lambda e: None, threading.Event())
    assert run.status()["status"] == RunStatus.COMPLETED == "completed"
    assert isinstance(run.config(), TrainConfig) and run.config().backbone == cfg.backbone
    assert run.labels() == ["blue", "green", "red"]
    split = run.split()
    assert sum(len(v) for v in split.values()) == 36 and all(isinstance(i, int) for _, i in split["train"])
    assert isinstance(run.backbone(), BackboneInfo) and run.backbone().weights == "none"
    profile = run.profile()
    assert isinstance(profile, DatasetProfile) and profile.n_train == len(split["train"])
    assert run.data_config()["input_size"] == (3, 32, 32)
    saved = run.load_weights()
    kept = rebuild_model(run).state_dict()
    assert all(torch.equal(kept[k], v) for k, v in saved.items())
    fresh = rebuild_model(run, weights=False)
    assert not fresh.training and any(not torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())


def test_a_run_that_never_started_reads_back_empty(tmp_path: Path) -> None:
    from tl_core.inference import rebuild_model

    run = RunStore(tmp_path).create({"backbone": "resnet18"})
    assert run.labels() == [] and run.split() == {} and run.backbone() is None and run.profile() is None
    with pytest.raises(TLError, match="not a finished run"):
        rebuild_model(run)
