"""Shared UI helpers for the pages: settings, workspace, the job manager, the sidebar, errors.

Pages import this and ``tl_core``; ``tl_core`` never imports this (layers point one way).
Only ids and plain settings live in ``st.session_state``; jobs live in the process-wide
``JobManager`` (``st.cache_resource``), which runs them in worker processes, so a browser
refresh re-attaches through the URL (``ws`` and ``job``) and the app itself never trains.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

import streamlit as st

from tl_core import ui_text
from tl_core.archive import display_name
from tl_core.config import TrainConfig
from tl_core.errors import TLError
from tl_core.paths import studio_home
from tl_core.settings import StudioSettings
from tl_core.workspaces import SOLO, WorkspaceStore


def _navigation_belongs_to_app() -> None:
    """Run every page through ``app.py``'s ``st.navigation``.

    With a folder named ``pages/`` beside the entry point, Streamlit starts in its old
    multipage mode: when the first request after a server start is a page URL (a student's
    refresh after a restart), it runs that page's file directly: raw file names in the sidebar
    (the instructor page among them), no wide layout, no workspace in the URL. The first
    ``st.navigation`` call switches that mode off for the process; this switches it off from
    whichever script imports the helpers first and reruns through ``app.py``.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        if st.runtime.exists():
            st.rerun()


_navigation_belongs_to_app()

PAGES = {
    "home": "pages/home.py",
    "data": "pages/data.py",
    "strategy": "pages/strategy.py",
    "backbone": "pages/backbone.py",
    "train": "pages/train.py",
    "results": "pages/results.py",
    "export": "pages/export.py",
    "runs": "pages/runs.py",
    "lessons": "pages/lessons.py",
    "room": "pages/room.py",
    "instructor": "pages/instructor.py",
}
MAX_SCANS = 16
"""Scanned datasets kept in memory, across all workspaces (each holds file lists, not images)."""
SWEEP_EVERY_S = 3600.0
_sweep = {"at": 0.0}
_sweep_lock = threading.Lock()


# -- settings, workspace, instructor ---------------------------------------------------------------
def settings() -> StudioSettings:
    """Read on every call (a few environment lookups), so tests and restarts see the current env."""
    return StudioSettings.from_env()


def workspaces() -> WorkspaceStore:
    return WorkspaceStore()


def workspace_id() -> str | None:
    """``solo`` alone; in a workshop the student's workspace from the session or the URL's
    ``ws`` (validated), kept in the URL because page switches clear query params."""
    if not settings().workshop:
        return SOLO
    ws = st.session_state.get("ws") or st.query_params.get("ws")
    if ws and st.session_state.get("ws") != ws:
        try:  # read once per session; the name is kept for the sidebar
            st.session_state["ws_name"] = workspaces().get(ws).name
        except TLError:
            st.query_params.pop("ws", None)
            return None
        st.session_state["ws"] = ws
    if ws:
        _keep_in_url("ws", ws)
    return ws


def _keep_in_url(key: str, value: str) -> None:
    """Page switches clear query params: set them again, but only when missing (every write
    is a message to the browser, and fragments ask every second)."""
    if st.query_params.get(key) != value:
        st.query_params[key] = value


def join(name: str, room_code: str = "") -> str:
    """Create a workspace for ``name`` and make it this tab's; raises ``TLError`` for the user."""
    from tl_core.errors import ConfigError

    if not settings().check_room_code(room_code):
        raise ConfigError("That room code is not right: ask your instructor for it.")
    ws = workspaces().create(name)
    st.session_state["ws"], st.session_state["ws_name"] = ws.id, ws.name
    st.query_params["ws"] = ws.id
    return ws.id


def workspace_name() -> str | None:
    ws = workspace_id()
    if ws in (None, SOLO):
        return None
    if "ws_name" not in st.session_state:
        try:
            st.session_state["ws_name"] = workspaces().get(ws).name
        except TLError:
            return None
    return st.session_state["ws_name"]


def visit() -> None:
    """Every page view: keep ``ws`` and ``job`` in the URL (re-attaching the tab to its job
    after a refresh, before any page reads the config), record activity, and clear idle
    uploads hourly."""
    ws = workspace_id()
    job_id()
    if ws and ws != SOLO:
        with contextlib.suppress(TLError):
            workspaces().touch(ws)  # the store writes at most once a minute
    ttl = settings().upload_ttl_s
    if ttl is None:
        return
    with _sweep_lock:
        if time.time() - _sweep["at"] < SWEEP_EVERY_S:
            return
        _sweep["at"] = time.time()
    workspaces().sweep_uploads(ttl)


