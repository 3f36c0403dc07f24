"""Home: what transfer learning is, and the two ways in."""

import streamlit as st

import ui

ui.sidebar()
st.title("Transfer Learning Studio")
st.markdown(
    "**Transfer learning** starts from a network that already learned to see from 1.2 million photos. "
    "Its early layers detect edges, textures and shapes that are useful for almost any image, so you keep "
    "them and train only a small new *head* (and perhaps the top layers) for **your** classes. "
    "That needs hundreds of images instead of millions, and minutes instead of days."
)
st.image("assets/transfer.svg", width="stretch")

left, right = st.columns(2)
with left:
    st.markdown("**Try it now** with 1,797 handwritten digits built into the app. Works offline.")
    if st.button("Start with the sample dataset", type="primary", width="stretch"):
        st.session_state["data_source"] = "digits"
        st.session_state["data_label"] = "digits (built-in sample)"
        st.switch_page(ui.PAGES["data"])
with right:
    st.markdown("**Bring your own**: a zip or folder with one sub-folder of images per class.")
    if st.button("Use my own images", width="stretch"):
        st.session_state["data_choice"] = "Upload a zip"
        st.switch_page(ui.PAGES["data"])
