"""Runs: every training run of this workspace in one sortable table; compare curves, delete."""

import streamlit as st

import ui
from tl_core.run_table import runs_frame
from ui import experiments as views

ui.sidebar()
ws = ui.require_workspace()
st.title("Runs")
store = ui.job_manager().runs(ws)
summaries = store.list()
deleted = st.session_state.pop("runs-deleted", None)
if deleted:
    st.success(f"Deleted {deleted}.", icon=":material/delete:")
frame = runs_frame(summaries)
if frame.empty:
    ui.stop_with_link(
        "No training run yet: train a model first.",
        "train",
        ":material/model_training:",
        label="Go to Freeze & train",
    )
st.caption("Click a column's name to sort by it. Tick runs to compare their validation curves.")
rows = views.runs_table(frame)
others = sum(1 for s in summaries if s.kind != "train")
if others:
    st.caption(f"{others} learning-rate range test(s) are not listed: they train no model to compare.")

by_id = {s.run_id: s for s in summaries}
chosen = [by_id[frame.iloc[i]["run"]] for i in rows]
if not chosen:
    st.info(
        "Tick one or more runs in the table to overlay their validation curves.", icon=":material/touch_app:"
    )
    st.stop()
x = st.radio(
    "Time axis",
    ["seconds", "epochs"],
    format_func={"seconds": "seconds of training", "epochs": "epochs"}.get,
    horizontal=True,
)
views.compare(chosen, x)
if len(chosen) == 1:
    views.delete_box(store, chosen[0])
else:
    st.caption("Tick a single run to delete it.")
