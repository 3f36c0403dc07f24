"""Transfer Learning Studio: the Streamlit entry point. Only builds navigation."""

import streamlit as st

st.set_page_config(page_title="Transfer Learning Studio", page_icon="🧠", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
]
st.navigation(pages).run()
