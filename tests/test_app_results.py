"""The Results page on a real trained run: Grad-CAM overlays, the feature space, and a confusion
matrix whose cells are chosen by a click or, as a fallback, by selectboxes; in a real browser,
the click itself."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import needs_chromium, serve_app, tiny_config, wait_for
from tl_core.charts import confusion_cell, feature_scatter, selectable_confusion, selected_paths
from tl_core.evaluation import load_predictions
from tl_core.runner import JobSpec, run_job
from tl_core.runs import Run

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `import ui`, the same module the pages import

import ui  # noqa: E402

CLASS = "(red|green|blue)"
CAPTION = re.compile(rf"^predicted {CLASS} · true {CLASS} · \d+%( · no region stands out)?$")


@pytest.fixture(autouse=True)
def isolated(studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    """Its own studio home; jobs (none are started here) would run in threads; tiny models on
    one thread (a second one only spins on a busy 2-core machine)."""
    from tl_core import jobs
    from tl_core.executors import ThreadExecutor

    monkeypatch.delenv("TL_STUDIO_WORKSHOP", raising=False)
    monkeypatch.setattr(jobs, "ProcessExecutor", ThreadExecutor)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    ui._manager.clear()
    ui.loaded_model.clear()


def trained(data: Path, **overrides) -> Run:
    """A tiny run trained through the real runner into the solo workspace, as the app lists it."""
    from tl_core.workspaces import SOLO, WorkspaceStore

    cfg = tiny_config(data, data_label="colors", **overrides)
    run = WorkspaceStore().runs(SOLO).create(cfg.to_dict())
    events: list[dict] = []
    run_job(JobSpec("job", cfg.to_dict(), str(run.dir), "cpu"), events.append, threading.Event())
    assert events[-1]["fields"]["status"] == "completed", events[-1]["fields"]
    return run


def results(run: Run) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["run"] = run.id
    at.run()
    at.switch_page("pages/results.py")
    at.run()
    assert not at.exception, at.exception
    return at


def captions_of_images(at: AppTest) -> list[str]:
    return [c for img in at.get("image") for c in img.captions]


def test_results_page_explains_a_fine_tuned_run(color_folders: Path) -> None:
    run = trained(color_folders, strategy="fine-tune-all", epochs=2, warmup_epochs=0, lr=0.05)
    at = results(run)
    headings = [h.value for h in at.subheader]
    assert "Where does the model look? (Grad-CAM)" in headings and "Feature space" in headings
    assert not at.error, [e.value for e in at.error]
    cam_captions = [c for c in captions_of_images(at) if c.startswith("predicted")]
    assert all(CAPTION.match(c) for c in cam_captions)
    # Up to 3 correct and 3 misclassified images, side by side.
    preds = load_predictions(run)
    assert preds is not None
    pairs = [CAPTION.match(c).groups()[:2] for c in cam_captions]  # type: ignore[union-attr]
    assert sum(p == t for p, t in pairs) == min(3, int(preds["correct"].sum()))
    assert sum(p != t for p, t in pairs) == min(3, int((~preds["correct"]).sum()))
    # Feature space: before and after, with what they say.
    charts = at.get("plotly_chart")
    assert len(charts) == 4  # training curves, confusion matrix, PCA before and after
    assert any("random weights" in m.value.lower() for m in at.markdown)
    assert any(c.value.startswith("The most similar other image is of the same class") for c in at.caption)


def test_the_grad_cam_choices_filter_and_retarget(color_folders: Path) -> None:
    run = trained(color_folders, strategy="feature-extraction", epochs=3)
    at = results(run)
    at.selectbox(key=f"cam-class-{run.id}").set_value("green").run()
    at.radio(key=f"cam-target-{run.id}").set_value("the true class").run()
    at.slider(key=f"cam-n-{run.id}").set_value(1).run()
    assert not at.exception and not at.error
    cam_captions = [c for c in captions_of_images(at) if c.startswith("predicted")]
    assert 1 <= len(cam_captions) <= 2 and all("true green" in c for c in cam_captions)
    # Feature extraction: one picture, the backbone never changed.
    assert len(at.get("plotly_chart")) == 3
    assert any("frozen features" in m.value or "partly" in m.value for m in at.markdown)


def test_the_selectboxes_choose_a_cell_and_show_its_grad_cam(color_folders: Path) -> None:
    run = trained(color_folders, strategy="feature-extraction", epochs=3)
    at = results(run)
    key = f"cell-{run.id}"
    true, pred = at.selectbox(key=f"{key}-true"), at.selectbox(key=f"{key}-pred")
    assert (true.value, pred.value) == (at.session_state[f"{key}-true"], at.session_state[f"{key}-pred"])
    true.set_value("red")
    pred.set_value("red").run()
    shown = [c for c in at.caption if "image(s), most confident first" in c.value]
    assert shown, "the red/red cell of a learnable dataset has images"
    plain = len(at.get("image"))
    at.toggle(key=f"{key}-cam").set_value(True).run()
    assert not at.exception and not at.error
    assert len(at.get("image")) == plain  # the same images, now as overlays


def test_a_run_without_snapshots_or_weights_says_why(studio_home: Path) -> None:
    """An older run: predictions but no feature snapshots; unreadable weights."""
    from tl_core.config import TrainConfig
    from tl_core.evaluation import predictions_frame, save_predictions
    from tl_core.workspaces import SOLO, WorkspaceStore

    run = WorkspaceStore().runs(SOLO).create(TrainConfig(data="digits", data_label="digits").to_dict())
    run.write_status("completed", best_val_acc=0.5, epochs_run=1)
    run.append_metrics(
        {"epoch": 1, "phase": "head", "train_loss": 0.5, "val_loss": 0.4, "train_acc": 0.8, "val_acc": 0.5}
    )
    run.write_json("labels.json", ["ants", "bees"])
    run.weights_path.write_bytes(b"not weights")
    save_predictions(
        run, predictions_frame([("a.png", 0), ("b.png", 1)], [[0.9, 0.1], [0.7, 0.3]], ["ants", "bees"])
    )
    at = results(run)
    assert any("No feature snapshots for this run" in i.value for i in at.info)
    assert any("Train the run again" in e.value for e in at.error)


# ---- the chart builders behind the clicks ---------------------------------------------------------


def test_each_confusion_cell_carries_its_classes_and_the_chosen_one_is_framed() -> None:
    fig = selectable_confusion([[5, 1], [2, 4]], ["ants", "bees"], selected=("bees", "ants"))
    heatmap, cells = fig.data
    assert heatmap.type == "heatmap" and cells.type == "scatter" and cells.marker.opacity == 0
    assert [list(c) for c in cells.customdata] == [
        ["ants", "ants", 5],
        ["ants", "bees", 1],
        ["bees", "ants", 2],
        ["bees", "bees", 4],
    ]
    assert list(cells.x) == ["ants", "bees", "ants", "bees"] and list(cells.y) == [
        "ants",
        "ants",
        "bees",
        "bees",
    ]
    (frame,) = fig.layout.shapes
    assert (frame.x0, frame.x1, frame.y0, frame.y1) == (-0.5, 0.5, 0.5, 1.5)  # column ants, row bees
    assert not selectable_confusion([[1]], ["a"], selected=("a", "gone")).layout.shapes
    # What Streamlit reports for a click on the "true bees, predicted ants" cell:
    point = {"curve_number": 1, "point_index": 2, "x": "ants", "y": "bees", "customdata": ["bees", "ants", 2]}
    assert confusion_cell([point]) == ("bees", "ants")
    assert confusion_cell([]) is None and confusion_cell([{"curve_number": 0, "z": 5}]) is None


def test_feature_scatter_colours_by_class_and_selection_gives_paths() -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "x": [0.0, 1.0, 2.0],
            "y": [0.0, 1.0, 0.5],
            "class": ["a", "b", "a"],
            "file": ["a/1.png", "b/2.png", "a/3.png"],
            "path": ["/d/a/1.png", "/d/b/2.png", "/d/a/3.png"],
        }
    )
    fig = feature_scatter(frame, (0.61, 0.2), "After fine-tuning")
    assert [t.name for t in fig.data] == ["a", "b"] and len(fig.data[0].x) == 2
    assert fig.layout.xaxis.title.text == "PC1 (61% of the variance)"
    assert fig.data[0].marker.color != fig.data[1].marker.color
    points = [{"customdata": ["a/3.png", "/d/a/3.png"]}, {"customdata": ["a/3.png", "/d/a/3.png"]}, {}]
    assert selected_paths(points) == ["/d/a/3.png"]


# ---- in a real browser: the click itself ------------------------------------------------------------


def settled(page) -> None:
    """Wait until the script run ends and no element is still a placeholder."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]')",
        timeout=120_000,
    )


