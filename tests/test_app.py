"""Every page under Streamlit's AppTest: runs without exception, has its key widgets, and the
wizard's recommendation follows the answers; in workshop mode, joining, private workspaces,
the instructor token and the room board. (AppTest runs no `run_every` ticks and no browser;
tests/test_e2e.py covers those.)"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `import ui`, the same module the pages import

import ui  # noqa: E402

SHARED_SAMPLES = Path(os.environ["TL_STUDIO_HOME"]) / "samples"
"""The digits sample, written once per test session instead of once per test."""
ROOM_VARS = (
    "TL_STUDIO_WORKSHOP",
    "TL_STUDIO_ROOM_CODE",
    "TL_STUDIO_INSTRUCTOR_TOKEN",
    "TL_STUDIO_ALLOW_PATHS",
    "TL_STUDIO_MAX_QUEUED",
    "TL_STUDIO_JOB_TIME_LIMIT_MIN",
    "TL_STUDIO_UPLOAD_TTL_HOURS",
)


@pytest.fixture(autouse=True)
def isolated(studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    """Its own studio home and settings per test, and jobs in threads of this process (the
    worker processes have their own tests; ``real_workers`` switches them back on)."""
    from tl_core import jobs
    from tl_core.executors import ThreadExecutor

    for var in ROOM_VARS:
        monkeypatch.delenv(var, raising=False)
    SHARED_SAMPLES.mkdir(parents=True, exist_ok=True)
    studio_home.mkdir(parents=True, exist_ok=True)
    (studio_home / "samples").symlink_to(SHARED_SAMPLES, target_is_directory=True)
    monkeypatch.setattr(jobs, "ProcessExecutor", ThreadExecutor)
    yield
    ui._manager.clear()  # shuts the test's managers down


@pytest.fixture
def real_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_core import executors, jobs

    monkeypatch.setattr(jobs, "ProcessExecutor", executors.ProcessExecutor)


@pytest.fixture
def workshop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_STUDIO_WORKSHOP", "1")


def app(**state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def not_in_navigation(at: AppTest, name: str, title: str) -> None:
    """The page can't be opened: AppTest refuses the switch, or (its page registry is
    refreshed from the pages/ folder after a widget run) the page does not render."""
    try:
        at.switch_page(f"pages/{name}.py")
    except ValueError as exc:
        assert "Could not find a navigation page" in str(exc)
        return
    at.run()
    assert not at.exception
    assert title not in [t.value for t in at.title]


def page(at: AppTest, name: str) -> AppTest:
    """Open a page as a user does: app.py runs first (it builds the navigation), then the page."""
    at.run()
    at.switch_page(f"pages/{name}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_home() -> None:
    at = app()
    at.run()
    assert not at.exception
    assert at.title[0].value == "Transfer Learning Studio"
    labels = [b.label for b in at.button]
    assert "Start with the sample dataset" in labels and "Use my own images" in labels


def test_data_page_scans_the_sample() -> None:
    at = page(app(data_source="digits"), "data")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "10" and metrics["Validation images"] == "359"
    assert at.radio[0].options[:4] == [
        "Built-in sample (digits)",
        "Built-in text sample (bbc-news)",
        "Upload a zip",
        "Upload a folder",
    ]
    assert any(b.label.startswith("Next") for b in at.button)


def test_data_page_hides_local_paths_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_STUDIO_ALLOW_PATHS", "0")
    at = page(app(), "data")
    assert "Folder on this computer" not in at.radio[0].options


def test_data_page_reports_a_bad_folder(tmp_path: Path) -> None:
    (tmp_path / "only" / "cats").mkdir(parents=True)
    at = page(app(data_choice="Folder on this computer"), "data")
    at.text_input[0].set_value(str(tmp_path / "only")).run()
    assert not at.exception
    assert any("only one class" in e.value or "no usable image" in e.value for e in at.error)


def test_strategy_override_and_answers_kept_on_a_revisit() -> None:
    at = page(app(data_source="digits"), "strategy")
    assert not at.exception
    assert at.radio(key="similarity").value == "different"
    assert any("Answered for this sample" in i.value for i in at.info)
    at.radio(key="similarity").set_value("very-similar").run()
    assert at.subheader[0].value == "Recommended: feature extraction"
    sel = at.selectbox[0]
    assert "Backbone frozen" in sel.options[0]
    sel.set_value("from-scratch").run()
    next(b for b in at.button if b.label == "Use these settings").click().run()
    assert not at.exception
    cfg = at.session_state["config"]
    assert cfg["strategy"] == "from-scratch" and cfg["weights"] == "none"
    # a visit to another page drops widget state; the user's answer is kept for this dataset
    at.switch_page("pages/backbone.py").run()
    at.switch_page("pages/strategy.py").run()
    assert at.radio(key="similarity").value == "very-similar"


def test_a_new_dataset_resets_the_answers_to_labelled_guesses(color_folders: Path) -> None:
    at = page(app(data_source="digits"), "strategy")
    at.radio(key="similarity").set_value("very-different").run()
    at.session_state["data_source"] = str(color_folders)
    at.run()
    assert not at.exception
    assert at.radio(key="similarity").value == "moderate"  # 40 px colour squares: tiny
    assert any("I guessed" in i.value for i in at.info)


def test_wizard_recommendation_follows_the_answers() -> None:
    at = page(app(data_source="digits"), "strategy")
    # The sample carries its own answers: digits are not everyday photos.
    assert at.radio(key="similarity").value == "different"
    assert any("not photos" in i.value for i in at.info)
    assert at.subheader[0].value == "Recommended: top 20%"
    assert any("Capped at the top 20%" in m.value for m in at.markdown)
    at.radio(key="similarity").set_value("very-similar").run()
    assert at.subheader[0].value == "Recommended: feature extraction"
    at.radio(key="task").set_value("simple").run()
    at.radio(key="similarity").set_value("moderate").run()
    assert at.subheader[0].value == "Recommended: feature extraction"
    at.radio(key="task").set_value("standard").run()
    at.radio(key="similarity").set_value("different").run()
    at.number_input[0].set_value(3000).run()  # enough data for "top 50%", but no GPU for 30,000 images
    assert at.subheader[0].value == "Recommended: top 20%"
    assert any("No GPU detected" in m.value for m in at.markdown)
    assert any(b.label == "Accept recommendation" for b in at.button)


def test_accepting_the_recommendation_fills_the_config() -> None:
    at = page(app(data_source="digits"), "strategy")
    at.radio(key="similarity").set_value("different").run()
    next(b for b in at.button if b.label == "Accept recommendation").click().run()
    assert not at.exception
    cfg = at.session_state["config"]
    assert cfg["strategy"] == "fine-tune-top" and cfg["unfreeze"] == ["stage 6", "stage 7"]


def test_backbone_page() -> None:
    at = page(app(data_source="digits"), "backbone")
    assert len(at.dataframe) == 1
    assert at.selectbox[0].options[0].startswith("efficientnet_lite0")
    assert any("needs download" in o for o in at.selectbox[0].options)
    assert any("Recommended" in i.value for i in at.info)


def test_backbone_page_estimates_a_fine_tune_on_a_users_folder(color_folders: Path) -> None:
    """No image size chosen (only samples suggest one): each backbone's own size is used, and a
    fine-tune without augmentation shows the once-run bottom, ViTs included (no shortcut)."""
    from dataclasses import asdict

    from tl_core.config import TrainConfig

    cfg = TrainConfig(data=str(color_folders), strategy="fine-tune-top", augment="none")
    at = page(app(data_source=str(color_folders), config=asdict(cfg)), "backbone")
    table = at.dataframe[0].value
    times = dict(zip(table["backbone"], table["time per epoch"], strict=True))
    assert ", then ≈" in times["efficientnet_lite0"]  # the frozen bottom runs once
    assert ", then" not in times["vit_small_patch16_224"]  # not a chain of modules: every epoch


def test_train_page_freeze_map_and_a_real_job(color_folders: Path, real_workers: None) -> None:
    """Through the app's real manager: the job trains in a worker process."""
    assert type(ui.job_manager().executor).__name__ == "ProcessExecutor"
    at = page(app(data_source=str(color_folders)), "train")
    assert any(m.label == "Trainable parameters" for m in at.metric)
    assert len(at.dataframe) == 1  # the editable freeze map
    start = next(b for b in at.button if b.label == "Start training")
    start.click().run()
    assert not at.exception
    job_id = at.session_state["job_id"]
    assert at.query_params["job"] in (job_id, [job_id])
    snap = ui.job_manager().wait(job_id, timeout=180)
    assert snap.status == "completed", snap.error
    at.run()
    assert any("the one kept (lowest validation loss)" in s.value for s in at.success)
    # Results and export for that run.
    at = page(at, "results")
    assert any(m.label == "Validation accuracy" for m in at.metric)
    assert len(at.dataframe) >= 1
    assert {"True class", "Predicted as"} <= {s.label for s in at.selectbox}
    at = page(at, "export")
    assert not at.exception
    assert any("bundle" in str(getattr(b, "label", "")).lower() for b in at.get("download_button"))


