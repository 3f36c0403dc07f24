"""Instructor: the room's live queue, everyone's results, the machine, and the room board."""

import pandas as pd
import streamlit as st

import ui
from tl_core import ui_text
from tl_core.errors import TLError
from tl_core.room import RoomBoard, room_results
from tl_core.sysinfo import device_stats, process_rss_mb

if not ui.is_instructor():
    ui.stop_with_link("Page not found.", "home", ":material/home:")

st.title("Instructor")
manager = ui.job_manager()


@st.fragment(run_every=3.0)
def queue() -> None:
    st.subheader("Queue")
    jobs = manager.queue()
    if not jobs:
        st.caption("Nothing is training or waiting.")
        return
    st.dataframe(pd.DataFrame(ui_text.queue_rows(jobs)), hide_index=True, width="stretch")
    labels = {s.job_id: ui_text.job_label(s) for s in jobs}
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    chosen = left.selectbox("Job to stop", list(labels), format_func=labels.get, key="stop-job")
    if right.button("Stop", key="stop-any", width="stretch") and chosen:
        try:
            manager.stop(chosen)  # no workspace: the instructor may stop anyone's job
            st.toast(f"Stopping {labels[chosen]}.")
        except TLError as exc:
            ui.error(exc)


@st.fragment(run_every=5.0)
def machine() -> None:
    st.subheader("Devices")
    rows = manager.executor.describe()
    local = not manager.on_cluster
    if not local:
        st.caption("This machine (the app's; the jobs run on the Ray nodes below)")
    st.dataframe(pd.DataFrame(device_stats()), hide_index=True, width="stretch")
    workers = [
        {"device": w["device"], "state": w["state"]}
        | (
            {"pid": w["pid"], "up": ui_text.clock(w.get("up_s", 0)), "memory (MB)": process_rss_mb(w["pid"])}
            if local
            else {}
        )
        for w in rows
    ]
    st.caption(
        "Training processes (one per device; restarted if one dies)"
        if local
        else "Ray nodes (Ray picks one per job; the queue's order is still this app's)"
    )
    st.dataframe(pd.DataFrame(workers), hide_index=True, width="stretch")


queue()


@st.fragment(run_every=10.0)
def room() -> None:
    """Everyone's runs and the board, refreshed as students finish (files only, no jobs)."""
    st.subheader("Everyone's runs")
    everyone = room_results(ui.workspaces())
    results = everyone.drop(columns=["workspace"])  # a workspace id is its student's key: not shown
    if results.empty:
        st.caption("No runs yet.")
    else:
        st.dataframe(
            results,
            hide_index=True,
            width="stretch",
            column_config={"val accuracy": st.column_config.NumberColumn(format="percent")},
        )
    st.download_button(
        "Download the room's results (CSV)",
        lambda: results.to_csv(index=False),
        file_name="room-results.csv",
        mime="text/csv",
        disabled=results.empty,
    )

    st.subheader("Share with the room")
    board = RoomBoard(ui.workspaces())
    trained = ui_text.trained_rows(everyone.to_dict("records"))
    if trained:
        picks = {f"{r['workspace']}/{r['run']}": r for r in trained}
        pick = st.selectbox(
            "Run to share",
            list(picks),
            format_func=lambda k: ui_text.room_run_label(picks[k]),
            key="share-run",
        )
        if st.button("Share with the room", type="primary"):
            try:
                board.share(picks[pick]["workspace"], picks[pick]["run"])
                st.success("Shared: it is on the Room board.")
            except TLError as exc:
                ui.error(exc)
    else:
        st.caption("Runs appear here once they have trained at least one epoch.")
    for entry in board.entries():
        try:
            label = f"{entry.owner} · {board.run(entry.entry_id).summary().label}"
        except TLError:
            label = f"{entry.owner} · a run that no longer exists"
        text, button = st.columns([5, 1], vertical_alignment="center")
        text.markdown(label)
        if button.button("Remove", key=f"unshare-{entry.entry_id}"):
            board.unshare(entry.entry_id)
            st.rerun(scope="fragment")
    if board.entries() and ui.settings().workshop:
        st.page_link(ui.PAGES["room"], label="Open the Room board", icon=":material/leaderboard:")


room()
machine()
