"""Freeze & train: the layer-group freeze map, then a live view of the background job."""

import pandas as pd
import streamlit as st

import ui
from tl_core import ui_text
from tl_core.charts import freeze_map, training_curves
from tl_core.errors import TLError
from tl_core.freezing import HEAD, freeze_rows, group_learning_rates
from tl_core.runs import RunStatus
from tl_core.strategies import config_from_freeze_map, default_trainable
from tl_core.text_models import POOLINGS, TEXT_BACKBONES
from ui import lr_finder as lr_ui

lr_ui.job_id()  # first: after a refresh mid-test it restores the project from the test's config
ui.sidebar()
ws = ui.require_workspace()
st.title("4. Freeze & train")
ds = ui.require_dataset()
cfg = ui.config()
n_classes = len(ds.classes)
try:
    groups, totals = ui.describe(cfg.backbone, n_classes)
except TLError as exc:  # a hub encoder not on this machine yet: its layers can't be counted
    ui.error(exc, "Pick a backbone that is on this machine on the Backbone page.")
    st.stop()
names = [g.name for g in groups]

text = ds.profile.modality == "text"
st.markdown(
    f"**{cfg.backbone}**, strategy **{cfg.strategy}**, {cfg.epochs or 'default'} epochs. "
    + (
        "Each row is a layer group, from the **embeddings** (a vector per word piece) through the "
        "encoder's **layers** (each mixes in context from the whole text) to the **head** (your classes). "
        if text
        else "Each row is a layer group, from the **stem** (sees raw pixels: edges, colours) to the **head** "
        "(your classes). "
    )
    + "Frozen groups keep their pretrained weights; ticked ones are retrained."
)
ticked = default_trainable(cfg, groups)
auto_lrs = group_learning_rates(
    groups, names, cfg.resolved().lr, cfg.backbone_lr_scale, cfg.lr_decay, cfg.group_lrs
)
base = pd.DataFrame(
    {
        "layer group": names,
        "parameters": [totals[n] for n in names],
        "train": [n in ticked for n in names],
        "learning rate": [auto_lrs[n] for n in names],
    }
)
editor_key = f"freeze-{cfg.backbone}-{cfg.strategy}-{n_classes}"
edited = st.data_editor(
    base,
    hide_index=True,
    width="stretch",
    key=editor_key,
    disabled=["layer group", "parameters"],
    column_config={
        "train": st.column_config.CheckboxColumn(
            help="Untick to freeze: its weights stay as pretrained. The head always trains."
        ),
        "learning rate": st.column_config.NumberColumn(
            format="%.1e",
            min_value=1e-7,
            max_value=0.5,
            help="Discriminative LRs: layers near the input hold generic features, so they move least.",
        ),
    },
)
trainable = [row["layer group"] for _, row in edited.iterrows() if row["train"] or row["layer group"] == HEAD]
group_lrs = {
    row["layer group"]: float(row["learning rate"])
    for _, row in edited.iterrows()
    if row["layer group"] in trainable
}
rows = freeze_rows(totals, trainable)
n_train = sum(r.trainable for r in rows)
n_total = sum(r.total for r in rows)
c1, c2, c3 = st.columns(3)
c1.metric("Trainable parameters", f"{n_train:,}", f"{n_train / n_total:.1%} of the model", delta_color="off")
c2.metric("Frozen parameters", f"{n_total - n_train:,}")
c3.metric("Layer groups trained", f"{len(trainable)} of {len(names)}")
st.plotly_chart(freeze_map(rows), width="stretch")
if text:
    default = TEXT_BACKBONES[cfg.backbone].pooling if cfg.backbone in TEXT_BACKBONES else "mean"
    pooling = st.radio(
        "Pooling",
        POOLINGS,
        index=POOLINGS.index(cfg.model_kwargs.get("pooling", default)),
        horizontal=True,
        format_func={"mean": "mean of the word pieces", "cls": "first token ([CLS])"}.get,
        help="How the encoder's vectors, one per word piece, become one per text: their mean (what "
        f"sentence encoders such as MiniLM were trained for) or the first token's (BERT's habit). "
        f"{cfg.backbone}'s default: {default}.",
    )
    if pooling != cfg.model_kwargs.get("pooling", default):
        cfg = ui.update_config(model_kwargs={**cfg.model_kwargs, "pooling": pooling})
train_bn = (
    False
    if text
    else st.checkbox(  # transformers have no batch norm
        "Keep BatchNorm trainable in frozen groups (fastai's default)",
        value=cfg.train_bn,
        help="Lets frozen layers re-centre their feature statistics on your data. Keras advises the opposite "
        "(keep them frozen) to avoid disturbing pretrained features; off is the safer default.",
    )
)
final = config_from_freeze_map(ui.update_config(train_bn=train_bn), trainable, group_lrs, groups)
lr_ui.section(final, groups, editor_key)
st.divider()

snap = ui.job_snapshot()
busy = snap is not None and not snap.finished
if st.button(
    "Start training",
    type="primary",
    disabled=busy,
    help="Runs in the background: you can switch pages or refresh without losing it.",
):
    try:
        request = ui_text.request_id(ui.tab_token(), final.to_dict())
        ui.set_job(ui.job_manager().submit(final, workspace=ws, request_id=request))
        st.rerun()
    except TLError as exc:  # QuotaExceeded too: its message says what to do
        ui.error(exc)
room = ui.settings()
limit = ui_text.time_limit_text(room.job_time_limit_s) if room.workshop else None
if limit:
    st.caption(limit)
interval = ui_text.poll_interval(snap)


def curves(job_id: str, history: list) -> object:
    """The chart is rebuilt only when an epoch was added, not on every poll."""
    key = (job_id, len(history))
    cached = st.session_state.get("_curves")
    if cached is None or cached[0] != key:
        cached = (key, training_curves(history))
        st.session_state["_curves"] = cached
    return cached[1]


@st.fragment(run_every=interval)
def live() -> None:
    """Reads one snapshot per poll (the job runs in a worker process, never in this one)."""
    s = ui.job_snapshot()
    if s is None:
        return
    if ui_text.poll_interval(s) != interval:
        st.rerun()  # queued -> running -> finished: a full rerun sets the new polling rate
    if s.status == RunStatus.QUEUED:
        st.info(ui_text.queue_text(s), icon=":material/hourglass_top:")
    else:
        st.progress(min(max(s.progress, 0.0), 1.0), text=ui_text.progress_text(s))
    if not s.finished:
        st.button(
            "Stop",
            on_click=ui.stop_job,
            args=(s.job_id,),
            help="Stops after the current batch and keeps the best weights so far.",
        )
    if s.history:
        st.plotly_chart(curves(s.job_id, s.history), width="stretch", key="curves")
    result = ui_text.outcome(s)
    if result is None:
        return
    kind, text = result
    if kind == "error":
        ui.error(TLError(text), "Adjust the settings above and start again.")
    elif kind == "warning":
        st.warning(text, icon=":material/info:")
    else:
        st.success(text)
        st.session_state["run_dir"] = s.run_dir
        st.page_link(ui.PAGES["results"], label="See the results →", icon=":material/insights:")


live()