def test_refresh_reattaches_from_the_url(color_folders: Path) -> None:
    from tl_core.config import TrainConfig

    cfg = TrainConfig(
        data=str(color_folders), data_label="colors.zip", strategy="fine-tune-top", epochs=2, image_size=64
    )
    job_id = ui.job_manager().submit(cfg)
    at = app()
    at.query_params["job"] = job_id  # a new session, as after a browser refresh
    page(at, "train")
    assert at.session_state["job_id"] == job_id
    assert at.session_state["data_source"] == str(color_folders)
    # The sidebar tells the job's own story: its data by name, its strategy.
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "**Data:** colors.zip" in sidebar and "**Strategy:** fine-tune-top" in sidebar
    ui.job_manager().wait(job_id, timeout=120)
    time.sleep(0.1)


def test_engine_never_imports_streamlit() -> None:
    offenders = [
        p.name
        for p in (ROOT / "tl_core").rglob("*.py")
        if any(
            line.lstrip().startswith(("import streamlit", "from streamlit"))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []


def test_first_paint_does_not_import_torch() -> None:
    """Home and the sidebar must render before torch/timm (seconds of imports) load."""
    import subprocess
    import sys

    code = (
        "import sys; from streamlit.testing.v1 import AppTest; "
        "at = AppTest.from_file('app.py'); at.run(); assert not at.exception; "
        "print('torch' in sys.modules, 'timm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stderr


def test_two_sessions_queue_fairly(color_folders: Path) -> None:
    """Two tabs each start a run: the second waits its turn and says so."""
    from tl_core.config import TrainConfig

    slow = TrainConfig(
        data=str(color_folders), strategy="fine-tune-all", epochs=50, patience=None, image_size=96
    )
    first = app(data_source=str(color_folders), config=slow.to_dict())
    page(first, "train")
    next(b for b in first.button if b.label == "Start training").click().run()
    second = app(data_source=str(color_folders))
    page(second, "train")
    next(b for b in second.button if b.label == "Start training").click().run()
    manager = ui.job_manager()
    a, b = first.session_state["job_id"], second.session_state["job_id"]
    assert a != b
    assert manager.snapshot(b).status == "queued" and manager.snapshot(b).queue_position == 1
    second.run()
    assert any("number 1 in the queue" in i.value for i in second.info)
    assert any("Run:** queued (#1 in queue)" in m.value for m in second.sidebar.markdown)
    manager.stop(a)
    assert manager.wait(b, timeout=120).status == "completed"


def test_public_api_resolves() -> None:
    import tl_core

    for name in tl_core.__all__:
        assert getattr(tl_core, name) is not None, name


# -- workshop mode ----------------------------------------------------------------------------------
def trained_run(workspace: str, data_label: str, acc: float = 0.9, history: bool = False):
    """A finished run folder with (dummy) weights, made through the engine's stores."""
    from tl_core.config import TrainConfig
    from tl_core.workspaces import WorkspaceStore

    cfg = TrainConfig(data=f"/uploads/0123456789abcdef-{data_label}", data_label=data_label)
    run = WorkspaceStore().runs(workspace).create(cfg.to_dict())
    run.write_status("completed", best_val_acc=acc, epochs_run=1)
    run.weights_path.write_bytes(b"weights")
    if history:
        from tl_core.evaluation import predictions_frame, save_predictions

        run.append_metrics(
            {
                "epoch": 1,
                "phase": "head",
                "train_loss": 0.5,
                "val_loss": 0.4,
                "train_acc": 0.8,
                "val_acc": acc,
            }
        )
        run.write_json("labels.json", ["ants", "bees"])
        items = [("a.png", 0), ("b.png", 1), ("c.png", 1)]
        save_predictions(
            run, predictions_frame(items, [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], ["ants", "bees"])
        )
    return run


def joined(name: str) -> str:
    from tl_core.workspaces import WorkspaceStore

    return WorkspaceStore().create(name).id


def as_student(ws: str, **state) -> AppTest:
    at = app(**state)
    at.query_params["ws"] = ws  # the student's bookmarked link
    return at


def test_workshop_home_asks_for_a_name_and_joins(workshop: None) -> None:
    from tl_core.workspaces import WorkspaceStore

    at = app()
    at.run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Your name"]  # no room code configured
    assert "Join" in [b.label for b in at.button]
    assert "Start with the sample dataset" not in [b.label for b in at.button]
    at.text_input[0].input("Ada")
    next(b for b in at.button if b.label == "Join").click().run()
    assert not at.exception
    ws = at.session_state["ws"]
    assert at.query_params["ws"] in (ws, [ws])
    assert WorkspaceStore().get(ws).name == "Ada"
    assert any("Signed in as **Ada**" in s.value for s in at.success)
    assert {"Start with the sample dataset", "Use my own images"} <= {b.label for b in at.button}


def test_workshop_refuses_a_wrong_room_code(workshop: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_core.workspaces import WorkspaceStore

    monkeypatch.setenv("TL_STUDIO_ROOM_CODE", "otter-42")
    at = app()
    at.run()
    assert [t.label for t in at.text_input] == ["Your name", "Room code"]
    at.text_input[0].input("Eve")
    at.text_input[1].input("guess")
    next(b for b in at.button if b.label == "Join").click().run()
    assert not at.exception
    assert any("room code is not right" in e.value for e in at.error)
    assert "ws" not in at.session_state and WorkspaceStore().list() == []
    at.text_input[1].input("otter-42")
    next(b for b in at.button if b.label == "Join").click().run()
    assert WorkspaceStore().get(at.session_state["ws"]).name == "Eve"


def test_workshop_pages_ask_to_join_first(workshop: None) -> None:
    at = page(app(data_source="digits"), "train")
    assert any("Join the workshop first" in i.value for i in at.info)
    assert not any(b.label == "Start training" for b in at.button)


def test_a_bookmarked_link_restores_the_workspace(workshop: None) -> None:
    ws = joined("Grace")
    at = as_student(ws)
    at.run()
    assert at.session_state["ws"] == ws
    assert any("Signed in as **Grace**" in s.value for s in at.success)
    assert "**Student:** Grace" in [m.value for m in at.sidebar.markdown]
    stranger = as_student("x" * 24)  # well-formed, but no such workspace
    stranger.run()
    assert "Your name" in [t.label for t in stranger.text_input]


def test_workspaces_see_only_their_own_runs(workshop: None) -> None:
    alice, bob = joined("Alice"), joined("Bob")
    ants = trained_run(alice, "ants.zip", acc=0.941)
    trained_run(alice, "wasps.zip", acc=0.7)
    trained_run(bob, "bees.zip", acc=0.5)
    for name in ("results", "export"):
        at = page(as_student(alice), name)
        options = next(s for s in at.selectbox if s.label == "Run").options
        assert len(options) == 2 and all(o.startswith(("ants.zip", "wasps.zip")) for o in options)
        assert any(o.startswith("ants.zip · feature-extraction · 94.1% · ") for o in options)
        assert not any("uploads" in o or "efficientnet" in o for o in options)
        at = page(as_student(bob), name)
        options = next(s for s in at.selectbox if s.label == "Run").options
        assert len(options) == 1 and options[0].startswith("bees.zip")
    # A run id in the URL opens that run, in its own workspace only.
    at = as_student(alice)
    at.query_params["run"] = ants.id
    page(at, "results")
    assert next(s for s in at.selectbox if s.label == "Run").value == str(ants.dir)
    assert at.query_params["run"] in (ants.id, [ants.id])
    at = as_student(bob)
    at.query_params["run"] = ants.id
    page(at, "results")
    assert any("Run not found" in w.value for w in at.warning)
    assert next(s for s in at.selectbox if s.label == "Run").options[0].startswith("bees.zip")
    assert at.query_params["run"] != ants.id and at.query_params["run"] != [ants.id]


def test_untrained_runs_are_not_offered(workshop: None) -> None:
    from tl_core.workspaces import WorkspaceStore

    ws = joined("Lin")
    run = WorkspaceStore().runs(ws).create({"data": "digits", "data_label": "digits", "strategy": "gradual"})
    run.write_status("stopped", epochs_run=0)
    at = page(as_student(ws), "results")
    assert any("No trained run yet" in i.value for i in at.info)


def test_export_builds_nothing_on_page_load(workshop: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import tl_core.export as export

    def boom(*args, **kwargs):
        raise AssertionError("the bundle was built on page load")

    monkeypatch.setattr(export, "bundle_bytes", boom)
    monkeypatch.setattr(export, "training_script", boom)
    ws = joined("Kim")
    trained_run(ws, "ants.zip")
    at = page(as_student(ws), "export")
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download model bundle (.zip)", "Download train.py"]


def test_a_job_of_another_workspace_is_not_found(workshop: None, color_folders: Path) -> None:
    alice, bob = joined("Alice"), joined("Bob")
    job = ui.job_manager().submit(tiny_config(color_folders, epochs=1), workspace=alice)
    ui.job_manager().wait(job, timeout=120)
    # Bob's URL with Alice's job id: exactly like an id that never existed.
    for jid in (job, "no-such-job-0123456789"):
        at = as_student(bob, data_source="digits")
        at.query_params["job"] = jid
        page(at, "train")
        assert "job_id" not in at.session_state and "job" not in at.query_params
        assert at.query_params["ws"] in (bob, [bob])
        assert not at.get("progress") and not at.success
        assert not any("Run:" in m.value for m in at.sidebar.markdown)
    # ... and in Bob's session state.
    at = as_student(bob, data_source="digits", job_id=job)
    page(at, "train")
    assert "job_id" not in at.session_state and not at.get("progress")
    # Alice re-attaches to her own.
    at = as_student(alice)
    at.query_params["job"] = job
    page(at, "train")
    assert at.session_state["job_id"] == job
    assert any("the one kept (lowest validation loss)" in s.value for s in at.success)


def test_double_clicked_start_submits_one_job(workshop: None, color_folders: Path) -> None:
    ws = joined("Sam")
    cfg = tiny_config(color_folders, strategy="fine-tune-all", epochs=200, patience=None)
    at = page(as_student(ws, data_source=str(color_folders), config=cfg.to_dict()), "train")
    next(b for b in at.button if b.label == "Start training").click().run()
    first = at.session_state["job_id"]
    # The second click of a double click reaches the server as a second run, which can
    # interrupt the first one after it submitted but before the tab remembered the job.
    del at.session_state["job_id"]
    at.query_params.pop("job")
    at.run()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    assert at.session_state["job_id"] == first
    assert [s.job_id for s in ui.job_manager().jobs(ws)] == [first]
    ui.job_manager().stop(first, workspace=ws)


def test_quota_is_shown_as_an_error(
    workshop: None, monkeypatch: pytest.MonkeyPatch, color_folders: Path
) -> None:
    monkeypatch.setenv("TL_STUDIO_MAX_QUEUED", "1")
    monkeypatch.setenv("TL_STUDIO_JOB_TIME_LIMIT_MIN", "15")
    other, ws = joined("Busy"), joined("Max")
    slow = tiny_config(color_folders, strategy="fine-tune-all", epochs=200, patience=None)
    manager = ui.job_manager()
    running = manager.submit(slow, workspace=other)
    queued = manager.submit(slow, workspace=ws)
    at = page(as_student(ws, data_source=str(color_folders), config=slow.to_dict()), "train")
    assert any("at most 15 min" in c.value for c in at.caption)  # the room's time limit, near Start
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    assert any("waiting, the most this room allows" in e.value for e in at.error)
    manager.stop(queued)
    manager.stop(running)


def test_no_instructor_page_without_a_token(workshop: None) -> None:
    at = app(instructor=True)  # even a session that claims it
    at.run()
    assert not any(e.label == "Instructor" for e in at.get("expander"))
    assert "Instructor token" not in [t.label for t in at.text_input]
    not_in_navigation(at, "instructor", "Instructor")


def test_instructor_token(workshop: None, monkeypatch: pytest.MonkeyPatch, color_folders: Path) -> None:
    monkeypatch.setenv("TL_STUDIO_INSTRUCTOR_TOKEN", "s3cret-token")
    at = app()
    at.run()
    assert any(e.label == "Instructor" for e in at.get("expander"))
    token = next(t for t in at.text_input if t.label == "Instructor token")
    token.input("wrong")
    next(b for b in at.button if b.label == "Open the instructor view").click().run()
    assert any("token is not right" in e.value for e in at.error)
    assert at.session_state["instructor"] is False
    not_in_navigation(at, "instructor", "Instructor")

    # A student trains; the instructor sees the queue, everyone's runs and the machine.
    alice = joined("Alice")
    trained_run(alice, "ants.zip", acc=0.8)
    job = ui.job_manager().submit(
        tiny_config(color_folders, strategy="fine-tune-all", epochs=200, patience=None), workspace=alice
    )
    at = app()
    at.run()
    next(t for t in at.text_input if t.label == "Instructor token").input("s3cret-token")
    next(b for b in at.button if b.label == "Open the instructor view").click().run()
    assert at.session_state["instructor"] is True
    at = page(at, "instructor")
    assert [t.value for t in at.title] == ["Instructor"]
    subheaders = [s.value for s in at.subheader]
    assert {"Queue", "Everyone's runs", "Devices", "Share with the room"} <= set(subheaders)
    queue = at.dataframe[0].value
    assert list(queue["who"]) == ["Alice"] and "ETA" in queue.columns
    everyone = at.dataframe[1].value
    assert "workspace" not in everyone.columns and "Alice" in set(everyone["who"])
    assert "Download the room's results (CSV)" in [b.label for b in at.get("download_button")]
    # Stop anyone's job.
    assert next(s for s in at.selectbox if s.label == "Job to stop").value == job
    next(b for b in at.button if b.label == "Stop").click().run()
    assert ui.job_manager().wait(job, timeout=60).finished
    # Share a run with the room.
    ui.job_manager().wait(job, timeout=60)
    at.run()
    share = next(s for s in at.selectbox if s.label == "Run to share")
    assert any(o.startswith("Alice · ants.zip · feature-extraction · 80.0%") for o in share.options)
    share.select_index(next(i for i, o in enumerate(share.options) if "ants.zip" in o))
    next(b for b in at.button if b.label == "Share with the room").click().run()
    assert not at.exception
    assert any(b.label == "Remove" for b in at.button)


def test_room_board_empty_and_with_a_shared_run(workshop: None) -> None:
    from tl_core.room import RoomBoard

    ws = joined("Ada")
    at = page(as_student(ws), "room")
    assert any("Nothing shared yet" in i.value for i in at.info)
    run = trained_run(ws, "bees.zip", acc=0.75, history=True)
    RoomBoard().share(ws, run.id)
    at = page(as_student(joined("Bob")), "room")
    board = at.dataframe[0].value
    assert list(board.columns) == ["rank", "who", "data", "backbone", "strategy", "val accuracy"]
    assert list(board["who"]) == ["Ada"]
    assert at.selectbox[0].options[0].startswith("#1 Ada · bees.zip")
    assert len(at.get("plotly_chart")) == 2  # curves and confusion matrix
    assert any(s.value == "Confusion matrix" for s in at.subheader)


def test_solo_mode_has_no_room_pages() -> None:
    at = app()
    at.run()
    assert "Your name" not in [t.label for t in at.text_input]
    assert not any(e.label == "Instructor" for e in at.get("expander"))
    not_in_navigation(at, "room", "Room board")
    not_in_navigation(at, "instructor", "Instructor")


def test_workshop_uploads_go_to_the_workspace(workshop: None, color_folders: Path, tmp_path: Path) -> None:
    import re
    import zipfile

    from tl_core.workspaces import WorkspaceStore

    ws = joined("Uma")
    archive = tmp_path / "colors.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in color_folders.rglob("*.*"):
            zf.write(f, f.relative_to(color_folders.parent))
    at = page(as_student(ws, data_choice="Upload a zip"), "data")
    assert "Folder on this computer" not in at.radio[0].options  # students don't browse the server
    at.file_uploader[0].set_value(("colors.zip", archive.read_bytes(), "application/zip")).run()
    assert not at.exception, at.exception
    stored = Path(at.session_state["data_source"])
    assert stored.parent == WorkspaceStore().uploads_dir(ws)
    assert at.session_state["config"]["data_label"] == "colors.zip"
    assert any(m.value.startswith("**Data:** colors.zip") for m in at.sidebar.markdown)
    assert any(s.value.startswith("**colors.zip**: 3 classes") for s in at.success)
    # A broken upload is reported by the name the student gave it, not the stored one.
    at.file_uploader[0].set_value(("broken.zip", b"PK\x03\x04 not really a zip", "application/zip")).run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "broken.zip" in messages and not re.search(r"[0-9a-f]{16}-broken", messages), messages


def test_local_folders_can_be_allowed_in_a_workshop(workshop: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_STUDIO_ALLOW_PATHS", "1")
    at = page(as_student(joined("Ida")), "data")
    assert "Folder on this computer" in at.radio[0].options


def test_data_page_holds_out_a_test_split_on_request() -> None:
    at = page(app(data_source="digits"), "data")
    assert {m.label: m.value for m in at.metric}["Test images"] == "0"
    control = at.segmented_control(key="test-fraction")
    assert control.options == ["none", "10%", "15%", "20%"]
    control.set_value(0.2).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Validation images"] == "359"  # the validation split stays as it was
    assert int(metrics["Test images"]) > 250 and int(metrics["Training images"]) < 1438
    assert any("scored once at the end" in c.value for c in at.caption)


def test_text_pages_speak_of_texts(tmp_path: Path) -> None:
    """A CSV of texts: guessed columns, text wording and a text backbone, the text wizard, the
    encoder catalog, the freeze map by encoder layer."""
    from test_text import sentences, write_csv

    data = write_csv(tmp_path / "reviews.csv", sentences(10))
    at = page(app(data_source=str(data), data_choice="Upload a text file (CSV, TSV, JSONL)"), "data")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Training texts"] == "24" and metrics["Validation texts"] == "6"
    assert [s.value for s in at.selectbox][:2] == ["review", "stars"]
    assert at.session_state["config"]["backbone"] == "all-minilm-l6-v2"
    at = page(at, "strategy")
    assert "How similar are your texts to everyday written English?" in [r.label for r in at.radio]
    assert at.subheader[0].value == "Recommended: feature extraction"
    at = page(at, "backbone")
    assert list(at.dataframe[0].value["encoder"])[0] == "all-minilm-l6-v2"
    at = page(at, "train")
    names = list(at.dataframe[0].value["layer group"])
    assert names == ["embeddings", *(f"layer {i}" for i in range(1, 7)), "head"]
    assert not any("BatchNorm" in c.label for c in at.checkbox)
    pooling = next(r for r in at.radio if r.label == "Pooling")
    assert pooling.value == "mean"
    pooling.set_value("cls").run()
    assert at.session_state["config"]["model_kwargs"] == {"pooling": "cls"}


def test_an_encoder_not_on_this_machine_is_an_error_not_a_crash(tmp_path: Path) -> None:
    from dataclasses import asdict

    from test_text import sentences, write_csv

    from tl_core.config import TrainConfig

    data = write_csv(tmp_path / "reviews.csv", sentences(10))
    cfg = TrainConfig(data=str(data), backbone="distilbert-base-uncased")
    at = page(
        app(data_source=str(data), data_choice="Upload a text file (CSV, TSV, JSONL)", config=asdict(cfg)),
        "train",
    )
    assert any("prefetch distilbert-base-uncased" in e.value for e in at.error)
