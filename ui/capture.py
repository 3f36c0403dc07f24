"""The Data page's camera source: name classes, take photos per class, delete bad shots.

The photos live on disk (``tl_core.capture``), so a rerun or a refresh never loses one. The
session holds only the chosen class and a counter: each photo received gives the camera widget
a fresh key, so it goes back to the live view and the next click takes the next photo (an
``on_change`` callback, so a rerun never submits the same shot again).
``st.camera_input`` rather than streamlit-webrtc: it needs no STUN server or aiortc stack, so it
works offline in a workshop room.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

import ui
from tl_core.capture import LABEL, CaptureSet
from tl_core.errors import TLError

CHOICE = "Capture with the camera"
THUMB_PX = 96
PER_ROW = 8
_ERROR = "cap_error"
_NOTICE = "cap_notice"


def capture_set() -> CaptureSet:
    return CaptureSet.in_uploads(ui.uploads_dir())


def capture_source() -> tuple[str | None, str | None]:
    """Draw the camera source; once the user has chosen to use the set, return it as
    ``(source, label)``. The camera sits beside the controls, the photos of each class below."""
    cs = capture_set()
    st.caption(
        "Name two or more classes, then take photos of each: vary the angle, distance and light "
        "so the model learns the thing, not the background."
    )
    camera, controls = st.columns([3, 2], gap="large")
    with controls:
        _add_class_form(cs)
        _show_messages()
        classes = cs.classes()
        cls = st.radio("Taking photos of", classes, key="cap_class") if classes else None
        in_use = _status(cs)
    with camera:
        if cls is None:
            st.caption("The camera starts once your first class has a name.")
        else:
            n = st.session_state.setdefault("cap_shot", 0)
            st.camera_input(
                f"Take a photo of **{cls}**",
                key=f"cap_cam_{n}",
                on_change=_save,
                args=(str(cs.root), cls, f"cap_cam_{n}"),
                help="Each photo is saved at once; the camera then gets ready for the next one.",
                # A fixed resolution: without one the stream restarts whenever the column's
                # width changes (a scrollbar appearing), and a click during that is lost.
                resolution="480p",
            )
    for name in classes:
        _class_block(cs, name)
    return (str(cs.root), LABEL) if in_use else (None, None)


def _status(cs: CaptureSet) -> bool:
    """What is still missing, or the button that makes the set the data; True if it is."""
    summary = cs.summary(ui.config().val_fraction)
    for problem in summary.problems:
        st.info(problem, icon=":material/photo_camera:")
    for hint in summary.hints:
        st.caption(hint)
    current = st.session_state.get("data_source")
    if current == str(cs.root) and summary.ready:
        st.success(
            "These photos are your data: the scan below follows every change.", icon=":material/check:"
        )
        return True
    if summary.ready:
        if current:
            st.caption(f"Until you use them, your data stays **{ui.data_label()}** (below).")
        st.button(
            f"Use these {summary.total} photos",
            type="primary",
            icon=":material/check:",
            key="cap_use",
            on_click=_use,
            args=(str(cs.root),),
        )
    return False


def _add_class_form(cs: CaptureSet) -> None:
    with st.form("cap_new_class", clear_on_submit=True, border=False):
        name = st.text_input("New class name", placeholder="e.g. thumbs up", max_chars=40)
        if st.form_submit_button("Add class", icon=":material/add:"):
            try:
                st.session_state["cap_class"] = cs.add_class(name)  # start taking its photos
            except TLError as exc:
                st.session_state[_ERROR] = str(exc)


def _class_block(cs: CaptureSet, name: str) -> None:
    thumbs = cs.thumbnails(name, THUMB_PX)
    with st.container(border=True):
        head, menu = st.columns([5, 1], vertical_alignment="center")
        head.markdown(f"**{name}**: {_photos(len(thumbs))}")
        with menu.popover("Edit", icon=":material/edit:", width="stretch"):
            st.text_input("Rename to", value=name, key=f"cap_rename_{name}", max_chars=40)
            st.button("Rename", key=f"cap_do_rename_{name}", on_click=_rename, args=(str(cs.root), name))
            st.button(
                f"Delete class and its {_photos(len(thumbs))}" if thumbs else "Delete class",
                key=f"cap_drop_{name}",
                icon=":material/delete_forever:",
                on_click=_drop_class,
                args=(str(cs.root), name),
            )
        if not thumbs:
            st.caption("No photos yet: pick it under *Taking photos of* and take some.")
        for start in range(0, len(thumbs), PER_ROW):
            cols = st.columns(PER_ROW)
            for col, (photo, img) in zip(cols, thumbs[start : start + PER_ROW], strict=False):
                col.image(img, width=THUMB_PX)
                col.button(
                    "",
                    key=f"cap_del_{name}_{photo.name}",
                    icon=":material/delete:",
                    help="Delete this photo",
                    type="tertiary",
                    on_click=_delete,
                    args=(str(cs.root), name, photo.name),
                )


def _photos(n: int) -> str:
    return f"{n} photo" if n == 1 else f"{n} photos"


def _show_messages() -> None:
    """What a callback had to say (callbacks run before the page is drawn)."""
    message = st.session_state.pop(_ERROR, None)
    if message:
        ui.error(Exception(message))
    notice = st.session_state.pop(_NOTICE, None)
    if notice:
        st.toast(notice, icon=":material/content_copy:")


# -- callbacks: they run before the script, so the page drawn next shows the new state -------------
def _save(root: str, cls: str, key: str) -> None:
    shot = st.session_state.get(key)
    if shot is None:  # the photo was cleared, not taken
        return
    st.session_state["cap_shot"] = st.session_state.get("cap_shot", 0) + 1  # a fresh, live camera
    try:
        _, added = CaptureSet(Path(root)).add_photo(cls, shot.getvalue())
    except TLError as exc:
        st.session_state[_ERROR] = str(exc)
        return
    if not added:
        st.session_state[_NOTICE] = f"That picture is identical to one already in {cls}: it is kept once."
    _changed(root)


def _use(root: str) -> None:
    ui.clear_scans()  # the set may have changed since it was last scanned
    ui.set_data(root, LABEL)


def _delete(root: str, cls: str, name: str) -> None:
    _run(root, lambda cs: cs.delete_photo(cls, name))


def _rename(root: str, old: str) -> None:
    def rename(cs: CaptureSet) -> None:
        clean = cs.rename_class(old, st.session_state.get(f"cap_rename_{old}", old))
        if st.session_state.get("cap_class") == old:
            st.session_state["cap_class"] = clean

    _run(root, rename)


def _drop_class(root: str, name: str) -> None:
    _run(root, lambda cs: cs.delete_class(name))


def _run(root: str, action: Callable[[CaptureSet], object]) -> None:
    try:
        action(CaptureSet(Path(root)))
    except TLError as exc:
        st.session_state[_ERROR] = str(exc)
        return
    _changed(root)


def _changed(root: str) -> None:
    """If this set is the current data, forget its scan: the next one sees the new photos,
    and a set no longer trainable stops being the data (its problems show instead)."""
    if st.session_state.get("data_source") != root:
        return
    ui.clear_scans()
    if not CaptureSet(Path(root)).summary(ui.config().val_fraction).ready:
        st.session_state.pop("data_source", None)
