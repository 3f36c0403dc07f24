"""Lessons: an experiment on your own data in one click, its curves live, then a verdict."""

import pandas as pd
import streamlit as st

import ui
from tl_core import experiments
from tl_core.errors import TLError
from ui import experiments as lessons

ws = ui.require_workspace()
lessons.restore_session(ws)
ui.sidebar()
st.title("Lessons")
st.caption(
    "Each lesson queues a few runs on your data, overlays their validation curves while they train, "
    "and ends with a verdict written from the numbers they measured."
)


def new_experiment() -> None:
    if ui.dataset() is None:
        st.info("Choose the data to learn from first: every lesson runs on your data.")
        st.page_link(ui.PAGES["data"], label="Go to Data", icon=":material/folder_open:")
        return
    cfg = ui.config()
    modality = ui.dataset().profile.modality
    key = st.radio(
        "Question",
        experiments.offered(modality),
        format_func=lambda k: experiments.EXPERIMENTS[k].title,
        horizontal=True,
        key="lesson",
    )
    st.markdown(experiments.EXPERIMENTS[key].question)
    budget = st.radio(
        "Time budget per run",
        experiments.BUDGETS_S,
        format_func=experiments.budget_text,
        horizontal=True,
        key="lesson-budget",
        help="Each run stops at this budget and keeps its best weights: the same time for every run.",
    )
    try:
        rows = experiments.plan_rows(key, cfg)
    except TLError as exc:
        ui.error(exc, "Fix the setting it names on the Strategy or Backbone page.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    room = ui.settings()
    room_limit = room.job_time_limit_s if room.workshop else None
    st.caption(
        f"On **{ui.data_label()}** with **{cfg.backbone}**. "
        + experiments.total_text(len(rows), budget, room_limit)
    )
    if st.button("Run the experiment", type="primary", icon=":material/science:"):
        lessons.start(ws, key, cfg, budget)


new_experiment()
st.divider()
record = lessons.pick_record(ws)
if record is not None:
    lessons.watch(ws, record)