def require_workspace() -> str:
    """The workspace of this tab; in a workshop, without one, point to Home and stop."""
    ws = workspace_id()
    if ws is None:
        stop_with_link("Join the workshop first: type your name on the Home page.", "home", ":material/home:")
    return ws


def stop_with_link(text: str, page: str, icon: str, label: str | None = None) -> None:
    """Say what is missing, link to the page that provides it, and end this page's run."""
    st.info(text)
    st.page_link(PAGES[page], label=label or f"Go to {page.capitalize()}", icon=icon)
    st.stop()


def is_instructor() -> bool:
    return bool(settings().instructor_token) and st.session_state.get("instructor") is True


def sign_in_instructor(token: str) -> bool:
    ok = settings().check_instructor(token)
    st.session_state["instructor"] = ok
    return ok


# -- the job manager and caches --------------------------------------------------------------------
def _shutdown(manager: Any) -> None:
    manager.shutdown()


@st.cache_resource(max_entries=4, on_release=_shutdown, show_spinner=False)
def _manager(home: str, config: StudioSettings) -> Any:
    """One per process (per studio home and settings, which only tests change)."""
    from tl_core.jobs import create_app_manager

    return create_app_manager(config)


def job_manager() -> Any:
    """Shared by every tab: jobs run in worker processes and outlive any session. A Ray cluster
    that can't be reached stops the page with its one-line reason (and is tried again on the
    next rerun: a failed start is not cached)."""
    try:
        return _manager(str(studio_home()), settings())
    except TLError as exc:
        error(
            exc,
            "Check the Ray cluster (`ray status` on its head), or start the app without `--executor ray`.",
        )
        st.stop()


class _LRU:
    """A small thread-safe LRU: tabs of many students share it."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, match: Any) -> None:
        with self._lock:
            for key in [k for k in self._items if match(k)]:
                del self._items[key]


@st.cache_resource
def _scans() -> _LRU:
    """Process-wide scan results: st.cache_* can't host a progress bar drawn from inside."""
    return _LRU(MAX_SCANS)


def scan(source: str, cfg: TrainConfig, progress: Any = None) -> Any:
    """Scan once per workspace, source, split and text columns; "Rescan" on the data page calls
    ``clear_scans``."""
    from tl_core.data import scan_dataset

    split = (cfg.val_fraction, cfg.seed, cfg.test_fraction, cfg.text_column, cfg.label_column)
    key = (workspace_id(), source, *split)
    found = _scans().get(key)
    if found is None:
        found = scan_dataset(
            source,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            progress=progress,
            test_fraction=cfg.test_fraction,
            text_column=cfg.text_column,
            label_column=cfg.label_column,
        )
        _scans().put(key, found)
    return found


def clear_scans() -> None:
    ws = workspace_id()
    _scans().drop(lambda key: key[0] == ws)


def uploads_dir() -> Any:
    return workspaces().uploads_dir(require_workspace())


# -- this tab's project ----------------------------------------------------------------------------
def config() -> TrainConfig:
    data = st.session_state.get("config")
    return TrainConfig.from_dict(data) if data else TrainConfig()


def update_config(**changes: Any) -> TrainConfig:
    return set_config(TrainConfig.from_dict(asdict(config()) | changes))


def set_config(cfg: TrainConfig) -> TrainConfig:
    st.session_state["config"] = asdict(cfg)
    return cfg


def set_data(source: str, label: str) -> None:
    st.session_state["data_source"], st.session_state["data_label"] = source, label


def data_label() -> str | None:
    source = st.session_state.get("data_source")
    if not source:
        return None
    return st.session_state.get("data_label") or config().data_label or display_name(source)


def dataset() -> Any | None:
    """The scanned dataset of this tab, re-scanned from the cache after a refresh."""
    source = st.session_state.get("data_source")
    if not source:
        return None
    try:
        return scan(source, config())
    except TLError:
        return None


