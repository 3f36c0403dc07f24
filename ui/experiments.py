"""Widgets for the Lessons and Runs pages: start an experiment, watch it, compare runs, delete one.

Only the experiment's group id lives in the session and the URL (``?exp=``); the runs, their
curves and the verdict are read back from the job manager and the run folders on every view.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import streamlit as st

import ui
from tl_core import experiments, ui_text
from tl_core.charts import overlay_curves
from tl_core.config import TrainConfig
from tl_core.errors import NotFound, TLError
from tl_core.run_table import run_curve

_EXP = "exp"


def current_group() -> str | None:
    """This tab's experiment: from the session, else the URL (after a refresh); kept in the URL."""
    group = st.session_state.get(_EXP) or st.query_params.get(_EXP)
    if group and st.query_params.get(_EXP) != group:
        st.query_params[_EXP] = group
    return group


def restore_session(workspace: str | None) -> None:
    """After a refresh the tab's session is new: take its data and backbone from the experiment
    in the URL, as the Train page does from its job (call before ``ui.sidebar``)."""
    from dataclasses import asdict

    from tl_core.archive import display_name

    group = current_group()
    if workspace is None or not group or "data_source" in st.session_state:
        return
    store = ui.job_manager().runs(workspace)
    try:
        cfg = experiments.record_config(store, experiments.load_record(store, group))
    except NotFound:
        return
    if cfg is not None:
        st.session_state.setdefault("config", asdict(cfg))
        ui.set_data(cfg.data, cfg.data_label or display_name(cfg.data))


def set_group(group: str) -> None:
    st.session_state[_EXP] = group
    st.query_params[_EXP] = group


def start(workspace: str, key: str, cfg: TrainConfig, budget_s: float) -> None:
    """The Run button: queue the experiment, or say why not (quota, weights, settings)."""
    request = ui_text.request_id(ui.tab_token(), {"experiment": key, "budget": budget_s} | cfg.to_dict())
    try:
        record = experiments.start(ui.job_manager(), workspace, key, cfg, budget_s, request_id=request)
    except TLError as exc:
        ui.error(exc, "Change the setting it names (Backbone or Data page), or wait for your queued runs.")
        return
    set_group(record.group)
    st.rerun()


def pick_record(workspace: str) -> Any | None:
    """The experiment to show: this tab's, or one chosen from the workspace's earlier ones."""
    store = ui.job_manager().runs(workspace)
    records = experiments.list_records(store)
    if not records:
        return None
    by_group = {r.group: r for r in records}
    wanted = current_group()
    if wanted and wanted not in by_group:
        st.warning("Experiment not found in your workspace.", icon=":material/search_off:")
        st.session_state.pop(_EXP, None)
        st.query_params.pop(_EXP, None)
        wanted = None
    groups = list(by_group)
    chosen = st.selectbox(
        "Your experiments",
        groups,
        index=groups.index(wanted) if wanted else 0,
        format_func=lambda g: by_group[g].label,
    )
    if chosen != wanted:
        set_group(chosen)
    return by_group[chosen]


def _view(workspace: str, record: Any) -> experiments.ExperimentView:
    manager = ui.job_manager()
    live = {s.run_id: s for s in manager.jobs(workspace) if s.group == record.group}
    return experiments.collect(manager.runs(workspace), record, live)


def _chart(view: experiments.ExperimentView, x: str) -> Any:
    """Rebuilt only when an epoch was added or the axis changed, not on every poll."""
    key = (view.record.group, x, tuple((len(r.history), r.finished) for r in view.runs))
    cached = st.session_state.get("_exp_chart")
    if cached is None or cached[0] != key:
        chance = 1 / view.n_classes if view.n_classes else None
        fig = overlay_curves(view.curves(), x=x, chance=chance, budget_s=view.record.budget_s)
        cached = (key, fig)
        st.session_state["_exp_chart"] = cached
    return cached[1]


def _stop(workspace: str, group: str) -> None:
    ui.job_manager().stop_group(group, workspace)


