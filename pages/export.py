"""Export: the model bundle and a standalone training script, built when asked for."""

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


@st.cache_data(show_spinner="Writing the model card…", max_entries=8)
def card(run_dir: str) -> str:
    from tl_core.model_card import model_card
    from tl_core.runs import Run

    return model_card(Run(run_dir))


text = run.data_config().get("modality") == "text"
st.markdown(
    "**Model card** (`MODEL_CARD.md`, in every export): what the model was trained on, how well it "
    f"did on validation and test {'texts' if text else 'images'}, and its limits, all from this "
    "run's own figures."
)
if st.toggle("Show the model card"):
    try:
        markdown = card(str(run.dir))
    except TLError as exc:
        ui.error(exc, "Pick a run that finished at least one epoch.")
    else:
        with st.container(border=True):
            st.markdown(markdown.split("---", 2)[-1])  # without the Hub's metadata header
        st.download_button(
            "Download MODEL_CARD.md", markdown, file_name="MODEL_CARD.md", mime="text/markdown"
        )
st.markdown(
    "**Model bundle** (zip): `model.safetensors` (the kept epoch's weights, encoder and head), "
    "`encoder/` (its tokenizer and configuration), `labels.json`, `preprocessing.json` (maximum "
    "length and pooling), `config.json`, `MODEL_CARD.md`, and `predict.py` and `train.py`, which need "
    'only torch and transformers: `python predict.py "a text"`.'
    if text
    else "**Model bundle** (zip): `model.safetensors` (the kept epoch's weights), `labels.json`, "
    "`preprocessing.json` (the exact resize/crop/normalisation used), `config.json`, `MODEL_CARD.md`, "
    "`predict.py` and `train.py`, which need only torch and timm."
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
    "**ONNX**: the model alone, for onnxruntime, with inputs `input_ids` and `attention_mask`; its "
    "tokenizer, labels, preprocessing and model card ride in the file's metadata, so "
    '`tl-studio predict model.onnx --text "…"` needs nothing beside it. Checked against the model on '
    "validation texts before you get it. (TorchScript and the timm folder are for image models.)"
    if text
    else "**ONNX / TorchScript / timm**: the model alone, for onnxruntime (phones, browsers, servers), "
    "`torch.jit.load`, or timm itself. Each is checked against the model on real validation images "
    "before you get it, and carries its labels, preprocessing and model card. The timm folder (zipped) loads with "
    "`timm.create_model('local-dir:PATH', pretrained=True)`, and timm's `push_to_hf_hub` can put it on "
    "the Hugging Face Hub."
)
formats = (
    (("onnx", "ONNX"),) if text else (("onnx", "ONNX"), ("torchscript", "TorchScript"), ("timm", "timm"))
)
for column, (fmt, name) in zip(st.columns(len(formats)), formats, strict=True):
    with column:
        built = model_export.saved_export(run, fmt)
        if built is None and st.button(f"Build {name}", key=f"build-{fmt}"):
            with st.spinner(f"Converting to {name} and checking it…"):
                try:
                    model_export.export_in_run(run, fmt)
                except TLError as exc:
                    ui.error(exc)
                else:
                    st.rerun()  # drawn again without its Build button
        if built is not None:
            st.caption(model_export.parity_text(built.parity))
            file_name = model_export.download_name(run, fmt)
            st.download_button(
                f"Download {name}" + (" (.zip)" if fmt in model_export.FOLDER_FORMATS else ""),
                lambda result=built, file_name=file_name: model_export.download_bytes(result, file_name),
                file_name=file_name,
                key=f"download-{fmt}",
            )
st.markdown(
    "**Training script**: a standalone `train.py` (torch + transformers only). It opens with this "
    "run's plan as the freeze map shows it (layer groups by module, phases, learning rates) and ends "
    "with the exact split, each text named by a key (the start of its SHA-256), so the script holds "
    "none of your texts. `python train.py DATA` finds them in your data and reproduces the run epoch "
    "by epoch."
    if text
    else "**Training script**: a standalone `train.py` (torch + timm only). It opens with this run's "
    "plan as the freeze map shows it (layer groups by module, phases, learning rates) and ends with "
    "the exact file lists. `python train.py DATA_DIR` reproduces the run epoch by epoch."
)
st.download_button(
    "Download train.py", lambda: script(str(run.dir)), file_name="train.py", mime="text/x-python"
)
if st.toggle("Preview train.py"):
    try:
        from tl_core.export import script_preview

        st.code(script_preview(script(str(run.dir))), language="python")
    except TLError as exc:
        ui.error(exc, "Pick a run that finished at least one epoch.")
