"""Room board: the runs the instructor shared with the room, best first, with their curves."""

import streamlit as st

import ui
from tl_core import ui_text
from tl_core.charts import training_curves
from tl_core.errors import TLError
from tl_core.evaluation import load_predictions
from tl_core.room import RoomBoard

ui.sidebar()
if not ui.is_instructor():
    ui.require_workspace()
st.title("Room board")
st.caption("Runs your instructor shared with the room: what worked, on which data, and how well.")
board = RoomBoard(ui.workspaces())
table = board.leaderboard()
if table.empty:
    st.info("Nothing shared yet: your instructor can share runs here.", icon=":material/leaderboard:")
    st.stop()

st.dataframe(
    table[["rank", "who", "data", "backbone", "strategy", "val accuracy"]],
    hide_index=True,
    width="stretch",
    column_config={"val accuracy": st.column_config.NumberColumn(format="percent")},
)
rows = {row["entry_id"]: row for row in table.to_dict("records")}
entry = st.selectbox(
    "Look at a shared run",
    list(rows),
    format_func=lambda e: f"#{rows[e]['rank']} " + ui_text.room_run_label(rows[e]),
)
try:
    run = board.run(entry)
except TLError as exc:
    ui.error(exc, "Pick another run: this one was removed from the board.")
    st.stop()
history = run.metrics()
if history:
    st.plotly_chart(training_curves(history), width="stretch")
preds = load_predictions(run)
labels = run.labels()
if preds is not None and labels:
    ui.confusion_block(preds, labels)
