"""Results: how good is the model, where does it go wrong, and try it on a new image."""

import streamlit as st

import ui
from tl_core import ui_text
from tl_core.charts import training_curves
from tl_core.errors import TLError
from tl_core.evaluation import (
    cell,
    load_predictions,
    misclassified,
    most_confused,
    per_class_report,
)
from tl_core.images import ImageProblem, load_rgb, thumbnail
from tl_core.inference import predict

ui.sidebar()
st.title("5. Results")
run = ui.pick_run()
history = run.metrics()
preds = load_predictions(run)
labels = run.read_json("labels.json") or []
if not history or preds is None:
    st.warning("This run has no evaluation yet (it stopped before finishing an epoch).")
    st.stop()

best = ui_text.best_record(history)
final = history[-1]
c = st.columns(4)
c[0].metric(
    "Best validation accuracy",
    f"{best['val_acc']:.1%}",
    help=f"Epoch {best['epoch']}: these weights were kept.",
)
c[1].metric("Final validation accuracy", f"{final['val_acc']:.1%}")
c[2].metric("Best validation loss", f"{best['val_loss']:.3f}")
c[3].metric("Epochs run", len(history))
if best["train_acc"] - best["val_acc"] > 0.15:
    st.warning(
        "Training accuracy is far above validation accuracy: the model memorises. More data, "
        "augmentation or freezing more layers would help."
    )
st.plotly_chart(training_curves(history), width="stretch")

left, right = st.columns([3, 2])
with left:
    ui.confusion_block(preds, labels)
with right:
    st.subheader("Per class")
    st.dataframe(
        per_class_report(preds, labels).style.format(
            {"precision": "{:.2f}", "recall": "{:.2f}", "f1": "{:.2f}"}
        ),
        hide_index=True,
        width="stretch",
        height=min(36 * (len(labels) + 2), 600),  # every class and the average, without scrolling
    )
    pairs = most_confused(preds)
    if pairs:
        st.markdown("**Most confused:** " + "; ".join(f"{t} → {p} ({n}×)" for t, p, n in pairs))

st.subheader("Look inside the confusion matrix")
pairs = most_confused(preds, top=len(labels) ** 2)
default_true, default_pred = (pairs[0][0], pairs[0][1]) if pairs else (labels[0], labels[0])
a, b = st.columns(2)
true = a.selectbox("True class", labels, index=labels.index(default_true))
pred = b.selectbox(
    "Predicted as",
    labels,
    index=labels.index(default_pred),
    help="Pick the same class as the true one to see correct predictions.",
)
hits = cell(preds, true, pred)
if hits.empty:
    st.caption(f"No validation image of {true} was predicted as {pred}.")
else:
    st.caption(
        f"{len(hits)} image(s), most confident first. Confident mistakes are often mislabelled images."
    )
    cols = st.columns(6)
    for i, row in hits.head(12).iterrows():
        with cols[i % 6]:
            try:
                st.image(thumbnail(row["path"], 128), caption=f"{row['confidence']:.0%} sure")
            except ImageProblem:
                st.caption(f"{row['path']} (image no longer readable)")
if misclassified(preds).empty:
    st.success("No validation image is misclassified.")

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