@needs_chromium
def test_clicking_a_cell_chooses_it(color_folders: Path, studio_home: Path, browser) -> None:
    run = trained(color_folders, strategy="feature-extraction", epochs=3)
    key = f"cell-{run.id}"
    with serve_app(studio_home) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{url}/results?run={run.id}")
        page.get_by_text("Look inside the confusion matrix").wait_for(timeout=90_000)
        settled(page)
        cells = page.locator(f".st-key-{key}-click .scatterlayer path.point")
        assert cells.count() == 9
        before = [page.locator(f".st-key-{key}-{k} input").input_value() for k in ("true", "pred")]
        assert before != ["red", "red"]
        # Classes are sorted (blue, green, red): the last marker is true red, predicted red.
        box = cells.nth(8).bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        chosen = (
            "([t, p]) => document.querySelector(t).value === 'red'"
            " && document.querySelector(p).value === 'red'"
        )
        page.wait_for_function(
            chosen, arg=[f".st-key-{key}-true input", f".st-key-{key}-pred input"], timeout=30_000
        )
        settled(page)
        # The chosen cell is framed, and its images are listed below.
        frame = page.locator(f".st-key-{key}-click .shapelayer path")
        wait_for(lambda: frame.count() == 1, timeout=15)  # plotly may briefly draw old and new
        assert page.get_by_text("image(s), most confident first").count() == 1
        shot = ROOT / "test-artifacts" / "screenshots" / "results-cell-click.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        page.close()


