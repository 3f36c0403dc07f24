"""Export: the model bundle and a standalone training script, built when asked for."""

from pathlib import Path

import streamlit as st

import ui
from tl_core import model_export
from tl_core.errors import TLError

ui.sidebar()
st.title("6. Export")
run = ui.pick_run()


def bundle() -> bytes:
    from tl_core.export import bundle_bytes  # torch and timm load only when asked for

    return bundle_bytes(run)


@st.cache_data(show_spinner="Writing the training script…", max_entries=8)
def script(run_dir: str) -> str:
    """A finished run never changes, so its folder is the whole key."""
    from tl_core.export import training_script
    from tl_core.runs import Run

    return training_script(Run(run_dir))


st.markdown(
    "**Model bundle** (zip): `model.safetensors` (the best weights), `labels.json`, `preprocessing.json` "
    "(the exact resize/crop/normalisation used), `config.json`, and `predict.py`, which needs only torch and timm."
)
# Callables run only on click: nothing is packed on page load, and nothing is kept afterwards.
st.download_button(
    "Download model bundle (.zip)",
    bundle,
    file_name=f"{run.id}.zip",
    mime="application/zip",
    type="primary",
)
st.markdown(
    "**ONNX / TorchScript**: the model alone, for onnxruntime (phones, browsers, servers) or "
    "`torch.jit.load`. Each is checked against the model on real validation images before you get "
    "it, and carries its labels and preprocessing in its metadata."
)
for column, fmt, name in zip(st.columns(2), ("onnx", "torchscript"), ("ONNX", "TorchScript"), strict=True):
    with column:
        built = model_export.saved_export(run, fmt)
        if built is None and st.button(f"Build {name}", key=f"build-{fmt}"):
            with st.spinner(f"Converting to {name} and checking it…"):
                try:
                    built = model_export.export_in_run(run, fmt)
                except TLError as exc:
                    ui.error(exc)
        if built is not None:
            st.caption(model_export.parity_text(built.parity))
            st.download_button(
                f"Download {name}",
                lambda path=built.path: Path(path).read_bytes(),
                file_name=f"{run.id}{model_export.SUFFIXES[fmt]}",
                key=f"download-{fmt}",
            )
st.markdown(
    "**Training script**: a standalone `train.py` (torch + timm only) with this run's exact file lists, "
    "layer groups, phases and learning rates. `python train.py DATA_DIR` reproduces the run."
)
st.download_button(
    "Download train.py", lambda: script(str(run.dir)), file_name="train.py", mime="text/x-python"
)
if st.toggle("Preview train.py"):
    try:
        code = script(str(run.dir))
        st.code(code[:6000] + ("\n# …" if len(code) > 6000 else ""), language="python")
    except TLError as exc:
        ui.error(exc, "Pick a run that finished at least one epoch.")
