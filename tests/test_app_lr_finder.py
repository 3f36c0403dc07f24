"""The LR finder on the Freeze & train page under AppTest: start it, see its curve and
suggestion, apply it to the freeze map, re-attach after a refresh, stop it while it queues.
(AppTest runs no ``run_every`` ticks; the job runs in a thread of this process.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `import ui`, the same module the pages import

import ui  # noqa: E402
from ui import lr_finder as lr_ui  # noqa: E402

FIND = "Find a learning rate"


@pytest.fixture(autouse=True)
def isolated(studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    """Its own studio home per test, solo mode, and jobs in threads of this process."""
    from tl_core import jobs
    from tl_core.executors import ThreadExecutor

    for var in ("TL_STUDIO_WORKSHOP", "TL_STUDIO_MAX_QUEUED", "TL_STUDIO_JOB_TIME_LIMIT_MIN"):
        monkeypatch.delenv(var, raising=False)
    studio_home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(jobs, "ProcessExecutor", ThreadExecutor)
    yield
    ui._manager.clear()


def train_page(**state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def head_lr_in_the_freeze_map(at: AppTest) -> float:
    table = at.dataframe[0].value
    return float(table.loc[table["layer group"] == "head", "learning rate"].iloc[0])


def test_find_a_learning_rate_then_use_it(color_folders: Path) -> None:
    cfg = tiny_config(color_folders, lr=1e-3, epochs=2)
    at = train_page(data_source=str(color_folders), config=cfg.to_dict())
    assert head_lr_in_the_freeze_map(at) == pytest.approx(1e-3)
    button(at, FIND).click().run()
    assert not at.exception, at.exception
    jid = at.session_state[lr_ui.SESSION_KEY]
    assert at.query_params[lr_ui.URL_KEY] in (jid, [jid])
    assert "job_id" not in at.session_state  # the training slot is untouched
    snap = ui.job_manager().wait(jid, timeout=120)
    assert snap.status == "completed", snap.error
    at.run()
    assert not at.exception, at.exception
    suggested = next(m.value for m in at.markdown if m.value.startswith("**Suggested head LR"))
    assert "rule: **valley**" in suggested or "rule: **steepest**" in suggested
    use = next(b for b in at.button if b.label.startswith("Use "))
    lr = float(use.label.removeprefix("Use "))
    use.click().run()
    assert not at.exception, at.exception
    assert at.session_state["config"]["lr"] == pytest.approx(lr)
    assert head_lr_in_the_freeze_map(at) == pytest.approx(lr)
    assert any(s.value.startswith("Applied: the head LR is") for s in at.success)
    assert not any(b.label.startswith("Use ") for b in at.button)
    # Training then starts from the applied LR.
    button(at, "Start training").click().run()
    assert ui.job_manager().job_config(at.session_state["job_id"]).group_lrs["head"] == pytest.approx(lr)
    ui.job_manager().wait(at.session_state["job_id"], timeout=120)


def test_a_refresh_reattaches_to_the_test(color_folders: Path) -> None:
    cfg = tiny_config(color_folders, data_label="colors.zip")
    jid = ui.job_manager().submit(cfg, kind="lr-find")
    ui.job_manager().wait(jid, timeout=120)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params[lr_ui.URL_KEY] = jid  # a new session, as after a browser refresh
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, at.exception
    assert at.session_state[lr_ui.SESSION_KEY] == jid
    assert at.session_state["data_source"] == str(color_folders)
    assert any(m.value.startswith("**Suggested head LR") for m in at.markdown)


def test_an_unknown_test_id_is_forgotten(color_folders: Path) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["data_source"] = str(color_folders)
    at.query_params[lr_ui.URL_KEY] = "not-a-job"
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception
    assert lr_ui.SESSION_KEY not in at.session_state and lr_ui.URL_KEY not in at.query_params
    assert not button(at, FIND).disabled


def test_stop_a_queued_test(color_folders: Path) -> None:
    slow = tiny_config(color_folders, strategy="fine-tune-all", epochs=50, patience=None, image_size=96)
    busy = ui.job_manager().submit(slow)
    at = train_page(data_source=str(color_folders), config=tiny_config(color_folders).to_dict())
    button(at, FIND).click().run()
    assert any("number 1 in the queue" in i.value for i in at.info)
    assert button(at, FIND).disabled  # one test at a time per tab
    button(at, "Stop the test").click().run()
    assert not at.exception, at.exception
    snap = ui.job_manager().snapshot(at.session_state[lr_ui.SESSION_KEY])
    assert snap.status == "stopped"
    at.run()
    assert any("stopped before it measured anything" in i.value for i in at.info)
    assert not button(at, FIND).disabled
    ui.job_manager().stop(busy)
    ui.job_manager().wait(busy, timeout=60)
