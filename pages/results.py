"""Results: how good is the model, where does it go wrong, and try it on a new image (or text)."""

import streamlit as st

import ui
from tl_core import best_epoch, ui_text
from tl_core.charts import training_curves
from tl_core.errors import TLError
from tl_core.evaluation import load_predictions, most_confused, per_class_report
from tl_core.images import ImageProblem, load_rgb
from tl_core.inference import predict
from ui import insights
from ui.forgetting import forgetting_block

ui.sidebar()
st.title("5. Results")
run = ui.pick_run()
history = run.metrics()
preds = load_predictions(run)
labels = run.labels()
if not history or preds is None:
    st.warning("This run has no evaluation yet (it stopped before finishing an epoch).")
    st.stop()

best = best_epoch.kept_record(history, run.status().get("result"))
final = history[-1]
test_preds = load_predictions(run, "test")
c = st.columns(5 if test_preds is not None else 4)
c[0].metric(
    "Validation accuracy",
    f"{best['val_acc']:.1%}",
    help=f"Epoch {best['epoch']}, whose weights were kept: the {best_epoch.RULE}.",
)
c[1].metric("Final validation accuracy", f"{final['val_acc']:.1%}")
c[2].metric("Validation loss", f"{best['val_loss']:.3f}", help=f"Epoch {best['epoch']}, the one kept.")
c[3].metric("Epochs run", len(history))
if test_preds is not None:
    c[4].metric(
        "Test accuracy (held out)",
        f"{test_preds['correct'].mean():.1%}",
        help=ui_text.TEST_SCORE_HELP,
    )
else:
    st.caption(ui_text.NO_TEST_SPLIT)
if best["train_acc"] - best["val_acc"] > 0.15:
    st.warning(
        "Training accuracy is far above validation accuracy: the model memorises. More data, "
        "augmentation or freezing more layers would help."
    )
st.plotly_chart(training_curves(history), width="stretch")


def per_class_table(df, height: int | str = "auto") -> None:
    """Precision, recall, F1 and support per class, and their average."""
    scores = per_class_report(df, labels).style.format(
        {"precision": "{:.2f}", "recall": "{:.2f}", "f1": "{:.2f}"}
    )
    st.dataframe(scores, hide_index=True, width="stretch", height=height)


text = run.data_config().get("modality") == "text"
cell_key = insights.cell_key(run, preds, labels)
left, right = st.columns([3, 2])
with left:
    ui.confusion_block(preds, labels, key=cell_key, things="texts" if text else "images")
with right:
    st.subheader("Per class")
    per_class_table(preds, height=min(36 * (len(labels) + 2), 600))  # every class, no scrolling
    pairs = most_confused(preds)
    if pairs:
        st.markdown("**Most confused:** " + "; ".join(f"{t} → {p} ({n}×)" for t, p, n in pairs))

if test_preds is not None:
    with st.expander(f"Held-out test split: {len(test_preds)} {'texts' if text else 'images'}, per class"):
        per_class_table(test_preds)

if text:
    insights.text_results(run, preds, best["val_acc"], cell_key)
    st.stop()

insights.cell_browser(run, preds, labels, cell_key)
insights.gradcam_block(run, preds, labels)
insights.feature_space_block(run)

forgetting_block(run)

st.subheader("Try it")
src = st.radio("Image from", ["upload", "camera"], horizontal=True)
shot = (
    st.file_uploader("An image to classify", type=["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"])
    if src == "upload"
    else st.camera_input("Take a photo")
)
if shot is not None:
    try:
        img = load_rgb(shot.getvalue())  # the same checks and RGB conversion as training data
        top = predict(ui.loaded_model(str(run.dir)), img, top_k=min(5, len(labels)))
        a, b = st.columns([1, 2])
        a.image(img, width=200)
        for label, prob in top:
            b.progress(prob, text=f"{label}: {prob:.1%}")
    except (TLError, ImageProblem) as exc:
        ui.error(exc, "Try another image file (JPEG or PNG).")
