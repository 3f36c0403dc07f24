"""The runs table and curves (engine), and the Runs page: compare and delete (AppTest)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from tl_core.run_table import COLUMNS, curve, runs_frame
from tl_core.runs import Run, RunStore
from ui.experiments import runs_table_key

ROOT = Path(__file__).resolve().parents[1]


def epochs(accs: list[float], seconds: float = 2.0) -> list[dict]:
    return [
        {
            "epoch": i + 1,
            "val_acc": a,
            "val_loss": 1 - a,
            "train_acc": a,
            "train_loss": 1 - a,
            "seconds": seconds,
        }
        for i, a in enumerate(accs)
    ]


def finished_run(
    store: RunStore,
    strategy: str = "fine-tune-top",
    accs: tuple[float, ...] = (0.5, 0.8),
    reason: str = "completed",
    feature_cache: bool = False,
    wall_s: float = 4.0,
    group: str = "",
    kind: str = "train",
) -> Run:
    """A run folder as a finished job leaves it (config, metrics, status with its result)."""
    run = store.create(
        {"data": "/x/digits", "data_label": "digits", "backbone": "efficientnet_lite0", "strategy": strategy}
        | {"group": group},
        kind=kind,
    )
    for record in epochs(list(accs)):
        run.append_metrics(record)
    result = {
        "status": reason,
        "wall_s": wall_s,
        "trainable_params": 250,
        "total_params": 1000,
        "device": "CPU (2 threads)",
        "feature_cache": feature_cache,
    }
    run.write_status(
        "completed" if reason in ("completed", "early-stopped") else "stopped",
        best_val_acc=max(accs),
        epochs_run=len(accs),
        result=result,
        started_at=100.0,
        finished_at=112.5,
    )
    return run


def test_runs_frame_rows_are_numbers_from_the_run_folders(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    done = finished_run(store, group="pretraining-0123abcd")
    cut = finished_run(store, strategy="from-scratch", accs=(0.2,), reason="time-limit")
    running = store.create({"data": "digits", "strategy": "gradual"})
    running.write_status("running")
    finished_run(store, kind="lr-find")
    frame = runs_frame(store.list())
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 3  # the LR range test has no accuracy to compare
    rows = {r["run"]: r for r in frame.to_dict("records")}
    assert rows[done.id]["trainable %"] == 0.25
    assert rows[done.id]["val accuracy"] == 0.8
    assert rows[done.id]["wall time (s)"] == 12.5
    assert rows[done.id]["device"] == "CPU (2 threads)"
    assert rows[done.id]["experiment"] == "Does pretraining help?"
    assert rows[cut.id]["status"] == "stopped (time limit)"
    assert rows[running.id]["status"] == "running"
    assert math.isnan(rows[running.id]["trainable %"]) and math.isnan(rows[running.id]["val accuracy"])
    assert frame["val accuracy"].dtype.kind == "f"  # numeric, so the column sorts as numbers


def test_curve_counts_feature_caching_as_training_time() -> None:
    """A cached-feature run spends its first seconds computing features; a cut run's unfinished
    last epoch must not shift its curve."""
    history = epochs([0.5, 0.9], seconds=0.5)
    cached = curve("fe", history, {"feature_cache": True, "wall_s": 11.0, "status": "completed"})
    assert cached.seconds == [10.5, 11.0] and cached.epochs == [1, 2] and not cached.cut
    cut = curve("scratch", history, {"feature_cache": False, "wall_s": 30.0, "status": "time-limit"})
    assert cut.seconds == [0.5, 1.0] and cut.cut
    assert curve("live", history).seconds == [0.5, 1.0]


def test_overlay_chart_has_one_trace_per_run_and_a_budget_line() -> None:
    from tl_core.charts import overlay_curves

    a = curve("a", epochs([0.5, 0.9]))
    b = curve("b", epochs([0.1]), {"status": "time-limit"})
    fig = overlay_curves([a, b], chance=0.1, budget_s=30)
    assert [t.name for t in fig.data] == ["a", "b (cut at the budget)"]
    assert list(fig.data[0].x) == [2.0, 4.0]
    assert fig.layout.xaxis.title.text == "seconds of training"
    assert len(fig.layout.shapes) == 2  # chance and budget
    by_epoch = overlay_curves([a], x="epochs")
    assert list(by_epoch.data[0].x) == [1, 2] and len(by_epoch.layout.shapes) == 0


# -- the Runs page ---------------------------------------------------------------------------------
@pytest.fixture
def app_home(studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    from tl_core import jobs
    from tl_core.executors import ThreadExecutor

    for var in ("TL_STUDIO_WORKSHOP", "TL_STUDIO_INSTRUCTOR_TOKEN", "TL_STUDIO_JOB_TIME_LIMIT_MIN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(jobs, "ProcessExecutor", ThreadExecutor)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import ui

    yield studio_home
    ui._manager.clear()


def runs_page(**state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/runs.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_runs_page_compares_and_deletes_after_confirmation(app_home: Path) -> None:
    from tl_core.workspaces import SOLO, WorkspaceStore

    store = WorkspaceStore().runs(SOLO)
    old, new = finished_run(store), finished_run(store, strategy="feature-extraction", accs=(0.9,))
    at = runs_page()
    assert at.title[0].value == "Runs"
    table = at.dataframe[0].value
    assert set(table["run"]) == {old.id, new.id}
    assert any("Tick one or more runs" in i.value for i in at.info)

    # Select both: their curves overlay; deleting needs a single run.
    key = runs_table_key(list(table["run"]))
    at = runs_page(**{key: {"selection": {"rows": [0, 1], "columns": []}}})
    assert len(at.get("plotly_chart")) == 1
    assert any("Tick a single run to delete it" in c.value for c in at.caption)

    row = list(table["run"]).index(old.id)
    at = runs_page(**{key: {"selection": {"rows": [row], "columns": []}}})
    delete = next(b for b in at.button if b.label == "Delete run")
    assert delete.disabled  # nothing happens without the confirmation
    assert any(old.id[-6:] in m.value for m in at.markdown)  # the box names the run
    at.checkbox(key=f"confirm-delete-{old.id}").check().run()
    next(b for b in at.button if b.label == "Delete run").click().run()
    assert not at.exception, at.exception
    assert not old.dir.exists() and new.dir.exists()
    assert any("Deleted" in s.value for s in at.success)
    assert list(at.dataframe[0].value["run"]) == [new.id]


def test_runs_page_refuses_to_delete_an_active_run(app_home: Path) -> None:
    from tl_core.workspaces import SOLO, WorkspaceStore

    store = WorkspaceStore().runs(SOLO)
    run = finished_run(store)
    run.write_status("running")  # this process's: really active
    at = runs_page(**{runs_table_key([run.id]): {"selection": {"rows": [0], "columns": []}}})
    at.checkbox(key=f"confirm-delete-{run.id}").check().run()
    next(b for b in at.button if b.label == "Delete run").click().run()
    assert any("still running: stop it first" in e.value for e in at.error)
    assert run.dir.is_dir()


def test_runs_page_without_runs_points_to_training(app_home: Path) -> None:
    at = runs_page()
    assert any("No training run yet" in i.value for i in at.info)


def test_runs_page_lists_only_this_workspace(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from tl_core.workspaces import WorkspaceStore

    monkeypatch.setenv("TL_STUDIO_WORKSHOP", "1")
    workspaces = WorkspaceStore()
    ada, eve = workspaces.create("Ada").id, workspaces.create("Eve").id
    mine = finished_run(workspaces.runs(ada))
    finished_run(workspaces.runs(eve))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["ws"] = ada
    at.run()
    at.switch_page("pages/runs.py")
    at.run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["run"]) == [mine.id]