def test_a_held_out_test_split_is_shown_as_such_and_its_absence_is_explained(
    split_folders: Path, color_folders: Path
) -> None:
    from tl_core import ui_text

    held_out = results(trained(split_folders, epochs=2))
    labels = [m.label for m in held_out.metric]
    assert "Test accuracy (held out)" in labels
    assert ui_text.NO_TEST_SPLIT not in [c.value for c in held_out.caption]
    assert any(e.label.startswith("Held-out test split: 4 images") for e in held_out.expander)
    without = results(trained(color_folders, epochs=1))
    assert "Test accuracy (held out)" not in [m.label for m in without.metric]
    assert ui_text.NO_TEST_SPLIT in [c.value for c in without.caption]


def test_a_text_runs_results_and_export(tmp_path: Path) -> None:
    """Results for texts: the cell's texts, the baseline's verdict, the confident mistakes, a
    text box to try; Export offers the bundle, ONNX and train.py."""
    from test_text import sentences, write_csv

    data = write_csv(tmp_path / "reviews.csv", sentences(10))
    run = trained(data, backbone="test_bert", image_size=None, epochs=2)
    at = results(run)
    heads = [h.value for h in at.subheader]
    assert {"Look inside the confusion matrix", "Against a classical baseline", "Try it"} <= set(heads)
    assert "Grad-CAM" not in " ".join(heads)
    assert any("TF-IDF + logistic regression" in x.value for x in [*at.info, *at.success])
    assert at.text_area[0].label == "A text to classify"
    at.text_area[0].input("goal match striker")
    at.button[-1].click().run()  # the form's Classify
    assert not at.exception
    bars = [b.proto.text for b in at.get("progress")]
    assert len(bars) == 3 and all(
        ": " in b and b.endswith("%") for b in bars
    )  # every class, most likely first
    at.switch_page("pages/export.py")
    at.run()
    assert not at.exception
    labels = [b.label for b in at.button]
    assert "Build ONNX" in labels and "Build TorchScript" not in labels
    assert [b.label for b in at.get("download_button")] == [
        "Download model bundle (.zip)",
        "Download train.py",
    ]
    at.toggle[-1].set_value(True).run()  # Preview train.py
    preview = at.code[-1].value
    assert "MAX_LENGTH = 64" in preview and "texts (30 of them)" in preview
