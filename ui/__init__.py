"""Shared UI helpers for the pages: session state, the job manager, the sidebar, errors.

Pages import this and ``tl_core``; ``tl_core`` never imports this (layers point one way).
Only ids and plain settings live in ``st.session_state``; jobs live in the process-wide
``JobManager`` (``st.cache_resource``), so a browser refresh re-attaches through the URL.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import streamlit as st

from tl_core.config import TrainConfig
from tl_core.errors import TLError

PAGES = {
    "home": "pages/home.py",
    "data": "pages/data.py",
    "strategy": "pages/strategy.py",
    "backbone": "pages/backbone.py",
    "train": "pages/train.py",
    "results": "pages/results.py",
    "export": "pages/export.py",
}


def allow_local_paths() -> bool:
    """Shared workshop servers set ``TL_STUDIO_ALLOW_PATHS=0`` so nobody browses the host's disk."""
    return os.environ.get("TL_STUDIO_ALLOW_PATHS", "1") not in ("0", "false", "no")


@st.cache_resource
def job_manager() -> Any:
    """One per process, shared by every tab: the training thread outlives any session."""
    from tl_core.jobs import get_job_manager

    return get_job_manager()


@st.cache_resource
def _scans() -> dict[tuple[str, float, int], Any]:
    """Process-wide scan results: st.cache_* can't host a progress bar drawn from inside."""
    return {}


def scan(source: str, val_fraction: float = 0.2, seed: int = 0, progress: Any = None) -> Any:
    """Scan once per source and split; "Rescan" on the data page calls ``clear_scans``."""
    from tl_core.data import scan_dataset

    key = (source, val_fraction, seed)
    store = _scans()
    if key not in store:
        store[key] = scan_dataset(source, val_fraction=val_fraction, seed=seed, progress=progress)
    return store[key]


def clear_scans() -> None:
    _scans().clear()


def config() -> TrainConfig:
    data = st.session_state.get("config")
    return TrainConfig.from_dict(data) if data else TrainConfig()


def update_config(**changes: Any) -> TrainConfig:
    cfg = TrainConfig.from_dict(asdict(config()) | changes)
    st.session_state["config"] = asdict(cfg)
    return cfg


def dataset() -> Any | None:
    """The scanned dataset of this tab, re-scanned from the cache after a refresh."""
    source = st.session_state.get("data_source")
    if not source:
        return None
    try:
        cfg = config()
        return scan(source, cfg.val_fraction, cfg.seed)
    except TLError:
        return None


def job_id() -> str | None:
    """The tab's job: from the session, else from the URL (after a refresh); kept in the URL."""
    jid = st.session_state.get("job_id") or st.query_params.get("job")
    if jid and "job_id" not in st.session_state:
        _restore_from_job(jid)
    if jid:
        st.session_state["job_id"] = jid
        st.query_params["job"] = jid  # page switches clear query params: set it again
    return jid


def _restore_from_job(jid: str) -> None:
    """After a refresh the tab's session is new: rebuild it from the job it was watching."""
    try:
        cfg = job_manager().job_config(jid)
    except TLError:
        return
    st.session_state.setdefault("config", asdict(cfg))
    st.session_state.setdefault("data_source", cfg.data)


def set_job(jid: str) -> None:
    st.session_state["job_id"] = jid
    st.query_params["job"] = jid


def job_snapshot() -> Any | None:
    jid = job_id()
    if not jid:
        return None
    try:
        return job_manager().snapshot(jid)
    except TLError:
        return None


def error(exc: BaseException, next_step: str | None = None) -> None:
    """An engine error as the user should see it: the message and what to do, no traceback."""
    text = str(exc)
    if next_step:
        text += f"\n\n**What to do:** {next_step}"
    st.error(text, icon=":material/error:")


def sidebar() -> None:
    """Where the user is: dataset, backbone, strategy, and the current job."""
    cfg = config()
    ds = dataset()
    snap = job_snapshot()
    with st.sidebar:
        st.markdown("### Your project")
        if ds is not None:
            p = ds.profile
            st.markdown(
                f"**Data:** {_short(st.session_state.get('data_label') or p.source)}  \n"
                f"{len(p.classes)} classes, {p.n_train} train / {p.n_val} val"
            )
        else:
            st.markdown("**Data:** not chosen yet")
        st.markdown(f"**Backbone:** {cfg.backbone}  \n**Strategy:** {cfg.strategy}")
        if snap is not None:
            line = f"**Run:** {snap.status}"
            if snap.status == "queued" and snap.queue_position:
                line += f" (#{snap.queue_position} in queue)"
            elif snap.epochs_total:
                line += f", epoch {snap.epoch}/{snap.epochs_total}"
            st.markdown(line)


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def require_dataset() -> Any:
    ds = dataset()
    if ds is None:
        st.info("First choose the images to learn from.")
        st.page_link(PAGES["data"], label="Go to Data", icon=":material/folder_open:")
        st.stop()
    return ds


def next_button(page: str, label: str) -> None:
    if st.button(label, type="primary", key=f"next-{page}"):
        st.switch_page(PAGES[page])


@st.cache_resource(show_spinner="Reading the backbone's layers…")
def describe(backbone: str, n_classes: int) -> Any:
    """Layer groups and parameter totals (no weights loaded), once per backbone."""
    from tl_core.freezing import describe_backbone

    return describe_backbone(backbone, n_classes)


@st.cache_resource(show_spinner="Measuring this machine's speed…")
def device_rate() -> float:
    from tl_core.estimates import device_gmacs_per_second

    return device_gmacs_per_second()


def pick_run() -> Any | None:
    """The run to show: this tab's job, else a choice among finished runs on disk."""
    from tl_core.runs import Run, RunStore

    runs = [r for r in RunStore().list() if r.status in ("completed", "stopped")]
    snap = job_snapshot()
    current = st.session_state.get("run_dir") or (snap.run_dir if snap and snap.finished else None)
    if not runs:
        st.info("No finished run yet: train a model first.")
        st.page_link(PAGES["train"], label="Go to Freeze & train", icon=":material/model_training:")
        st.stop()
    dirs = [r.run_dir for r in runs]
    labels = {
        r.run_dir: f"{r.run_id} · {r.backbone} · {r.strategy} · {(r.best_val_acc or 0):.1%}" for r in runs
    }
    index = dirs.index(current) if current in dirs else 0
    chosen = st.selectbox("Run", dirs, index=index, format_func=labels.get)
    st.session_state["run_dir"] = chosen
    return Run(chosen)


@st.cache_resource(show_spinner="Loading the trained model…", max_entries=4)
def loaded_model(run_dir: str) -> Any:
    from tl_core.inference import load_run_model

    return load_run_model(run_dir)
