"""Home: what transfer learning is, and a one-click run on the built-in sample."""

import streamlit as st

import tl_core
from tl_core.errors import TLError


@st.cache_resource
def job_manager() -> "tl_core.JobManager":
    """Process-wide, so a browser refresh re-attaches to running jobs."""
    return tl_core.get_job_manager()


st.title("Transfer Learning Studio")
st.markdown(
    "**Transfer learning** reuses a network that already learned to see from millions of photos "
    "(ImageNet) and teaches only its last layer, or its last few, your own classes. "
    "That needs far fewer images and minutes instead of days. "
    "Below, EfficientNet-Lite0's pretrained features learn handwritten digits, offline."
)

job_id = st.query_params.get("job")
if st.button("Train on the sample dataset (digits)", type="primary"):
    try:
        job_id = job_manager().submit(tl_core.TrainConfig(data="digits"))
        st.query_params["job"] = job_id
    except TLError as exc:
        st.error(str(exc))


@st.fragment(run_every=1.0)
def live(job_id: str) -> None:
    try:
        snap = job_manager().snapshot(job_id)
    except TLError as exc:
        st.info(str(exc))
        return
    label = f"{snap.status}: {snap.stage}"
    if snap.epochs_total:
        label += f", epoch {snap.epoch}/{snap.epochs_total}"
    st.progress(min(snap.progress, 1.0), text=label)
    if snap.history:
        from tl_core.charts import training_curves

        st.plotly_chart(training_curves(snap.history), use_container_width=True)
    if snap.error:
        st.error(snap.error)
    if snap.result:
        st.success(f"Best validation accuracy: {snap.result['best_val_acc']:.1%}")


if job_id:
    live(job_id)
