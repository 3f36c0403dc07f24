"""Data: choose the images, then see what the scan found (classes, splits, problems)."""

import pandas as pd
import streamlit as st

import ui
from tl_core import ui_text
from tl_core.archive import save_files, save_upload
from tl_core.charts import class_counts
from tl_core.data import thumbnails
from tl_core.errors import TLError
from ui import capture as camera

ui.require_workspace()
st.title("1. Your data")
st.caption("One folder per class (cats/, dogs/…), or train/ and val/ folders that each hold class folders.")

choices = ["Built-in sample (digits)", "Upload a zip", "Upload a folder", camera.CHOICE]
if ui.settings().allow_local_paths:
    choices.append("Folder on this computer")
default = st.session_state.get("data_choice", choices[0])
choice = st.radio(
    "Where are your images?",
    choices,
    index=choices.index(default) if default in choices else 0,
    horizontal=True,
)
st.session_state["data_choice"] = choice

source, label = None, None
try:
    if choice.startswith("Built-in"):
        source, label = "digits", "digits (built-in sample)"
    elif choice == "Upload a zip":
        up = st.file_uploader(
            "Zip of class folders (or of train/ + val/)",
            type=["zip"],
            help="Everything is checked before unpacking: unsafe paths and zip bombs are refused.",
        )
        if up is not None:
            with st.spinner("Saving the upload…"):
                source, label = str(save_upload(up.name, up.getvalue(), ui.uploads_dir())), up.name
    elif choice == "Upload a folder":
        ups = st.file_uploader(
            "A folder with one sub-folder per class",
            accept_multiple_files="directory",
            help="Your browser sends every file with its path inside the folder.",
        )
        if ups:
            with st.spinner(f"Saving {len(ups)} files…"):
                folder = save_files([(u.name, u.getvalue()) for u in ups], ui.uploads_dir())
            source, label = str(folder), f"uploaded folder ({len(ups)} files)"
    elif choice == camera.CHOICE:
        source, label = camera.capture_source()
    else:
        path = st.text_input(
            "Folder path", placeholder="/home/me/photos", help="A folder on the machine running this app."
        )
        if path:
            source, label = path.strip(), path.strip()
except TLError as exc:
    ui.error(exc, "Check the upload and try again.")

if source and source != st.session_state.get("data_source"):
    ui.set_data(source, label)

ds = None
if st.session_state.get("data_source"):
    cfg = ui.config()
    bar = st.progress(0.0, text="Scanning images…")
    try:
        ds = ui.scan(
            st.session_state["data_source"],
            cfg.val_fraction,
            cfg.seed,
            progress=lambda done, total: bar.progress(
                done / max(total, 1), text=f"Checked {done}/{total} images"
            ),
            test_fraction=cfg.test_fraction,
        )
        cfg = ui.update_config(data=st.session_state["data_source"], data_label=ui.data_label())
    except TLError as exc:
        ui.error(exc, "Fix the dataset (or pick another source) and it will be scanned again.")
        st.session_state.pop("data_source", None)
    bar.empty()

if ds is not None:
    p = ds.profile
    st.success(
        f"**{ui.data_label()}**: {len(p.classes)} classes, {p.n_train + p.n_val + p.n_test} usable images."
    )
    cols = st.columns(5)
    cols[0].metric("Classes", len(p.classes))
    cols[1].metric("Training images", p.n_train)
    cols[2].metric(
        "Validation images",
        p.n_val,
        help="Never trained on; they choose the best epoch, so they are not neutral.",
    )
    cols[3].metric("Test images", p.n_test, help=ui_text.TEST_SCORE_HELP)
    cols[4].metric("Skipped files", len(p.skipped))
    if p.layout != "split":
        st.caption(
            f"No train/val folders were given, so {p.val_fraction:.0%} of each class was held out "
            "for validation (stratified, seeded: the same split every time)."
        )
    if p.n_test == 0 or p.test_fraction:  # no test/ folder: offer to hold some images out
        shares = {0.0: "none", 0.1: "10%", 0.15: "15%", 0.2: "20%"}
        share = st.segmented_control(
            "Hold out a test split",
            list(shares),
            format_func=shares.get,
            default=cfg.test_fraction if cfg.test_fraction in shares else 0.0,
            key="test-fraction",
            help="Images of each class kept away from training and from choosing the epoch, scored "
            "once at the end: the honest estimate for new images.",
        )
        if share is not None and share != cfg.test_fraction:
            ui.update_config(test_fraction=share)
            st.rerun()
        st.caption(ui_text.test_split_note(p.test_fraction))
    for warning in p.warnings:
        st.warning(warning)
    st.plotly_chart(class_counts(p.counts), width="stretch")
    st.subheader("A few examples per class")
    for cls, thumbs in thumbnails(ds, per_class=8).items():
        st.markdown(f"**{cls}**")
        st.image([img for _, img in thumbs], width=72)
    if p.skipped:
        st.subheader("Skipped files")
        st.dataframe(
            pd.DataFrame([{"file": s.path, "reason": s.reason} for s in p.skipped]),
            hide_index=True,
            width="stretch",
        )
    if st.button("Rescan"):
        ui.clear_scans()
        st.rerun()
    ui.next_button("strategy", "Next: choose a strategy →")

ui.sidebar()  # last, so it shows the dataset chosen on this run of the page