def tab_token() -> str:
    """Identifies this tab to the job manager, so a double-clicked Start is one request."""
    return st.session_state.setdefault("tab_token", secrets.token_hex(8))


# -- this tab's job ----------------------------------------------------------------------------------
def _forget_job() -> None:
    st.session_state.pop("job_id", None)
    st.query_params.pop("job", None)


def job_id() -> str | None:
    """The tab's job: from the session, else from the URL (after a refresh); kept in the URL.
    A job of another workspace is treated exactly like one that does not exist."""
    jid = st.session_state.get("job_id") or st.query_params.get("job")
    if not jid:
        return None
    ws = workspace_id()
    if ws is None:
        _forget_job()
        return None
    if st.session_state.get("job_id") != jid:
        try:
            cfg = job_manager().job_config(jid, workspace=ws)
        except TLError:
            _forget_job()
            return None
        _restore_from(cfg)
    st.session_state["job_id"] = jid
    _keep_in_url("job", jid)
    return jid


def _restore_from(cfg: TrainConfig) -> None:
    """After a refresh the tab's session is new: rebuild it from the job it was watching."""
    st.session_state.setdefault("config", asdict(cfg))
    if "data_source" not in st.session_state:
        set_data(cfg.data, cfg.data_label or display_name(cfg.data))


def set_job(jid: str) -> None:
    st.session_state["job_id"] = jid
    st.query_params["job"] = jid


def job_snapshot() -> Any | None:
    jid = job_id()
    if not jid:
        return None
    try:
        return job_manager().snapshot(jid, workspace=workspace_id())
    except TLError:
        _forget_job()
        return None


def stop_job(jid: str) -> None:
    """The Stop button's callback: only this workspace's job."""
    try:
        job_manager().stop(jid, workspace=workspace_id())
    except TLError:
        _forget_job()


# -- shared widgets ----------------------------------------------------------------------------------
def error(exc: BaseException, next_step: str | None = None) -> None:
    """An engine error as the user should see it: the message and what to do, no traceback."""
    text = str(exc)
    if next_step:
        text += f"\n\n**What to do:** {next_step}"
    st.error(text, icon=":material/error:")


def sidebar() -> None:
    """Where the user is: who, dataset, backbone, strategy, and the current job."""
    if workspace_id() is None:
        return
    snap = job_snapshot()  # first: after a refresh it restores the config from the job
    cfg = config()
    ds = dataset()
    with st.sidebar:
        name = workspace_name()
        if name:
            st.markdown(f"**Student:** {name}")  # "Signed in as" stays unique to Home
        st.markdown("### Your project")
        if ds is not None:
            p = ds.profile
            st.markdown(
                f"**Data:** {_short(data_label() or p.source)}  \n"
                f"{len(p.classes)} classes, {p.n_train} train / {p.n_val} val"
            )
        else:
            st.markdown("**Data:** not chosen yet")
        st.markdown(f"**Backbone:** {cfg.backbone}  \n**Strategy:** {cfg.strategy}")
        if snap is not None:
            _run_line(snap)


def _run_line(first: Any) -> None:
    """The "Run:" line, polled only while the job is queued or running."""
    active = not first.finished

    @st.fragment(run_every=ui_text.POLL_SIDEBAR_S if active else None)
    def line() -> None:
        snap = job_snapshot()
        if snap is None:
            return
        st.markdown(ui_text.run_line(snap))
        if active and snap.finished:
            st.rerun()  # polling stops with a full rerun

    line()


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def require_dataset() -> Any:
    ds = dataset()
    if ds is None:
        stop_with_link("First choose the images to learn from.", "data", ":material/folder_open:")
    return ds


def next_button(page: str, label: str) -> None:
    if st.button(label, type="primary", key=f"next-{page}"):
        st.switch_page(PAGES[page])


@st.cache_resource(show_spinner="Reading the backbone's layers…")
def describe(backbone: str, n_classes: int) -> Any:
    """Layer groups and parameter totals (no weights loaded), once per backbone."""
    from tl_core.freezing import describe_backbone

    return describe_backbone(backbone, n_classes)


@st.cache_data(show_spinner=False, max_entries=16)
def table_file(source: str) -> str | None:
    """The table behind a data source (a zip unpacks once: its folder is named by its hash)."""
    from tl_core.data import table_file as find

    found = find(source)
    return str(found) if found else None


