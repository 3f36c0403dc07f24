"""Freeze & train: the layer-group freeze map, then a live view of the background job."""

import pandas as pd
import streamlit as st

import ui
from tl_core.charts import freeze_map, training_curves
from tl_core.errors import TLError
from tl_core.freezing import HEAD, freeze_rows, group_learning_rates
from tl_core.strategies import config_from_freeze_map, default_trainable

ui.sidebar()
st.title("4. Freeze & train")
ds = ui.require_dataset()
cfg = ui.config()
n_classes = len(ds.classes)
groups, totals = ui.describe(cfg.backbone, n_classes)
names = [g.name for g in groups]

st.markdown(
    f"**{cfg.backbone}**, strategy **{cfg.strategy}**, {cfg.epochs or 'default'} epochs. "
    "Each row is a layer group, from the **stem** (sees raw pixels: edges, colours) to the **head** "
    "(your classes). Frozen groups keep their pretrained weights; ticked ones are retrained."
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
edited = st.data_editor(
    base,
    hide_index=True,
    width="stretch",
    key=f"freeze-{cfg.backbone}-{cfg.strategy}-{n_classes}",
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
train_bn = st.checkbox(
    "Keep BatchNorm trainable in frozen groups (fastai's default)",
    value=cfg.train_bn,
    help="Lets frozen layers re-centre their feature statistics on your data. Keras advises the opposite "
    "(keep them frozen) to avoid disturbing pretrained features; off is the safer default.",
)
final = config_from_freeze_map(ui.update_config(train_bn=train_bn), trainable, group_lrs, groups)

snap = ui.job_snapshot()
busy = snap is not None and not snap.finished
if st.button(
    "Start training",
    type="primary",
    disabled=busy,
    help="Runs in the background: you can switch pages or refresh without losing it.",
):
    try:
        ui.set_job(ui.job_manager().submit(final))
        st.rerun()
    except TLError as exc:
        ui.error(exc)


@st.fragment(run_every=1.0 if busy else None)
def live() -> None:
    """Polls the job snapshot (the training thread never touches Streamlit)."""
    s = ui.job_snapshot()
    if s is None:
        return
    if s.status == "queued":
        st.info(
            f"Waiting for the machine: number {s.queue_position} in the queue. Training starts automatically."
        )
    else:
        text = s.stage if s.stage != "training" else f"epoch {s.epoch}/{s.epochs_total} ({s.phase})"
        if s.finished:
            text = f"{s.epoch} epoch(s) run" + (" (early stopping)" if s.stage == "early-stopped" else "")
        if s.stage_total and s.stage.startswith(("caching", "scanning")):
            text += f" {s.stage_done}/{s.stage_total}"
        if s.eta_s is not None and not s.finished:
            text += f" · about {int(s.eta_s // 60)}:{int(s.eta_s % 60):02d} left"
        st.progress(min(max(s.progress, 0.0), 1.0), text=f"{s.status}: {text}")
    if not s.finished:
        st.button(
            "Stop",
            on_click=ui.job_manager().stop,
            args=(s.job_id,),
            help="Stops after the current batch and keeps the best weights so far.",
        )
    if s.history:
        st.plotly_chart(training_curves(s.history), width="stretch", key="curves")
    if s.status == "failed":
        ui.error(TLError(s.error or "Training failed."), "Adjust the settings above and start again.")
    elif s.finished and s.result:
        st.success(
            f"{s.status.capitalize()}: best validation accuracy **{s.result['best_val_acc']:.1%}** "
            f"(epoch {s.result['best_epoch']}) in {s.result['wall_s']:.0f} s."
        )
        st.session_state["run_dir"] = s.run_dir
        st.page_link(ui.PAGES["results"], label="See the results →", icon=":material/insights:")
    if busy and s.finished:
        st.rerun()  # a full rerun recomputes run_every, so polling stops


live()