def watch(workspace: str, record: Any) -> None:
    """Each run's state, the overlaid curves and, once all have finished, the verdict; polled
    while anything is queued or training, then still."""
    interval = experiments.poll_interval(_view(workspace, record))

    @st.fragment(run_every=interval)
    def live() -> None:
        view = _view(workspace, record)
        if experiments.poll_interval(view) != interval:
            st.rerun()  # queued -> running -> finished: a full rerun sets the new polling rate
        for run in view.runs:
            st.markdown(f"**{run.label}**: {experiments.status_line(run)}")
        if not view.runs:
            st.info("The runs of this experiment were deleted.")
            return
        if not view.finished:
            st.button(
                "Stop this experiment",
                on_click=_stop,
                args=(workspace, record.group),
                help="Stops its runs; each keeps its best weights so far.",
            )
        x = st.radio(
            "Time axis",
            ["seconds", "epochs"],
            format_func={"seconds": "seconds of training", "epochs": "epochs"}.get,
            horizontal=True,
            key="exp-axis",
            help="Seconds are fairer: an epoch from scratch costs far more than an epoch of a head "
            "on cached features.",
        )
        st.plotly_chart(_chart(view, x), width="stretch", key="exp-curves")
        verdict = view.verdict()
        if verdict is None:
            st.caption("The verdict appears here once every run has finished.")
        else:
            st.subheader("Verdict")
            st.info(verdict, icon=":material/lightbulb:")
            st.page_link(
                "pages/runs.py", label="Compare these runs on the Runs page", icon=":material/table:"
            )

    live()


# -- the Runs page -----------------------------------------------------------------------------------
def curve_label(summary: Any) -> str:
    """A legend entry: what tells runs apart on one chart, the id last."""
    return f"{summary.strategy} · {summary.data_label} · {summary.run_id[-6:]}"


def compare(summaries: list[Any], x: str) -> None:
    from tl_core.runs import Run

    curves = [run_curve(Run(s.run_dir), curve_label(s)) for s in summaries]
    st.plotly_chart(overlay_curves(curves, x=x), width="stretch", key="runs-curves")


def runs_table_key(run_ids: list[str], version: int = 0) -> str:
    """The table's widget key, new whenever the listed runs change: Streamlit keeps ticked row
    *positions*, so a run added or deleted elsewhere would move the ticks onto other runs."""
    listed = hashlib.sha1("\n".join(run_ids).encode()).hexdigest()[:10]
    return f"runs-table-{version}-{listed}"


def runs_table(frame: pd.DataFrame) -> list[int]:
    """The sortable table with row selection; returns the selected row positions."""
    version = st.session_state.setdefault("runs-version", 0)
    # Streamlit keeps ticked row *positions*: a new or deleted run must give a fresh table, or
    # the ticks would move onto other runs.
    event = st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="multi-row",
        key=runs_table_key(list(frame["run"]), version),
        column_order=[c for c in frame.columns if c != "run"] + ["run"],
        column_config={
            "started": st.column_config.DatetimeColumn(format="D MMM HH:mm"),
            "trainable %": st.column_config.NumberColumn(
                "trainable",
                format="percent",
                width="small",
                help="Share of the model's parameters that training changed.",
            ),
            "val accuracy": st.column_config.NumberColumn(
                "val acc",
                format="percent",
                width="small",
                help="At the kept epoch: the lowest validation loss.",
            ),
            "epochs": st.column_config.NumberColumn(width="small"),
            "wall time (s)": st.column_config.NumberColumn(
                "wall time (s)",
                format="%.0f",
                width="small",
                help="From the job's start (data scan and model load included) to its end.",
            ),
            "run": st.column_config.TextColumn("run id"),
        },
    )
    return list(event.selection.rows)


def delete_box(store: Any, summary: Any) -> None:
    """Delete one run, only after ticking a confirmation that names it."""
    with st.container(border=True):
        st.markdown(f"**Delete this run?** {summary.id_label}")
        sure = st.checkbox(
            "Yes, delete this run for good: its weights, curves and predictions",
            key=f"confirm-delete-{summary.run_id}",
        )
        if st.button("Delete run", disabled=not sure, icon=":material/delete:"):
            try:
                store.delete(summary.run_id)
            except TLError as exc:
                ui.error(exc)
                return
            st.session_state["runs-version"] += 1  # a fresh table: the old selection is gone
            st.session_state["runs-deleted"] = summary.id_label
            st.rerun()
