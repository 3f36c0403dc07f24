"""Transfer Learning Studio: the Streamlit entry point. Only builds navigation."""

import streamlit as st

import ui

st.set_page_config(page_title="Transfer Learning Studio", page_icon=":material/neurology:", layout="wide")
ui.visit()  # keeps the workspace in the URL on every page

pages = {
    "Start": [st.Page("pages/home.py", title="Home", icon=":material/home:", url_path="home", default=True)],
    "Prepare": [
        st.Page("pages/data.py", title="1. Data", icon=":material/folder_open:", url_path="data"),
        st.Page("pages/strategy.py", title="2. Strategy", icon=":material/explore:", url_path="strategy"),
        st.Page(
            "pages/backbone.py", title="3. Backbone", icon=":material/account_tree:", url_path="backbone"
        ),
    ],
    "Train": [
        st.Page(
            "pages/train.py", title="4. Freeze & train", icon=":material/model_training:", url_path="train"
        )
    ],
    "Use": [
        st.Page("pages/results.py", title="5. Results", icon=":material/insights:", url_path="results"),
        st.Page("pages/export.py", title="6. Export", icon=":material/download:", url_path="export"),
    ],
    "Compare": [
        st.Page("pages/runs.py", title="Runs", icon=":material/table_view:", url_path="runs"),
        st.Page("pages/lessons.py", title="Lessons", icon=":material/science:", url_path="lessons"),
    ],
}
room = []
if ui.settings().workshop:
    room.append(st.Page("pages/room.py", title="Room board", icon=":material/leaderboard:", url_path="room"))
if ui.is_instructor():
    room.append(
        st.Page("pages/instructor.py", title="Instructor", icon=":material/school:", url_path="instructor")
    )
if room:
    pages["Room"] = room
st.navigation(pages).run()