@st.cache_data(show_spinner="Reading the columns…", max_entries=16)
def table_columns(path: str) -> tuple[list[str], str | None, str | None]:
    """An upload's columns and the guessed pair, read once (uploads are named by their content)."""
    from tl_core.text_data import table_columns as read

    return read(path)


def over_length(backbone: str, source: str, cfg: TrainConfig, ds: Any) -> tuple[int, int] | None:
    """How many of ``ds``'s texts ``backbone`` would cut, and where (None: its tokenizer isn't
    here); counted once per scan and backbone."""
    split = (cfg.val_fraction, cfg.seed, cfg.test_fraction, cfg.text_column, cfg.label_column)
    return _over_length(backbone, source, split, ds)


@st.cache_data(show_spinner="Counting word pieces…", max_entries=8)
def _over_length(backbone: str, source: str, split: tuple, _ds: Any) -> tuple[int, int] | None:
    from tl_core.text_models import over_length as count

    return count(backbone, [t for rows in _ds.items.values() for t, _ in rows])


@st.cache_resource(show_spinner="Measuring this machine's speed…")
def device_rate() -> float:
    from tl_core.estimates import device_gmacs_per_second

    return device_gmacs_per_second()


def pick_run() -> Any | None:
    """The run to show: the URL's ``run`` or this tab's finished job, else a choice among this
    workspace's trained runs, labelled by data, strategy, accuracy and time (the id is
    secondary). A ``run`` of another workspace is "not found", like one that never existed."""
    from tl_core.runs import Run

    ws = require_workspace()
    runs = ui_text.trained_runs(job_manager().runs(ws).list())
    by_dir = {r.run_dir: r for r in runs}
    wanted = st.query_params.get("run")
    from_url = next((r.run_dir for r in runs if r.run_id == wanted), None)
    if wanted and from_url is None:
        st.warning(
            "Run not found: no trained run with that id in your workspace.", icon=":material/search_off:"
        )
        st.query_params.pop("run", None)
    if not runs:
        stop_with_link(
            "No trained run yet: train a model first.",
            "train",
            ":material/model_training:",
            label="Go to Freeze & train",
        )
    snap = job_snapshot()
    current = (
        from_url or st.session_state.get("run_dir") or (snap.run_dir if snap and snap.finished else None)
    )
    dirs = list(by_dir)
    index = dirs.index(current) if current in by_dir else 0
    chosen = st.selectbox("Run", dirs, index=index, format_func=lambda d: by_dir[d].id_label)
    st.session_state["run_dir"] = chosen
    _keep_in_url("run", by_dir[chosen].run_id)
    return Run(chosen)


def confusion_block(preds: Any, labels: list[str], key: str | None = None, things: str = "images") -> None:
    """The confusion matrix with its one-line reading guide (Results and the Room board).

    With ``key``, a click on a cell chooses it: the cell lives in ``st.session_state`` under
    ``{key}-true`` and ``{key}-pred``, the keys of the selectboxes that are its fallback
    (``ui.insights.cell_browser``), so both ways of choosing stay in sync.
    """
    from tl_core.charts import confusion_cell, confusion_matrix, selectable_confusion
    from tl_core.evaluation import confusion

    st.subheader("Confusion matrix")
    guide = "Rows: the true class. Columns: what the model said. The diagonal is right."
    matrix = confusion(preds, labels)
    if key is None:
        st.caption(guide)
        st.plotly_chart(confusion_matrix(matrix, labels), width="stretch")
        return
    st.caption(guide + f" Click a cell to see its {things} below.")

    def clicked() -> None:
        cell = confusion_cell(st.session_state[f"{key}-click"]["selection"]["points"])
        if cell:
            st.session_state[f"{key}-true"], st.session_state[f"{key}-pred"] = cell

    true, pred = st.session_state.get(f"{key}-true"), st.session_state.get(f"{key}-pred")
    st.plotly_chart(
        selectable_confusion(matrix, labels, (true, pred) if true and pred else None),
        key=f"{key}-click",
        on_select=clicked,
        selection_mode="points",
        width="stretch",
    )


@st.cache_resource(show_spinner="Loading the trained model…", max_entries=4)
def loaded_model(run_dir: str) -> Any:
    from tl_core.inference import load_run_model

    return load_run_model(run_dir)
