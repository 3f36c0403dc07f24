"""Data: choose the images (or texts), then see what the scan found (classes, splits, problems)."""

from dataclasses import replace

import pandas as pd
import streamlit as st

import ui
from tl_core import ui_text
from tl_core.archive import save_files, save_upload
from tl_core.charts import class_counts
from tl_core.data import thumbnails
from tl_core.errors import TLError
from tl_core.text_data import text_examples
from ui import capture as camera

ui.require_workspace()
st.title("1. Your data")
st.caption(
    "Images: one folder per class (cats/, dogs/…), or train/ and val/ folders that each hold class "
    "folders. Texts: a CSV, TSV or JSONL file with a text and a label column, or class folders of .txt files."
)

TEXT_SAMPLE, TEXT_FILE = "Built-in text sample (bbc-news)", "Upload a text file (CSV, TSV, JSONL)"
choices = [
    "Built-in sample (digits)",
    TEXT_SAMPLE,
    "Upload a zip",
    "Upload a folder",
    TEXT_FILE,
    camera.CHOICE,
]
if ui.settings().allow_local_paths:
    choices.append("Folder on this computer")
default = st.session_state.get("data_choice", choices[0])
choice = st.radio(
    "Where is your data?",
    choices,
    index=choices.index(default) if default in choices else 0,
    horizontal=True,
)
st.session_state["data_choice"] = choice

source, label = None, None
try:
    if choice == TEXT_SAMPLE:
        source, label = "bbc-news", "bbc-news (built-in text sample)"
        st.caption(ui_text.sample_credit("bbc-news"))
    elif choice.startswith("Built-in"):
        source, label = "digits", "digits (built-in sample)"
    elif choice == TEXT_FILE:
        up = st.file_uploader(
            "One text per row, with its label",
            type=["csv", "tsv", "jsonl"],
            help="The first row names the columns; you pick which holds the text and which the label. "
            "A 'split' column (train/val/test) is used as given.",
        )
        if up is not None:
            with st.spinner("Saving the upload…"):
                source, label = str(save_upload(up.name, up.getvalue(), ui.uploads_dir())), up.name
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
    chosen = st.session_state["data_source"]
    try:
        table = ui.table_file(chosen)
        if table is not None:  # which column is which: guessed, then the user's call
            columns, text_guess, label_guess = ui.table_columns(table)
            left, right = st.columns(2)
            text_col = left.selectbox(
                "Text column",
                columns,
                index=columns.index(
                    cfg.text_column if cfg.text_column in columns else text_guess or columns[0]
                ),
            )
            label_col = right.selectbox(
                "Label column",
                columns,
                index=columns.index(
                    cfg.label_column if cfg.label_column in columns else label_guess or columns[-1]
                ),
            )
            if (text_col, label_col) != (cfg.text_column, cfg.label_column):
                cfg = ui.update_config(text_column=text_col, label_column=label_col)
        elif cfg.text_column or cfg.label_column:
            cfg = ui.update_config(text_column=None, label_column=None)
    except TLError:
        pass  # the scan below reads the same source and says what is wrong, once
    bar = st.progress(0.0, text="Scanning…")
    try:
        ds = ui.scan(
            chosen,
            cfg,
            progress=lambda done, total: bar.progress(
                done / max(total, 1), text=f"Checked {done}/{total} files"
            ),
        )
        fitting = ui.config().for_modality(ds.profile.modality)  # a text backbone for texts
        cfg = ui.set_config(replace(fitting, data=chosen, data_label=ui.data_label() or ""))
    except TLError as exc:
        ui.error(exc, "Fix the dataset (or pick another source) and it will be scanned again.")
        st.session_state.pop("data_source", None)
    bar.empty()

if ds is not None:
    p = ds.profile
    things = ui_text.noun(p.modality)
    st.success(
        f"**{ui.data_label()}**: {len(p.classes)} classes, {p.n_train + p.n_val + p.n_test} usable {things}."
    )
    cols = st.columns(5)
    cols[0].metric("Classes", len(p.classes))
    cols[1].metric(f"Training {things}", p.n_train)
    cols[2].metric(
        f"Validation {things}",
        p.n_val,
        help="Never trained on; they choose the best epoch, so they are not neutral.",
    )
    cols[3].metric(f"Test {things}", p.n_test, help=ui_text.TEST_SCORE_HELP)
    cols[4].metric("Skipped texts" if p.modality == "text" else "Skipped files", len(p.skipped))
    if p.modality == "text":
        cut = ui.over_length(cfg.backbone, chosen, cfg, ds)
        if cut is not None and cut[0]:
            st.info(
                f"{cut[0]} of {p.n_train + p.n_val + p.n_test} texts are longer than {cut[1]} word pieces, "
                f"what {cfg.backbone} reads: they will be cut there, so it sees only their beginning. "
                "The TF-IDF baseline beside every text run reads every word.",
                icon=":material/content_cut:",
            )
        st.caption(
            f"Read as {p.encoding}."
            + (f" Texts from column **{p.columns[0]}**, labels from **{p.columns[1]}**." if p.columns else "")
        )
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
            help=f"{things.capitalize()} of each class kept away from training and from choosing the "
            f"epoch, scored once at the end: the honest estimate for new {things}.",
        )
        if share is not None and share != cfg.test_fraction:
            ui.update_config(test_fraction=share)
            st.rerun()
        st.caption(ui_text.test_split_note(p.test_fraction, things))
    for warning in p.warnings:
        st.warning(warning)
    st.plotly_chart(class_counts(p.counts, things), width="stretch")
    st.subheader("A few examples per class")
    if p.modality == "text":
        st.dataframe(pd.DataFrame(text_examples(ds)), hide_index=True, width="stretch")
    else:
        for cls, thumbs in thumbnails(ds, per_class=8).items():
            st.markdown(f"**{cls}**")
            st.image([img for _, img in thumbs], width=72)
    if p.skipped:
        st.subheader("Skipped texts" if p.modality == "text" else "Skipped files")
        st.dataframe(
            pd.DataFrame(
                [{"where" if p.modality == "text" else "file": s.path, "reason": s.reason} for s in p.skipped]
            ),
            hide_index=True,
            width="stretch",
        )
    if st.button("Rescan"):
        ui.clear_scans()
        st.rerun()
    ui.next_button("strategy", "Next: choose a strategy →")

ui.sidebar()  # last, so it shows the dataset chosen on this run of the page
