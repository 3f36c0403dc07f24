"""The LR finder on the Freeze & train page: start the range test as a job, watch it, show its
curve and apply its suggestion.

Its job lives beside the training job, not in its place: its own id in the session and the
URL (``lrjob``), so a refresh mid-test re-attaches and the training view never shows a range
test as a run. The decisions (rules, texts, the config a suggestion makes) are ``tl_core``'s.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import streamlit as st

import ui
from tl_core import lr_finder, ui_text
from tl_core.archive import display_name
from tl_core.charts import lr_finder_curve
from tl_core.config import TrainConfig
from tl_core.errors import TLError
from tl_core.runs import RunStatus

SESSION_KEY = "lr_job_id"
URL_KEY = "lrjob"
APPLIED_KEY = "lr_applied"


def _forget() -> None:
    st.session_state.pop(SESSION_KEY, None)
    st.query_params.pop(URL_KEY, None)


def job_id() -> str | None:
    """This tab's range test: from the session, else the URL (after a refresh, when it also
    rebuilds the tab's project from the tested config); another workspace's is "none"."""
    jid = st.session_state.get(SESSION_KEY) or st.query_params.get(URL_KEY)
    if not jid:
        return None
    ws = ui.workspace_id()
    if ws is None:
        _forget()
        return None
    if st.session_state.get(SESSION_KEY) != jid:
        try:
            cfg = ui.job_manager().job_config(jid, workspace=ws)
        except TLError:
            _forget()
            return None
        st.session_state.setdefault("config", asdict(cfg))
        if "data_source" not in st.session_state:
            ui.set_data(cfg.data, cfg.data_label or display_name(cfg.data))
    st.session_state[SESSION_KEY] = jid
    if st.query_params.get(URL_KEY) != jid:  # page switches clear it; each write is a message
        st.query_params[URL_KEY] = jid
    return jid


def snapshot() -> Any | None:
    jid = job_id()
    if not jid:
        return None
    try:
        return ui.job_manager().snapshot(jid, workspace=ui.workspace_id())
    except TLError:
        _forget()
        return None


def _stop(jid: str) -> None:
    try:
        ui.job_manager().stop(jid, workspace=ui.workspace_id())
    except TLError:
        _forget()


def _submit(cfg: TrainConfig) -> None:
    # Its own request id: the same settings' "Start training" is another request.
    request = ui_text.request_id(f"{ui.tab_token()}:lr-find", cfg.to_dict())
    jid = ui.job_manager().submit(cfg, workspace=ui.require_workspace(), request_id=request, kind="lr-find")
    st.session_state[SESSION_KEY] = jid
    st.query_params[URL_KEY] = jid
    st.session_state.pop(APPLIED_KEY, None)


def _apply(lr: float, cfg: TrainConfig, groups: list, editor_key: str) -> None:
    """The "Use" button: the suggestion becomes the config's head LR; the freeze map's own
    state is dropped so it redraws from the config (ticks kept, LRs scaled)."""
    ui.update_config(**lr_finder.apply_suggestion(cfg, lr, groups).to_dict())
    st.session_state.pop(editor_key, None)
    st.session_state[APPLIED_KEY] = lr


def section(cfg: TrainConfig, groups: list, editor_key: str) -> None:
    """The whole LR finder block for the freeze map's ``cfg``; ``editor_key`` is the freeze
    map's widget key, reset when a suggestion is applied."""
    st.subheader("Find a learning rate")
    st.caption(
        f"A range test before training: on a throwaway copy of the model, the head's LR grows from "
        f"{lr_finder.format_lr(lr_finder.START_LR)} to {lr_finder.format_lr(lr_finder.END_LR)} "
        "over up to 100 batches while the loss is recorded. Where the loss falls fastest, the model "
        "learns; where it shoots up, the LR is too high. Backbone groups move at their ratios from "
        "the table above."
    )
    snap = snapshot()
    busy = snap is not None and not snap.finished
    if st.button(
        "Find a learning rate",
        disabled=busy,
        help="Runs in the background and queues like training; seconds for feature extraction.",
    ):
        try:
            _submit(cfg)
            st.rerun()
        except TLError as exc:
            ui.error(exc)
    interval = ui_text.poll_interval(snap)

    @st.fragment(run_every=interval)
    def live() -> None:
        s = snapshot()
        if s is None or s.finished:
            if s is not None and interval is not None:
                st.rerun()  # it just ended: a full rerun draws the result and stops polling
            return
        if ui_text.poll_interval(s) != interval:
            st.rerun()
        if s.status == RunStatus.QUEUED:
            st.info(lr_finder.progress_text(s), icon=":material/hourglass_top:")
        else:
            st.progress(min(max(s.progress, 0.0), 1.0), text=lr_finder.progress_text(s))
        st.button("Stop the test", on_click=_stop, args=(s.job_id,), key="lr-stop")

    live()
    if snap is not None and snap.finished:
        _result(snap, cfg, groups, editor_key)


def _result(snap: Any, cfg: TrainConfig, groups: list, editor_key: str) -> None:
    if snap.status == RunStatus.FAILED:
        ui.error(TLError(snap.error or "The test failed."), "Adjust the settings above and test again.")
        return
    result = lr_finder.load_result(snap.run_dir)
    if result is None or not result.curve.lrs:
        st.info("The test was stopped before it measured anything.")
        return
    curve, sug = result.curve, result.suggestion
    current = lr_finder.head_lr(cfg, groups)
    point = (sug.lr, curve.smoothed[sug.index]) if sug.lr is not None and sug.index is not None else None
    span = (curve.lrs[sug.span[0]], curve.lrs[sug.span[1]]) if sug.span else None
    st.plotly_chart(
        lr_finder_curve(curve.lrs, curve.losses, curve.smoothed, point, span, current), key="lr-curve"
    )
    if sug.lr is None:
        st.info(sug.reason, icon=":material/info:")
        return
    lr = lr_finder.round_lr(sug.lr)
    st.markdown(f"**Suggested head LR: {lr_finder.format_lr(lr)}** · rule: **{sug.rule}**")
    st.caption(sug.reason)
    if lr_finder.trainable_changed(result, cfg, groups):
        st.warning(
            "The table now trains other layer groups than this test did: find a learning rate "
            "again for these settings.",
            icon=":material/warning:",
        )
    if abs(current - lr) <= 1e-3 * lr:
        applied = st.session_state.get(APPLIED_KEY) == lr
        st.success(f"{'Applied: t' if applied else 'T'}he head LR is {lr_finder.format_lr(lr)}.")
        return
    st.button(
        f"Use {lr_finder.format_lr(lr)}",
        type="primary",
        on_click=_apply,
        args=(lr, cfg, groups, editor_key),
        help=f"Sets the head LR to {lr_finder.format_lr(lr)} (now {lr_finder.format_lr(current)}); "
        "backbone groups keep their ratios to it.",
    )
