"""Transfer Learning Studio: the Streamlit entry point. Only builds navigation."""

import streamlit as st

st.set_page_config(page_title="Transfer Learning Studio", page_icon=":material/neurology:", layout="wide")

pages = {
    "Start": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Prepare": [
        st.Page("pages/data.py", title="1. Data", icon=":material/folder_open:"),
        st.Page("pages/strategy.py", title="2. Strategy", icon=":material/explore:"),
        st.Page("pages/backbone.py", title="3. Backbone", icon=":material/account_tree:"),
    ],
    "Train": [st.Page("pages/train.py", title="4. Freeze & train", icon=":material/model_training:")],
    "Use": [
        st.Page("pages/results.py", title="5. Results", icon=":material/insights:"),
        st.Page("pages/export.py", title="6. Export", icon=":material/download:"),
    ],
}
st.navigation(pages).run()
