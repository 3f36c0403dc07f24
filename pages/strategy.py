"""Strategy: the decision wizard. Answers -> a recommended rung of the transfer ladder, with reasons."""

import streamlit as st

import ui
from tl_core import ui_text
from tl_core.advisor import (
    LADDER,
    WizardAnswers,
    apply_recommendation,
    recommend,
    similarity_choices,
    task_choices,
    wizard_defaults,
)
from tl_core.charts import ladder
from tl_core.config import AUGMENT_PRESETS, STRATEGIES
from tl_core.devices import detect_device
from tl_core.errors import TLError

ui.sidebar()
ui.require_workspace()
st.title("2. Strategy")
st.caption(
    "Answer four questions; the wizard recommends how much of the pretrained network to retrain, and why."
)
ds = ui.require_dataset()
cfg = ui.config()
p = ds.profile
defaults = wizard_defaults(p)
device = detect_device("auto")
# Start from this dataset's answers; keep the user's own across page visits (Streamlit drops a
# widget's state when its page isn't shown), but not across datasets.
kept = st.session_state.get("wizard_answers", {})
if kept.get("for") != p.root:
    kept = {"similarity": defaults.similarity, "task": defaults.task}
    st.session_state.update(kept)
for name in ("similarity", "task"):
    st.session_state.setdefault(name, kept[name])

text = p.modality == "text"
things = ui_text.noun(p.modality)
similarities, tasks = similarity_choices(p.modality), task_choices(p.modality)
left, right = st.columns([1, 1])
with left:
    images = st.number_input(
        f"{things.capitalize()} per class",
        min_value=1,
        value=defaults.images_per_class,
        help="Pre-filled from your data. More data lets you safely retrain more layers.",
    )
    if defaults.guessed:
        st.info(defaults.note, icon=":material/lightbulb:")
    else:
        st.info(f"**Answered for this sample.** {defaults.note}", icon=":material/school:")
    similarity = st.radio(
        "How similar are your texts to everyday written English?"
        if text
        else "How similar are your images to everyday photos?",
        list(similarities),
        format_func=similarities.get,
        key="similarity",
        help=(
            "The encoder learned from web text, books and news: the closer yours are, the more of it transfers as is."
            if text
            else "The backbone learned from everyday photos: the closer yours are, the more of it transfers as is."
        ),
    )
    task = st.radio("How hard is the task?", list(tasks), format_func=tasks.get, key="task")
    st.session_state["wizard_answers"] = {"for": p.root, "similarity": similarity, "task": task}
with right:
    st.markdown(
        f"**Compute:** {device.label}"
        + (
            " — a GPU makes fine-tuning fast."
            if device.device == "cuda"
            else " — no GPU, so fine-tuning many layers is slow; the wizard takes that into account."
        )
    )
    budget = st.slider("Time budget (minutes)", 1, 60, 10, help="Limits the number of epochs on a CPU.")

answers = WizardAnswers(
    images_per_class=int(images),
    n_classes=len(p.classes),
    similarity=similarity,
    task=task,
    has_gpu=device.device == "cuda",
    time_budget_min=budget,
    tiny_images=defaults.tiny_images,
    modality=p.modality,
)
rec = recommend(answers)

st.subheader(f"Recommended: {rec.rung_name}")
st.plotly_chart(ladder(LADDER, rec.rung), width="stretch")
cols = st.columns(5)
cols[0].metric("Head LR", f"{rec.head_lr:.0e}")
cols[1].metric("Top-layer LR", f"{rec.top_lr:.0e}" if rec.rung else "—")
cols[2].metric("Epochs", rec.epochs)
cols[3].metric("Augmentation", rec.augment)
cols[4].metric("Batch size", rec.batch_size)
st.markdown("**Why:**\n" + "\n".join(f"- {line}" for line in rec.why))

if st.button("Accept recommendation", type="primary"):
    try:
        groups, _ = ui.describe(cfg.backbone, len(p.classes))
    except TLError as exc:
        ui.error(exc, "Pick a backbone that is on this machine on the Backbone page first.")
    else:
        body = [g.name for g in groups if g.name != "head"]
        ui.update_config(**apply_recommendation(rec, cfg, body).to_dict())
        st.switch_page(ui.PAGES["backbone"])

with st.expander("Override: choose the settings yourself"):
    strategy = st.selectbox(
        "Strategy",
        list(STRATEGIES),
        index=list(STRATEGIES).index(cfg.strategy),
        format_func=lambda s: f"{s}: {STRATEGIES[s].summary}",
    )
    lr = st.number_input(
        "Head learning rate",
        value=float(cfg.lr or rec.head_lr),
        format="%.0e",
        min_value=1e-6,
        max_value=0.5,
        help="How big each update step is. Too high diverges; too low learns slowly.",
    )
    epochs = st.number_input(
        "Epochs",
        min_value=1,
        max_value=200,
        value=int(cfg.epochs or rec.epochs),
        help="Passes over the training data. Early stopping ends sooner if validation stops improving.",
    )
    augment = st.selectbox(
        "Augmentation",
        AUGMENT_PRESETS if not text else ["none"],
        index=AUGMENT_PRESETS.index(cfg.augment) if not text else 0,
        help="Random crops/flips/colour changes, so the model can't memorise exact images. "
        "'none' lets feature extraction cache features (much faster). Texts are not augmented.",
    )
    batch = st.number_input(
        "Batch size",
        min_value=1,
        max_value=512,
        value=cfg.batch_size,
        help=f"{things.capitalize()} per step. Lower it if you run out of memory.",
    )
    if st.button("Use these settings"):
        ui.update_config(
            strategy=strategy,
            lr=lr,
            epochs=int(epochs),
            augment=augment,
            batch_size=int(batch),
            unfreeze=None,
            weights="auto" if STRATEGIES[strategy].pretrained else "none",
        )
        st.switch_page(ui.PAGES["backbone"])
