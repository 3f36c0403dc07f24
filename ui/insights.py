"""Results-page blocks that look inside a trained model: the images behind a confusion-matrix
cell, Grad-CAM overlays and the feature space. Widgets only: the engine is ``tl_core.gradcam``
and ``tl_core.feature_space``; overlays and PCA pictures are cached per run, so reruns are cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

import ui
from tl_core.errors import TLError
from tl_core.images import ImageProblem, thumbnail

THUMB_PX = 128
CELL_IMAGES = 12
PER_ROW = 3
MAX_SELECTED = 24


# -- Grad-CAM ----------------------------------------------------------------------------------------
@st.cache_data(max_entries=128, show_spinner=False)
def _overlay(run_dir: str, path: str, target: str) -> tuple[np.ndarray, bool] | None:
    """The Grad-CAM overlay of one validation image for the class ``target``, and whether no
    region stands out; ``None`` when the image can no longer be read."""
    from tl_core.gradcam import explain, overlay

    loaded = ui.loaded_model(run_dir)
    try:
        cam = explain(loaded, path, loaded.labels.index(target))
    except ImageProblem:
        return None
    return overlay(cam.image, cam.heatmap), cam.flat


def _name(path: str) -> str:
    """``class/file``: enough to find the image, and no server path on a projected screen."""
    return f"{Path(path).parent.name}/{Path(path).name}"


def _model_ready(run: Any) -> bool:
    """Load the run's model once, or say why Grad-CAM can't be shown."""
    try:
        ui.loaded_model(str(run.dir))
    except TLError as exc:
        ui.error(exc, "Train the run again; its saved weights are needed to explain its predictions.")
        return False
    except Exception:  # an unreadable weights file: not this page's bug, but not a crash either
        ui.error(
            TLError(f"The saved weights of run {run.id} can't be read."),
            "Train the run again; its saved weights are needed to explain its predictions.",
        )
        return False
    return True


def _cam_grid(run: Any, rows: Any, cam_for: str) -> None:
    """Grad-CAM overlays in rows of ``PER_ROW``, for each row's ``cam_for`` class
    (``predicted`` or ``true``)."""
    from tl_core.gradcam import example_caption

    records = list(rows.to_dict("records"))
    for start in range(0, len(records), PER_ROW):
        for col, row in zip(st.columns(PER_ROW), records[start : start + PER_ROW], strict=False):
            with col:
                try:
                    found = _overlay(str(run.dir), row["path"], row[cam_for])
                except TLError as exc:
                    st.caption(f"{_name(row['path'])} ({exc})")
                    continue
                if found is None:
                    st.caption(f"{_name(row['path'])} (image no longer readable)")
                    continue
                img, flat = found
                note = " · no region stands out" if flat else ""
                st.image(img, caption=example_caption(row) + note, width="stretch")


def gradcam_block(run: Any, preds: Any, labels: list[str]) -> None:
    """Correct and misclassified validation images side by side, with where the model looked."""
    from tl_core.gradcam import pick_examples

    st.subheader("Where does the model look? (Grad-CAM)")
    st.caption(
        "Grad-CAM colours the parts of an image that pushed the model towards a class: red is "
        "strong evidence, blue none. Right for the right reasons means the heat sits on the "
        "object; heat on the background or a border is a shortcut the model learned."
    )
    a, b, c = st.columns([2, 2, 3])
    which = a.selectbox("True class", ["every class", *labels], key=f"cam-class-{run.id}")
    n = b.slider("Images of each kind", 1, 6, 3, key=f"cam-n-{run.id}")
    evidence = c.radio(
        "Show the evidence for",
        ["the predicted class", "the true class"],
        horizontal=True,
        key=f"cam-target-{run.id}",
        help="For a mistake, compare what made the model say the wrong class with what it saw of "
        "the right one.",
    )
    if not _model_ready(run):
        return
    cam_for = "predicted" if evidence == "the predicted class" else "true"
    right, wrong = pick_examples(preds, n, None if which == "every class" else which)
    left, rest = st.columns(2, gap="large")
    with st.spinner("Computing Grad-CAM…"):
        with left:
            st.markdown("**Correct**, most confident first")
            if right.empty:
                st.caption("No correctly classified image here.")
            _cam_grid(run, right, cam_for)
        with rest:
            st.markdown("**Misclassified**, most confident first")
            if wrong.empty:
                st.caption("No misclassified image here.")
            _cam_grid(run, wrong, cam_for)


# -- the images behind a confusion-matrix cell -------------------------------------------------------
def cell_key(run: Any, preds: Any, labels: list[str]) -> str:
    """The session-state prefix of this run's chosen cell, started on the most confused pair.

    ``ui.confusion_block(..., key=)`` sets the cell on a click, and ``cell_browser``'s
    selectboxes read and set the same keys, so the two stay in sync.
    """
    from tl_core.evaluation import most_confused

    key = f"cell-{run.id}"
    if st.session_state.get(f"{key}-true") not in labels or st.session_state.get(f"{key}-pred") not in labels:
        pairs = most_confused(preds, top=1)
        true, pred = (pairs[0][0], pairs[0][1]) if pairs else (labels[0], labels[0])
        st.session_state[f"{key}-true"], st.session_state[f"{key}-pred"] = true, pred
    return key


def cell_browser(run: Any, preds: Any, labels: list[str], key: str) -> None:
    """The images of the chosen cell, most confident first, optionally with Grad-CAM."""
    from tl_core.evaluation import cell, misclassified

    st.subheader("Look inside the confusion matrix")
    st.caption("Click a cell of the matrix above, or pick one here.")
    a, b, c = st.columns([2, 2, 2])
    true = a.selectbox("True class", labels, key=f"{key}-true")
    pred = b.selectbox(
        "Predicted as",
        labels,
        key=f"{key}-pred",
        help="Pick the same class as the true one to see correct predictions.",
    )
    c.write("")  # line the toggle up with the selectboxes
    cam = c.toggle("Grad-CAM", key=f"{key}-cam", help="Colour where the model found its evidence.")
    hits = cell(preds, true, pred)
    if hits.empty:
        st.caption(f"No validation image of {true} was predicted as {pred}.")
    else:
        st.caption(
            f"{len(hits)} image(s), most confident first. Confident mistakes are often mislabelled images."
        )
        if cam and not _model_ready(run):
            cam = False
        cols = st.columns(6)
        for i, row in hits.head(CELL_IMAGES).iterrows():
            with cols[i % 6]:
                try:
                    found = _overlay(str(run.dir), row["path"], row["predicted"]) if cam else None
                    st.image(
                        found[0] if found else thumbnail(row["path"], THUMB_PX),
                        caption=f"{row['confidence']:.0%} sure",
                    )
                except (ImageProblem, TLError):
                    st.caption(f"{_name(row['path'])} (image no longer readable)")
    if misclassified(preds).empty:
        st.success("No validation image is misclassified.")


# -- the feature space -------------------------------------------------------------------------------
@st.cache_data(max_entries=8, show_spinner=False)
def _pictures(run_dir: str) -> tuple[str, int, list[Any]] | None:
    """(what the pictures say, number of features, [(title, PCA frame, explained variance,
    neighbour agreement)]) of a run; ``None`` without snapshots. Only these small results are
    cached, not the features."""
    from tl_core.feature_space import load_snapshots, neighbour_agreement, pca_frame, reading, views
    from tl_core.runs import Run

    snaps = load_snapshots(Run(run_dir))
    if snaps is None:
        return None
    out = []
    for view in views(snaps):
        frame, explained = pca_frame(view.features, snaps.labels, snaps.classes, snaps.paths)
        out.append((view.title, frame, explained, neighbour_agreement(view.features, snaps.labels)))
    return reading(snaps, [p[3] for p in out]), int(snaps.after.shape[1]), out


def feature_space_block(run: Any) -> None:
    """The validation images in the backbone's feature space, before and after training."""
    from tl_core.charts import feature_scatter, selected_paths
    from tl_core.feature_space import missing_reason

    st.subheader("Feature space")
    found = _pictures(str(run.dir))
    if found is None:
        st.info(missing_reason(run), icon=":material/scatter_plot:")
        return
    said, n_features, pictures = found
    st.caption(
        "Each dot is one validation image, placed by the backbone's features (what the new head "
        "sees) flattened to 2-D with PCA. Where each class forms its own cloud, a simple head can "
        "tell them apart. Hover for the file; click or lasso dots to see their images below."
    )
    st.markdown(said)
    selected: list[str] = []
    columns = st.columns(len(pictures))
    for i, (col, (title, frame, explained, agreement)) in enumerate(zip(columns, pictures, strict=True)):
        with col:
            st.markdown(f"**{title}**")
            event = st.plotly_chart(
                feature_scatter(frame, explained),
                key=f"pca-{i}-{run.id}",
                on_select="rerun",
                selection_mode=("points", "box", "lasso"),
                width="stretch",
            )
            if agreement is not None:
                st.caption(
                    f"The most similar other image is of the same class for {agreement:.0%} of images, "
                    f"measured in all {n_features} features. The picture keeps only the two widest "
                    f"directions ({sum(explained):.0%} of the spread): clouds that overlap here can "
                    "still be apart."
                )
            selected += selected_paths(event.selection.points if event else [])
    known = {path for picture in pictures for path in picture[1]["path"]}
    selected = [p for p in selected if p in known]  # the browser's selection names only these
    selected = list(dict.fromkeys(selected))
    if not selected:
        return
    st.caption(
        f"{len(selected)} selected image(s)"
        + (f", the first {MAX_SELECTED}:" if len(selected) > MAX_SELECTED else ":")
    )
    by_path = dict(zip(pictures[0][1]["path"], pictures[0][1]["file"], strict=True))
    cols = st.columns(8)
    for i, path in enumerate(selected[:MAX_SELECTED]):
        with cols[i % 8]:
            try:
                st.image(thumbnail(path, 96), caption=by_path.get(path) or _name(path))
            except ImageProblem:
                st.caption(f"{_name(path)} (no longer readable)")


