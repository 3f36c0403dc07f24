"""Experiments: the runs each one queues, verdicts from measured numbers (made-up and real),
the manifest that finds an experiment again, and the Lessons page (AppTest)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from tl_core import experiments
from tl_core.config import TrainConfig
from tl_core.errors import NotFound
from tl_core.experiments import (
    FEATURE_EXTRACTION,
    FINE_TUNE_TOP,
    FROM_SCRATCH,
    HIGH_LR,
    RECOMMENDED_LR,
    ExperimentRun,
    forgetting_verdict,
    pretraining_verdict,
)

ROOT = Path(__file__).resolve().parents[1]


def history(accs: list[float], seconds: float = 1.0) -> list[dict]:
    return [
        {"epoch": i + 1, "val_acc": a, "val_loss": 1.0 - a, "seconds": seconds} for i, a in enumerate(accs)
    ]


def measured(
    label: str, accs: list[float], reason: str = "completed", seconds: float = 1.0, **kw
) -> ExperimentRun:
    status = "completed" if reason in ("completed", "early-stopped") else "stopped"
    return ExperimentRun(
        label=label,
        run_id=label,
        status=kw.pop("status", status),
        history=history(accs, seconds),
        result={"status": reason, "feature_cache": False, "wall_s": seconds * len(accs)},
        **kw,
    )


# -- what each experiment queues ------------------------------------------------------------------
def test_pretraining_runs_share_data_and_backbone_and_use_strategy_defaults() -> None:
    mine = TrainConfig(
        data="/photos",
        data_label="photos.zip",
        backbone="efficientnet_lite0",
        strategy="gradual",
        weights="none",
        epochs=3,
        lr=0.05,
        image_size=96,
        seed=7,
        augment="strong",
        unfreeze=["stage 6"],
        group_lrs={"head": 0.05},
    )
    runs = experiments.pretraining_runs(mine)
    assert [label for label, _ in runs] == [FEATURE_EXTRACTION, FINE_TUNE_TOP, FROM_SCRATCH]
    for _, c in runs:
        assert (c.data, c.data_label, c.backbone, c.image_size, c.seed) == (
            "/photos",
            "photos.zip",
            "efficientnet_lite0",
            96,
            7,
        )
        assert (c.augment, c.unfreeze, c.group_lrs) == ("none", None, {})  # the strategy's defaults
    fe, ft, scratch = (c.resolved() for _, c in runs)
    assert (fe.strategy, fe.weights, fe.epochs) == (
        "feature-extraction",
        "auto",
        TrainConfig(strategy="feature-extraction").resolved().epochs,
    )
    assert (ft.strategy, ft.weights) == ("fine-tune-top", "auto")  # pretrained, though I chose none
    assert (scratch.strategy, scratch.weights, scratch.patience) == ("from-scratch", "none", None)
    assert scratch.epochs == experiments.FROM_SCRATCH_EPOCHS  # only the budget ends it


def test_forgetting_runs_differ_only_in_learning_rate() -> None:
    mine = TrainConfig(strategy="feature-extraction", lr=0.02, group_lrs={"head": 0.02})
    (low_label, low), (high_label, high) = experiments.forgetting_runs(mine)
    assert (low_label, high_label) == (RECOMMENDED_LR, HIGH_LR)
    recommended = TrainConfig(strategy="fine-tune-top").resolved().lr
    assert low.lr == recommended and high.lr == pytest.approx(recommended * experiments.LR_FACTOR)
    assert low.group_lrs == {} and high.group_lrs == {}  # the backbone's LRs follow the head's
    assert {low.strategy, high.strategy} == {"fine-tune-top"}
    assert low.to_dict() | {"lr": None} == high.to_dict() | {"lr": None}


# -- verdicts over made-up numbers ---------------------------------------------------------------
def test_pretraining_verdict_quotes_the_numbers_and_the_budget() -> None:
    runs = [
        measured(FEATURE_EXTRACTION, [0.90, 0.941], seconds=7.0),
        measured(FINE_TUNE_TOP, [0.85, 0.93, 0.955], reason="time-limit", seconds=25.0),
        measured(FROM_SCRATCH, [0.3, 0.5, 0.65], reason="time-limit", seconds=100.0),
    ]
    text = pretraining_verdict(runs, 300.0, 2)
    assert "Feature extraction reached **94.1%** after 14 s of training (epoch 2)" in text
    assert "Fine-tune top reached **95.5%** after 75 s" in text
    assert "reached **65.0%** after 5.0 min of training (epoch 3)" in text
    assert "The 5 min budget cut it after 3 epochs while still improving." in text
    assert "Guessing would score 50.0% (2 classes)" in text
    assert "**Pretraining helped:** fine-tune top beat from scratch by 30.5 points" in text
    assert (
        "passed from scratch's best (65.0%) after 25 s of training, where from scratch needed 5.0 min" in text
    )
    assert "From scratch might climb further with more time" in text  # its last epoch was its best
    runs[2] = measured(FROM_SCRATCH, [0.3, 0.65, 0.6], reason="time-limit", seconds=100.0)
    assert "might climb further" not in pretraining_verdict(runs, 300.0, 2)  # it had levelled off


def test_pretraining_verdict_says_so_when_from_scratch_wins() -> None:
    runs = [
        measured(FEATURE_EXTRACTION, [0.70], seconds=3.0),
        measured(FINE_TUNE_TOP, [0.72, 0.74], reason="early-stopped"),
        measured(FROM_SCRATCH, [0.80, 0.97], reason="time-limit", seconds=15.0),
    ]
    text = pretraining_verdict(runs, 30.0, 10)
    assert "**From scratch won** on this data, by 23.0 points over fine-tune top" in text
    assert "Pretraining helped" not in text
    assert "Early stopping ended it after 2 epochs" in text
    assert "The 30 s budget cut it after 2 epochs while still improving." in text


def test_pretraining_verdict_calls_close_results_even() -> None:
    runs = [
        measured(FEATURE_EXTRACTION, [0.95], seconds=5.0),
        measured(FROM_SCRATCH, [0.5, 0.94], reason="time-limit", seconds=20.0),
    ]
    text = pretraining_verdict(runs, 60.0, 3)
    assert "**About even:** from scratch came within 1.0 points of feature extraction" in text
    assert "it still got there sooner (5 s against 40 s)" in text


def test_pretraining_verdict_without_comparable_numbers() -> None:
    runs = [
        measured(FEATURE_EXTRACTION, [0.9]),
        ExperimentRun(
            FINE_TUNE_TOP, "b", "failed", error="The loss became nan at epoch 1: training diverged."
        ),
        ExperimentRun(FROM_SCRATCH, "c", "stopped", result={"status": "time-limit"}),
    ]
    text = pretraining_verdict(runs, 30.0, 10)
    assert "Fine-tune top failed: The loss became nan" in text
    assert "did not finish a single epoch within the 30 s budget" in text
    assert "From scratch has no epoch to compare with: give it a longer budget." in text
    assert "helped" not in text and "won" not in text


def test_forgetting_verdict_quotes_knowledge_kept_and_accuracy() -> None:
    low = measured(RECOMMENDED_LR, [0.9, 0.95], lr=0.001, kept=0.9, kept_detail="9 of 10")
    high = measured(HIGH_LR, [0.4, 0.6], lr=0.1, kept=0.2, kept_detail="2 of 10")
    text = forgetting_verdict([low, high], 60.0, 10)
    assert "At the recommended learning rate (head LR 0.001), fine-tune top reached **95.0%**" in text
    assert "kept **90%** of its ImageNet knowledge (9 of 10)" in text
    assert "At 100× that (head LR 0.1), fine-tune top reached **60.0%**" in text and "kept **20%**" in text
    assert "**The high learning rate made it forget:** it kept 70.0 points less" in text
    assert "also cost 35.0 points of accuracy on your data" in text


def test_forgetting_verdict_when_nothing_was_measured_or_a_run_failed() -> None:
    low = measured(RECOMMENDED_LR, [0.9], lr=0.001)
    high = measured(HIGH_LR, [0.91], lr=0.1)
    text = forgetting_verdict([low, high], 60.0, 10)
    assert "ImageNet knowledge kept was not measured for these runs" in text
    assert "Accuracy on your data was about the same." in text
    better = measured(HIGH_LR, [0.8, 0.99], lr=0.1, kept=0.0, kept_detail="0 of 112")
    kept = measured(RECOMMENDED_LR, [0.967], lr=0.001, kept=0.8, kept_detail="90 of 112")
    text = forgetting_verdict([kept, better], 60.0, 10)
    assert "it kept 80.0 points less" in text and "scored 2.3 points higher" in text
    failed = ExperimentRun(HIGH_LR, "h", "failed", lr=0.1, error="The loss became nan: training diverged.")
    text = forgetting_verdict([low, failed], 60.0, 10)
    assert "At 100× that (head LR 0.1) the run failed: The loss became nan" in text


def test_status_lines() -> None:
    queued = ExperimentRun(FROM_SCRATCH, "a", "queued", queue_position=2)
    assert experiments.status_line(queued) == "waiting, number 2 in the queue"
    caching = ExperimentRun(
        FEATURE_EXTRACTION, "b", "running", stage="caching train features 3/9", started_at=1.0
    )
    assert experiments.status_line(caching, now=13.0) == "caching train features 3/9 · 0:12 since it started"
    running = measured(FINE_TUNE_TOP, [0.5, 0.7], status="running", started_at=100.0)
    assert (
        experiments.status_line(running, now=165.0)
        == "training epoch 3 · kept so far 70.0% (epoch 2) · 1:05 since it started"
    )
    done = measured(FROM_SCRATCH, [0.5], reason="time-limit")
    assert experiments.status_line(done) == "cut at the budget after 1 epoch: kept 50.0% (epoch 1)"
    empty = ExperimentRun(FROM_SCRATCH, "c", "stopped", result={"status": "time-limit"})
    assert experiments.status_line(empty) == "cut at the budget before its first epoch ended"


# -- a real experiment through the job manager -----------------------------------------------------
def test_real_pretraining_experiment_through_the_job_manager(studio_home: Path, tmp_path: Path) -> None:
    from conftest import make_class_folders
    from tl_core.jobs import JobManager

    data = make_class_folders(tmp_path / "colors", {"red": 6, "blue": 6})
    manager = JobManager(executor="thread")
    cfg = tiny_config(data, data_label="colors")
    record = experiments.start(manager, "solo", "pretraining", cfg, budget_s=6.0, request_id="tab:1")
    again = experiments.start(manager, "solo", "pretraining", cfg, budget_s=6.0, request_id="tab:1")
    assert again.group == record.group  # a double click queues once
    snaps = [s for s in manager.jobs("solo") if s.group == record.group]
    assert len(snaps) == 3 and {s.time_limit_s for s in snaps} == {6.0}
    for snap in snaps:
        manager.wait(snap.job_id, timeout=120)

    # Read back as after a refresh: only the run folders and the manifest.
    store = manager.runs("solo")
    [found] = experiments.list_records(store)
    assert (found.group, found.experiment, found.budget_s) == (record.group, "pretraining", 6.0)
    view = experiments.collect(store, found)
    assert [r.label for r in view.runs] == [FEATURE_EXTRACTION, FINE_TUNE_TOP, FROM_SCRATCH]
    assert view.finished and view.n_classes == 2
    scratch = view.runs[2]
    assert scratch.cut  # 1000 epochs: the budget, not the epoch count, ended it
    assert any(r.trained for r in view.runs)
    text = view.verdict()
    assert text is not None
    for run in view.runs:
        if run.trained:
            assert f"**{run.best_acc:.1%}**" in text  # the run's own number, not a canned one
    assert "Guessing would score 50.0% (2 classes)" in text
    assert "The 6 s budget cut it" in text or "did not finish a single epoch within the 6 s budget" in text
    assert {s.group for s in store.list()} == {record.group}
    manager.shutdown()


def test_stopping_an_experiment_stops_all_its_runs_and_a_deleted_run_means_no_verdict(
    studio_home: Path, tmp_path: Path
) -> None:
    from conftest import make_class_folders
    from tl_core.jobs import JobManager

    data = make_class_folders(tmp_path / "colors", {"red": 6, "blue": 6})
    manager = JobManager(executor="thread")
    cfg = tiny_config(data, data_label="colors")
    record = experiments.start(manager, "solo", "pretraining", cfg, budget_s=120.0)
    other = manager.submit(tiny_config(data, seed=5))  # not in the experiment: keeps going
    assert manager.stop_group(record.group, "solo") == 3
    for snap in [s for s in manager.jobs("solo") if s.group == record.group]:
        assert manager.wait(snap.job_id, timeout=60).status == "stopped"
    assert manager.wait(other, timeout=120).status == "completed"

    store = manager.runs("solo")
    store.delete(record.runs[2]["run_id"])
    view = experiments.collect(store, record)
    assert view.deleted == [FROM_SCRATCH] and len(view.runs) == 2
    assert view.verdict() is not None and "No verdict" in view.verdict()


def test_unknown_or_hostile_experiment_ids_are_not_found(tmp_path: Path) -> None:
    from tl_core.runs import RunStore

    store = RunStore(tmp_path)
    for group in ("pretraining-00000000", "../../etc/passwd", "", "Pretraining-zz"):
        with pytest.raises(NotFound):
            experiments.load_record(store, group)
    assert experiments.list_records(store) == []
    assert experiments.group_title("pretraining-0123abcd") == "Does pretraining help?"
    assert experiments.group_title("") == ""


def test_plan_rows_and_total_time() -> None:
    rows = experiments.plan_rows("pretraining", TrainConfig(data="digits"))
    assert [r["starts from"] for r in rows] == ["pretrained weights"] * 2 + ["random weights"]
    assert rows[2]["epochs"] == "until the budget"
    assert [r["backbone LR"] for r in rows] == [
        "frozen",
        "0.0001 at the top, less below",
        "0.001, every layer",
    ]
    text = experiments.total_text(3, 120.0)
    assert text.startswith("3 runs of at most 2 min each: up to 6 min in all")
    assert "This room stops every job after 1 min" in experiments.total_text(3, 120.0, room_limit_s=60.0)


# -- the Lessons page -------------------------------------------------------------------------------
@pytest.fixture
def app_home(studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    from tl_core import jobs
    from tl_core.executors import ThreadExecutor

    for var in ("TL_STUDIO_WORKSHOP", "TL_STUDIO_INSTRUCTOR_TOKEN", "TL_STUDIO_JOB_TIME_LIMIT_MIN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(jobs, "ProcessExecutor", ThreadExecutor)
    monkeypatch.setattr(experiments, "BUDGETS_S", (3.0, 60.0))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import ui

    yield studio_home
    ui._manager.clear()


def lessons_page(color_folders: Path | None, **query: str):
    """The Lessons page in a new session; with no data chosen when ``color_folders`` is None."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    if color_folders is not None:
        at.session_state["data_source"] = str(color_folders)
        at.session_state["config"] = tiny_config(color_folders, data_label="colors").to_dict()
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    at.switch_page("pages/lessons.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_lessons_page_queues_an_experiment(app_home: Path, color_folders: Path) -> None:
    import ui

    at = lessons_page(color_folders)
    assert at.title[0].value == "Lessons"
    assert at.radio(key="lesson").options == [
        "Does pretraining help?",
        "Does a high learning rate make it forget?",
    ]
    assert list(at.dataframe[0].value["run"]) == [FEATURE_EXTRACTION, FINE_TUNE_TOP, FROM_SCRATCH]
    assert any("3 runs of at most 3 s each" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Run the experiment").click().run()
    assert not at.exception, at.exception
    group = at.session_state["exp"]
    assert at.query_params["exp"] in (group, [group])
    manager = ui.job_manager()
    jobs = [s for s in manager.jobs("solo") if s.group == group]
    assert [s.strategy for s in jobs] == ["feature-extraction", "fine-tune-top", "from-scratch"]
    assert {s.time_limit_s for s in jobs} == {3.0}
    assert any(m.value.startswith("**from scratch**:") for m in at.markdown)
    assert any(b.label == "Stop this experiment" for b in at.button)
    for snap in jobs:
        manager.stop(snap.job_id, "solo")
    for snap in jobs:
        manager.wait(snap.job_id, timeout=120)


def test_lessons_page_shows_a_finished_experiment_after_a_refresh(
    app_home: Path, color_folders: Path
) -> None:
    """A new session with ``?exp=`` in the URL: the verdict is rebuilt from the run folders."""
    import time

    from tl_core.workspaces import SOLO, WorkspaceStore

    store = WorkspaceStore().runs(SOLO)
    refs = []
    for label, strategy, accs, reason in (
        (FEATURE_EXTRACTION, "feature-extraction", [0.91, 0.934], "completed"),
        (FINE_TUNE_TOP, "fine-tune-top", [0.95], "time-limit"),
        (FROM_SCRATCH, "from-scratch", [0.2, 0.412], "time-limit"),
    ):
        cfg = tiny_config(color_folders, data_label="colors", strategy=strategy, group="pretraining-0123abcd")
        run = store.create(cfg.to_dict())
        for record in history(accs):
            run.append_metrics(record)
        run.write_json("labels.json", ["blue", "green", "red"])
        run.write_status("stopped", result={"status": reason, "wall_s": 2.0, "feature_cache": False})
        refs.append({"run_id": run.id, "label": label})
    experiments.save_record(
        store,
        experiments.ExperimentRecord(
            group="pretraining-0123abcd",
            experiment="pretraining",
            budget_s=60.0,
            created_at=time.time(),
            runs=refs,
            data_label="colors",
            backbone="efficientnet_lite0",
        ),
    )
    at = lessons_page(None, exp="pretraining-0123abcd")  # nothing in the session but the URL
    assert at.session_state["data_source"] == str(color_folders)  # the project came back too
    assert at.session_state["config"]["group"] == ""  # a later run on the Train page is not tagged
    assert any(b.label == "Run the experiment" for b in at.button)
    verdict = next(i.value for i in at.info if "Guessing would score" in i.value)
    assert "Feature extraction reached **93.4%**" in verdict and "reached **41.2%**" in verdict
    assert "Guessing would score 33.3% (3 classes)" in verdict
    assert len(at.get("plotly_chart")) == 1
    assert at.selectbox[0].value == "pretraining-0123abcd"
    at = lessons_page(color_folders, exp="pretraining-ffffffff")  # not this workspace's
    assert any("Experiment not found" in w.value for w in at.warning)


def test_lessons_page_without_data_points_to_the_data_page(app_home: Path) -> None:
    at = lessons_page(None)
    assert any("Choose the data to learn from first" in i.value for i in at.info)
    assert not any(b.label == "Run the experiment" for b in at.button)
