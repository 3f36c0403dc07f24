"""Every page under Streamlit's AppTest: runs without exception, has its key widgets, and the
wizard's recommendation follows the answers. (AppTest runs no `run_every` ticks and no browser;
tests/test_e2e.py covers those.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def app(**state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def page(at: AppTest, name: str) -> AppTest:
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
    assert at.radio[0].options[:3] == ["Built-in sample (digits)", "Upload a zip", "Upload a folder"]
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


def test_wizard_recommendation_follows_the_answers() -> None:
    at = page(app(data_source="digits"), "strategy")
    assert at.subheader[0].value == "Recommended: feature extraction"
    at.radio(key="similarity").set_value("very-different").run()
    assert at.subheader[0].value == "Recommended: top 20%"
    assert any("Capped at the top 20%" in m.value for m in at.markdown)
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


def test_train_page_freeze_map_and_a_real_job(color_folders: Path) -> None:
    from tl_core.jobs import get_job_manager

    at = page(app(data_source=str(color_folders)), "train")
    assert any(m.label == "Trainable parameters" for m in at.metric)
    assert len(at.dataframe) == 1  # the editable freeze map
    start = next(b for b in at.button if b.label == "Start training")
    start.click().run()
    assert not at.exception
    job_id = at.session_state["job_id"]
    assert at.query_params["job"] in (job_id, [job_id])
    snap = get_job_manager().wait(job_id, timeout=120)
    assert snap.status == "completed", snap.error
    at.run()
    assert any("best validation accuracy" in s.value for s in at.success)
    # Results and export for that run.
    at = page(at, "results")
    assert any(m.label == "Best validation accuracy" for m in at.metric)
    assert len(at.dataframe) >= 1
    assert {"True class", "Predicted as"} <= {s.label for s in at.selectbox}
    at = page(at, "export")
    assert not at.exception
    assert any("bundle" in str(getattr(b, "label", "")).lower() for b in at.get("download_button"))


def test_refresh_reattaches_from_the_url(color_folders: Path) -> None:
    from tl_core.config import TrainConfig
    from tl_core.jobs import get_job_manager

    job_id = get_job_manager().submit(TrainConfig(data=str(color_folders), epochs=2, image_size=64))
    at = app()
    at.query_params["job"] = job_id  # a new session, as after a browser refresh
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception
    assert at.session_state["job_id"] == job_id
    assert at.session_state["data_source"] == str(color_folders)
    get_job_manager().wait(job_id, timeout=120)
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
    from tl_core.jobs import get_job_manager

    slow = TrainConfig(
        data=str(color_folders), strategy="fine-tune-all", epochs=50, patience=None, image_size=96
    )
    first = app(data_source=str(color_folders), config=slow.to_dict())
    page(first, "train")
    next(b for b in first.button if b.label == "Start training").click().run()
    second = app(data_source=str(color_folders))
    page(second, "train")
    next(b for b in second.button if b.label == "Start training").click().run()
    manager = get_job_manager()
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
