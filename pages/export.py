"""Export: the model bundle and a standalone training script."""

import streamlit as st

import ui
from tl_core.errors import TLError

ui.sidebar()
st.title("6. Export")
run = ui.pick_run()


@st.cache_data(show_spinner="Packing the bundle…", max_entries=8)
def bundle(run_dir: str, mtime: float) -> bytes:
    from tl_core.export import bundle_bytes
    from tl_core.runs import Run

    return bundle_bytes(Run(run_dir))


@st.cache_data(show_spinner="Writing the training script…", max_entries=8)
def script(run_dir: str, mtime: float) -> str:
    from tl_core.export import training_script
    from tl_core.runs import Run

    return training_script(Run(run_dir))


try:
    stamp = run.weights_path.stat().st_mtime if run.weights_path.exists() else 0.0
    st.markdown(
        "**Model bundle** (zip): `model.safetensors` (the best weights), `labels.json`, `preprocessing.json` "
        "(the exact resize/crop/normalisation used), `config.json`, and `predict.py`, which needs only torch and timm."
    )
    st.download_button(
        "Download model bundle (.zip)",
        bundle(str(run.dir), stamp),
        file_name=f"{run.id}.zip",
        mime="application/zip",
        type="primary",
    )
    st.markdown(
        "**Training script**: a standalone `train.py` (torch + timm only) with this run's exact file lists, "
        "layer groups, phases and learning rates. `python train.py DATA_DIR` reproduces the run."
    )
    code = script(str(run.dir), stamp)
    st.download_button("Download train.py", code, file_name="train.py", mime="text/x-python")
    with st.expander("Preview train.py"):
        st.code(code[:6000] + ("\n# …" if len(code) > 6000 else ""), language="python")
except TLError as exc:
    ui.error(exc, "Pick a run that finished at least one epoch.")