# -- texts -------------------------------------------------------------------------------------------
CELL_TEXTS = 20
_CONFIDENCE = {"confidence": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1)}


def text_results(run: Any, preds: Any, model_acc: float, key: str) -> None:
    """A text run's Results: the texts behind a confusion-matrix cell, the TF-IDF baseline, the
    most confident mistakes, and a box to try a text (images get Grad-CAM and the feature space
    instead)."""
    from tl_core.evaluation import cell, confident_mistakes, text_rows
    from tl_core.inference import predict_text
    from tl_core.verdicts import baseline_verdict

    labels = run.labels()
    st.subheader("Look inside the confusion matrix")
    a, b = st.columns(2)
    true = a.selectbox("True class", labels, key=f"{key}-true")
    pred = b.selectbox(
        "Predicted as", labels, key=f"{key}-pred", help="The same class shows the correct ones."
    )
    hits = text_rows(cell(preds, true, pred), n=CELL_TEXTS)
    if hits.empty:
        st.caption(f"No validation text of {true} was predicted as {pred}.")
    else:
        st.dataframe(hits, hide_index=True, width="stretch", column_config=_CONFIDENCE)
    result = run.status().get("result") or {}
    st.subheader("Against a classical baseline")
    if result.get("baseline_acc") is not None:
        kind, verdict = baseline_verdict(model_acc, result["baseline_acc"], run.config().backbone)
        (st.success if kind == "success" else st.info)(verdict)
    truncated, n = result.get("truncated"), len(run.split().get("train", [])) + len(preds)
    if truncated:
        st.caption(
            f"{truncated} of {n} texts were longer than {run.data_config()['max_length']} word "
            "pieces and were cut there (the model only read their beginning)."
        )
    st.subheader("Most confident mistakes")
    mistakes = confident_mistakes(preds)
    if mistakes.empty:
        st.success("No validation text is misclassified.")
    else:
        st.caption("Wrong answers the model was surest of: often mislabelled texts, or classes that overlap.")
        st.dataframe(mistakes, hide_index=True, width="stretch", column_config=_CONFIDENCE)
    st.subheader("Try it")
    with st.form("try-text"):  # a form sends the text with the click, typed or pasted
        text = st.text_area("A text to classify", placeholder="Type or paste a text…")
        asked = st.form_submit_button("Classify")
    if asked and not text.strip():
        st.caption("Type or paste a text first.")
    elif asked:
        try:
            for label, prob in predict_text(
                ui.loaded_model(str(run.dir)), text, top_k=min(5, len(run.labels()))
            ):
                st.progress(prob, text=f"{label}: {prob:.1%}")
        except TLError as exc:
            ui.error(exc)
