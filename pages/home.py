"""Home: what transfer learning is, and the two ways in (in a workshop, after joining)."""

import streamlit as st

import ui
from tl_core.errors import TLError

ui.sidebar()
st.title("Transfer Learning Studio")
room = ui.settings()
ws = ui.workspace_id()

if ws is None:
    st.subheader("Join the workshop")
    st.caption("Your instructor sees your name next to your runs; nobody else sees your work.")
    with st.form("join"):  # no help icons: get_by_label("Your name") must find the input alone
        name = st.text_input("Your name", max_chars=40, placeholder="e.g. Ada")
        code = st.text_input("Room code", placeholder="from your instructor") if room.room_code else ""
        if st.form_submit_button("Join", type="primary"):
            try:
                ui.join(name, code)
                st.rerun()
            except TLError as exc:
                ui.error(exc)
elif room.workshop:
    st.success(f"Signed in as **{ui.workspace_name()}**.", icon=":material/person:")
    st.caption(
        "Bookmark this page: its link carries your workspace, so it brings you back to your runs, "
        "on this computer or another. Keep it to yourself."
    )

st.markdown(
    "**Transfer learning** starts from a network that already learned to see from 1.2 million photos. "
    "Its early layers detect edges, textures and shapes that are useful for almost any image, so you keep "
    "them and train only a small new *head* (and perhaps the top layers) for **your** classes. "
    "That needs hundreds of images instead of millions, and minutes instead of days."
)
st.image("assets/transfer.svg", width="stretch")

if ws is not None:
    left, right = st.columns(2)
    with left:
        st.markdown("**Try it now** with 1,797 handwritten digits built into the app. Works offline.")
        if st.button("Start with the sample dataset", type="primary", width="stretch"):
            ui.set_data("digits", "digits (built-in sample)")
            st.session_state["data_choice"] = "Built-in sample (digits)"
            st.switch_page(ui.PAGES["data"])
    with right:
        st.markdown("**Bring your own**: a zip or folder with one sub-folder of images per class.")
        if st.button("Use my own images", width="stretch"):
            st.session_state["data_choice"] = "Upload a zip"
            st.switch_page(ui.PAGES["data"])

if room.instructor_token:
    if ui.is_instructor():
        st.page_link(ui.PAGES["instructor"], label="Open the instructor view", icon=":material/school:")
    else:
        with st.expander("Instructor"):
            token = st.text_input("Instructor token", type="password")
            if st.button("Open the instructor view"):
                if ui.sign_in_instructor(token):
                    st.rerun()
                st.error("That token is not right.", icon=":material/error:")
