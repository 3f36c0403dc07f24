"""Predict from anything the studio wrote: a run (id or folder), a bundle zip, an ONNX file, a
TorchScript file or a timm folder, with the same preprocessing and the same answer.

Each kind is opened by its own runtime (torch and timm, onnxruntime, ``torch.jit``), and the
labels and preprocessing come from the file itself, so a prediction never depends on the run
folder still being there.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TLError
from .runs import Run, RunStore


@dataclass
class Predictor:
    """Logits for a preprocessed batch, whatever runs them."""

    kind: str
    labels: list[str]
    data_config: dict[str, Any]
    logits: Callable[[Any], np.ndarray]
    """A preprocessed image batch (N, 3, H, W), or a text model's tokenized batch (a dict)."""
    encode: Any = None
    """Text models: the tokenizing collate (``text_models.TextBatches``), loaded with the model."""


def _torch_predictor(kind: str, model: Any, labels: list[str], data_config: dict[str, Any]) -> Predictor:
    import torch

    def run(x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            if isinstance(x, dict):  # a tokenized text batch
                return model({k: torch.from_numpy(v) for k, v in x.items()}).float().numpy()
            return model(torch.from_numpy(x)).float().numpy()

    return Predictor(kind, labels, data_config, run)


def _from_run(run: Run) -> Predictor:
    from .inference import load_run_model

    loaded = load_run_model(run)
    predictor = _torch_predictor("run", loaded.model, loaded.labels, loaded.data_config)
    predictor.encode = loaded.text_batches
    return predictor


_BUNDLE_FILES = ("model.safetensors", "labels.json", "preprocessing.json", "config.json", "backbone.json")


def _from_bundle_files(read: Callable[[str], bytes], names: set[str], what: str) -> Predictor:
    """A bundle is a run folder's essentials under export names: lay them out as a run, rebuild."""
    missing = sorted(set(_BUNDLE_FILES) - names)
    if missing:
        raise TLError(f"{what} is not a model bundle (missing {', '.join(missing)}).")
    from .export import TEXT_ENCODER_DIR
    from .text_models import with_encoder_folder

    encoder = sorted(n for n in names if n.startswith(f"{TEXT_ENCODER_DIR}/") and not n.endswith("/"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        renamed = {"model.safetensors": Run.WEIGHTS, "preprocessing.json": Run.DATA_CONFIG}
        for name in _BUNDLE_FILES:
            (folder / renamed.get(name, name)).write_bytes(read(name))
        if encoder:  # a text bundle: its tokenizer and architecture, where the run's config finds them
            (folder / TEXT_ENCODER_DIR).mkdir()
            for name in encoder:
                (folder / TEXT_ENCODER_DIR / Path(name).name).write_bytes(read(name))
            for file in (Run.DATA_CONFIG, Run.BACKBONE):
                data = json.loads((folder / file).read_text(encoding="utf-8"))
                data = with_encoder_folder(data, str(folder / TEXT_ENCODER_DIR))
                (folder / file).write_text(json.dumps(data), encoding="utf-8")
        predictor = _from_run(Run(folder))  # weights and tokenizer are in memory before the folder goes
    predictor.kind = "bundle"
    return predictor


def _from_bundle(path: Path) -> Predictor:
    with zipfile.ZipFile(path) as zf:
        return _from_bundle_files(zf.read, set(zf.namelist()), path.name)


def _from_folder(path: Path) -> Predictor:
    """A run folder, an unzipped bundle, or timm's folder (its config.json names the architecture)."""
    if (path / Run.STATUS).is_file():
        return _from_run(Run(path))
    config = path / "config.json"
    if config.is_file() and "architecture" in json.loads(config.read_text(encoding="utf-8")):
        return _from_timm_folder(path)
    names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}  # encoder/ too
    return _from_bundle_files(lambda name: (path / name).read_bytes(), names, str(path))


def _from_onnx(path: Path) -> Predictor:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise TLError('Predicting from ONNX needs onnxruntime: pip install -e ".[export]".') from None
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "labels.json" not in meta:
        raise TLError(f"{path.name} was not exported by the studio: it carries no labels.")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if "tokenizer.json" in meta:  # a text model: its tokenizer rides in the metadata
        from .text_models import StandaloneTokenizer

        pre, parts = json.loads(meta["preprocessing.json"]), json.loads(meta["tokenizer.json"])
        return Predictor(
            "onnx",
            json.loads(meta["labels.json"]),
            pre,
            lambda batch: session.run(None, {k: np.asarray(v, dtype=np.int64) for k, v in batch.items()})[0],
            encode=StandaloneTokenizer(
                parts["json"], int(pre["max_length"]), parts["pad_id"], parts["pad_token"]
            ),
        )
    return Predictor(
        "onnx",
        json.loads(meta["labels.json"]),
        json.loads(meta["preprocessing.json"]),
        lambda x: session.run(None, {name: x})[0],
    )


def _from_torchscript(path: Path) -> Predictor:
    import warnings

    import torch

    extra = {"labels.json": "", "preprocessing.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra["labels.json"]:
        raise TLError(f"{path.name} was not exported by the studio: it carries no labels.")
    return _torch_predictor(
        "torchscript",
        module.eval(),
        json.loads(extra["labels.json"]),
        json.loads(extra["preprocessing.json"]),
    )


def _from_timm_folder(path: Path) -> Predictor:
    """timm's own folder: timm rebuilds and loads it; the labels are in its ``config.json``."""
    import timm
    from timm.data import resolve_data_config

    labels = json.loads((path / "config.json").read_text(encoding="utf-8")).get("label_names")
    if not labels:
        raise TLError(f"{path} has no label_names in its config.json: it is not a classifier export.")
    model = timm.create_model(f"local-dir:{path}", pretrained=True).eval()
    return _torch_predictor("timm", model, list(labels), resolve_data_config({}, model=model))


def load_predictor(target: str | Path, runs_dir: str | Path | None = None) -> Predictor:
    """``target``: a run id, a run folder, a bundle ``.zip`` (or its unzipped folder), an ``.onnx``
    or a TorchScript file, or a timm export folder."""
    path = Path(target)
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:  # TorchScript is a zip too, with its code inside
                scripted = any(name.endswith("constants.pkl") for name in zf.namelist())
            if scripted:
                return _from_torchscript(path)
            return _from_bundle(path)
        if path.suffix.lower() == ".onnx":
            return _from_onnx(path)
        raise TLError(f"{path.name}: not a bundle, an .onnx or a TorchScript file.")
    return _from_run(RunStore(runs_dir).get(str(target)))


def predict_files(predictor: Predictor, images: Sequence[str], top_k: int = 3) -> list[dict[str, Any]]:
    """One entry per image, in order: ``{"image", "top_k": [{"label", "prob"}]}``, or
    ``{"image", "error"}`` for an image that can't be read (the others are still predicted)."""
    from .images import ImageProblem, load_rgb
    from .inference import ranked
    from .preprocessing import eval_transform

    if predictor.encode is not None:
        raise TLError(
            f"This model ({predictor.kind}) classifies texts: give them with --text or --text-file."
        )

    transform = eval_transform(predictor.data_config)  # lists from JSON become timm's tuples there
    out: list[dict[str, Any]] = []
    for image in images:
        try:
            x = transform(load_rgb(image)).numpy()[None]
        except (ImageProblem, OSError) as exc:
            out.append({"image": image, "error": str(exc)})
            continue
        best = ranked(predictor.labels, predictor.logits(x.astype(np.float32))[0], top_k)
        out.append({"image": image, "top_k": [{"label": label, "prob": prob} for label, prob in best]})
    return out


def predict_texts(predictor: Predictor, texts: Sequence[str], top_k: int = 3) -> list[dict[str, Any]]:
    """One entry per text, in order: ``{"text", "top_k": [{"label", "prob"}]}``, tokenized as the
    run was (its tokenizer, its maximum length); ``{"text", "error"}`` for an empty one."""
    from .inference import ranked

    if predictor.encode is None:
        raise TLError(f"This model ({predictor.kind}) classifies images: give image files, not --text.")
    batches = predictor.encode
    out: list[dict[str, Any]] = []
    for text in texts:
        if not text.strip():
            out.append({"text": text, "error": "empty text"})
            continue
        enc = {k: v.numpy() for k, v in batches.encode([text]).items()}
        best = ranked(predictor.labels, predictor.logits(enc)[0], top_k)
        out.append({"text": text, "top_k": [{"label": label, "prob": prob} for label, prob in best]})
    return out
