"""Exports that run without this package: ONNX (for onnxruntime, phones, browsers), TorchScript
(for C++ and plain ``torch.jit.load``), and timm's own pretrained folder (for
``timm.create_model("local-dir:PATH", pretrained=True)`` and timm's tools for the Hugging Face Hub).

Each export is checked against the run's own torch model on real validation images before it
is written: the largest logit difference and the top-1 agreement are reported and stored in the
file's metadata, next to the labels and the preprocessing, so the file explains itself. An
export that disagrees with the model is refused, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TLError
from .fsutil import write_atomic
from .runs import Run

if TYPE_CHECKING:  # torch loads when an export is built, not when the Export page opens
    import torch

    from .inference import LoadedModel

FORMATS = ("bundle", "onnx", "torchscript", "timm")
SUFFIXES = {"bundle": "-bundle.zip", "onnx": ".onnx", "torchscript": ".torchscript.pt", "timm": "-timm"}
TIMM_TRAIN_CONFIG = "train_config.json"
"""The run's settings in a timm folder, whose ``config.json`` is timm's own."""
FOLDER_FORMATS = frozenset({"timm"})
"""Written as a folder, not one file: the app downloads them zipped."""
_FOLDER_FILES = frozenset(
    {"config.json", "model.safetensors", "labels.json", "preprocessing.json", "parity.json", "source.json"}
    | {"README.md", "MODEL_CARD.md", TIMM_TRAIN_CONFIG}
)
"""What an earlier export folder may hold: only such a folder is replaced by a new export."""
PARITY_IMAGES = 32
MAX_LOGIT_DIFF = 1e-3
"""Float32 kernels differ in summation order, not in answers: beyond this, the export is wrong."""


@dataclass
class Parity:
    """How closely an export reproduces the torch model, on real validation images."""

    images: int
    """How many validation examples were compared (images, or texts: ``unit``)."""
    max_abs_logit_diff: float
    top1_agreement: float
    unit: str = "images"


@dataclass
class ExportResult:
    format: str
    path: str
    parity: Parity | None
    """None for the bundle: it holds the weights themselves, nothing was converted."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _validation_batch(run: Run, loaded: LoadedModel, n: int = PARITY_IMAGES) -> torch.Tensor:
    """Up to ``n`` of the run's validation images, preprocessed exactly as for prediction."""
    import torch

    from .images import ImageProblem, load_rgb
    from .preprocessing import eval_transform

    transform = eval_transform(loaded.data_config)
    images = []
    for path, _ in run.split().get("val", []):
        try:
            images.append(transform(load_rgb(path)))
        except (ImageProblem, OSError):  # moved or deleted since training: use the others
            continue
        if len(images) >= n:
            break
    if not images:
        raise TLError(
            f"None of run {run.id}'s validation images can be read any more, so the export can't be "
            "checked against the model. Put the data back where it was trained, then export again."
        )
    return torch.stack(images)


def _parity(expected: torch.Tensor, got: torch.Tensor, what: str) -> Parity:
    import torch

    got = torch.as_tensor(got, dtype=torch.float32)
    parity = Parity(
        images=len(expected),
        max_abs_logit_diff=float((expected - got).abs().max()),
        top1_agreement=float((expected.argmax(1) == got.argmax(1)).float().mean()),
    )
    if parity.max_abs_logit_diff > MAX_LOGIT_DIFF or parity.top1_agreement < 1.0:
        raise TLError(
            f"The {what} export disagrees with the model on {parity.images} validation images (largest "
            f"logit difference {parity.max_abs_logit_diff:.2g}, top-1 agreement "
            f"{parity.top1_agreement:.0%}), so it was not written. This is a conversion problem with "
            "this backbone: use the bundle (safetensors) instead."
        )
    return parity


def _metadata(
    run: Run, loaded: LoadedModel, parity: Parity, config_file: str = "config.json"
) -> dict[str, str]:
    """What a user of the bare file needs: the labels in output order, the preprocessing, the
    model card and the settings that reproduce the run (``config_file``: the card's name for it)."""
    from .model_card import model_card

    return {
        "labels.json": json.dumps(loaded.labels),
        "preprocessing.json": json.dumps(loaded.data_config),
        "parity.json": json.dumps(asdict(parity)),
        "source.json": json.dumps({"run": run.id, "backbone": loaded.config.backbone}),
        "MODEL_CARD.md": model_card(run, config_file),
        config_file: json.dumps(run.config_dict(), indent=2),
    }


def _onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise TLError(
            'ONNX export needs onnx, onnxscript and onnxruntime: pip install -e ".[export]".'
        ) from None
    return onnx, onnxruntime


def export_onnx(run: Run, out: Path) -> ExportResult:
    """ONNX with a dynamic batch dimension (input ``image``, output ``logits``), checked with
    onnxruntime."""
    import torch

    from .inference import load_run_model

    onnx, ort = _onnx()
    loaded = load_run_model(run)
    batch = _validation_batch(run, loaded)
    with torch.no_grad():
        expected = loaded.model(batch)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's progress chatter
            program = torch.onnx.export(
                loaded.model,
                (batch[:1],),
                dynamo=True,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                verbose=False,
            )
        program.save(str(raw))
        session = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
        parity = _parity(expected, torch.from_numpy(got), "ONNX")
        model = onnx.load(str(raw))
    onnx.helper.set_model_props(model, _metadata(run, loaded, parity))
    write_atomic(out, model.SerializeToString())
    return ExportResult("onnx", str(out), parity)


def export_text_onnx(run: Run, out: Path) -> ExportResult:
    """A text model as ONNX (inputs ``input_ids`` and ``attention_mask``, dynamic batch and
    length, output ``logits``), checked with onnxruntime on validation texts. Its tokenizer rides
    in the metadata, so the one file predicts texts (``predictors``)."""
    import torch

    from .inference import load_run_model
    from .text_models import StandaloneTokenizer, TextBatches, load_tokenizer

    onnx, ort = _onnx()
    loaded = load_run_model(run)
    tokenizer = load_tokenizer(loaded.data_config)
    max_length = int(loaded.data_config["max_length"])
    texts = [t for t, _ in run.split().get("val", [])][:PARITY_IMAGES]
    batch = TextBatches(tokenizer, max_length).encode(texts)
    inputs = (batch["input_ids"], batch["attention_mask"])

    class Logits(torch.nn.Module):  # ONNX takes tensors, not the tokenizer's dict
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask})

    net = Logits(loaded.model).eval()
    with torch.no_grad():
        expected = net(*inputs)
    shape = {
        0: torch.export.Dim("batch", min=1, max=4096),
        1: torch.export.Dim("length", min=1, max=max_length),
    }
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net, inputs, dynamo=True, input_names=["input_ids", "attention_mask"],
                output_names=["logits"], dynamic_shapes=(shape, shape), verbose=False,
            )  # fmt: skip
        program.save(str(raw))
        session = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input_ids": inputs[0].numpy(), "attention_mask": inputs[1].numpy()})[0]
        parity = dataclasses.replace(_parity(expected, torch.from_numpy(got), "ONNX"), unit="texts")
        model = onnx.load(str(raw))
    loaded.data_config = dict(loaded.data_config, tokenizer="tokenizer.json in this file's metadata")
    meta = _metadata(run, loaded, parity) | {
        "tokenizer.json": json.dumps(StandaloneTokenizer.parts(tokenizer))
    }
    onnx.helper.set_model_props(model, meta)
    write_atomic(out, model.SerializeToString())
    return ExportResult("onnx", str(out), parity)


def export_torchscript(run: Run, out: Path) -> ExportResult:
    """A traced TorchScript module; labels and preprocessing ride along as extra files."""
    import torch

    from .inference import load_run_model

    loaded = load_run_model(run)
    batch = _validation_batch(run, loaded)
    with torch.no_grad(), warnings.catch_warnings():
        expected = loaded.model(batch)
        warnings.simplefilter("ignore", FutureWarning)  # tracing is deprecated, still the portable format
        traced = torch.jit.trace(loaded.model, batch[:1])
        parity = _parity(expected, traced(batch), "TorchScript")
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files=_metadata(run, loaded, parity))
    write_atomic(out, buf.getvalue())
    return ExportResult("torchscript", str(out), parity)


def _timm_overlay(data_config: dict[str, Any]) -> dict[str, Any]:
    """The run's preprocessing as a ``pretrained_cfg_overlay``: every ``save_for_hf`` since our timm
    floor (1.0.26) writes the model's pretrained cfg into config.json, but only newer ones take a
    ``data_config``. The tag, papers and test-time size of the ImageNet weights describe other
    weights, so they are cleared."""
    from timm.models import PretrainedCfg

    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    overlay = {k: tuple(v) if isinstance(v, list) else v for k, v in data_config.items() if k in known}
    cleared = ("tag", "test_input_size", "test_crop_pct", "origin_url", "paper_ids", "paper_name", "notes")
    return overlay | dict.fromkeys(cleared)


def _same_preprocessing(wanted: dict[str, Any], got: dict[str, Any]) -> bool:
    def plain(cfg: dict[str, Any]) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple | list) else v for k, v in cfg.items() if k in wanted}

    return plain(wanted) == plain(got)


def _check_folder_target(out: Path) -> None:
    """Refuse, before any work, to replace anything but an earlier export folder."""
    if out.exists() and not out.is_dir():
        raise TLError(f"{out} is a file, not a folder: choose another --out for the timm export.")
    if out.is_dir() and not {p.name for p in out.iterdir()} <= _FOLDER_FILES:
        raise TLError(
            f"{out} already exists and holds files that are not from an export, so it was not "
            "replaced. Choose another --out, or empty that folder."
        )


def _replace_folder(built: Path, out: Path) -> None:
    """Move the finished ``built`` folder onto ``out``; an earlier export there is swapped out,
    then deleted (a folder can't be renamed over a non-empty one)."""
    _check_folder_target(out)
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
    try:
        if out.exists():
            os.replace(out, trash / out.name)
        try:
            os.replace(built, out)
        except BaseException:
            if (trash / out.name).exists():
                os.replace(trash / out.name, out)
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def export_timm(run: Run, out: Path) -> ExportResult:
    """timm's pretrained folder (``config.json`` with the labels and preprocessing,
    ``model.safetensors``), checked by loading it back through ``local-dir:``."""
    import timm
    import torch
    from timm.data import resolve_data_config
    from timm.models import save_for_hf

    from .inference import load_run_model

    _check_folder_target(out)
    # Built by its architecture name, never a hub name, so ``local-dir:`` rebuilds the same model;
    # the overlay puts the run's preprocessing into the config timm saves.
    loaded = load_run_model(run, pretrained_cfg_overlay=_timm_overlay(run.data_config()))
    batch = _validation_batch(run, loaded)
    kwargs = loaded.model_kwargs
    model = loaded.model
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_for_hf(
            model,
            str(tmp),
            model_config={"label_names": list(loaded.labels)},
            model_args=kwargs,
            safe_serialization=True,
        )
        reloaded = timm.create_model(f"local-dir:{tmp}", pretrained=True).eval()
        with torch.no_grad():
            parity = _parity(loaded.model(batch), reloaded(batch), "timm")
        resolved = resolve_data_config({}, model=reloaded)
        if not _same_preprocessing(loaded.data_config, resolved):
            raise TLError(
                f"timm {timm.__version__} reads the exported preprocessing back as {resolved}, not the "
                f"run's {loaded.data_config}, so the timm export was not written. Use the bundle instead."
            )
        for name, text in _metadata(run, loaded, parity, TIMM_TRAIN_CONFIG).items():
            (tmp / name).write_text(text, encoding="utf-8")
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult("timm", str(out), parity)


def saved_export(run: Run, fmt: str) -> ExportResult | None:
    """The export the app already built for ``run`` (kept in its folder: a finished run never
    changes), or None."""
    record = run.read_json(f"exports/{fmt}.json")
    if not record or not Path(record["path"]).exists():  # a file, or a folder for timm
        return None
    parity = Parity(**record["parity"]) if record.get("parity") else None
    return ExportResult(record["format"], record["path"], parity)


def export_in_run(run: Run, fmt: str) -> ExportResult:
    """Build ``fmt`` into the run's ``exports/`` folder once, for the app's download buttons."""
    found = saved_export(run, fmt)
    if found is None:
        found = export_run(run, fmt, run.dir / "exports" / f"model{SUFFIXES[fmt]}")
        run.write_json(f"exports/{fmt}.json", found.to_dict())
    return found


def download_name(run: Run, fmt: str) -> str:
    """The app's file name for a download: folder formats come as a zip of the folder."""
    name = f"{run.id}{SUFFIXES[fmt]}"
    return f"{name}.zip" if fmt in FOLDER_FORMATS else name


def download_bytes(result: ExportResult, name: str) -> bytes:
    """The export as one download named ``name``: the file itself, or a folder zipped so that it
    unzips to a folder of that name (less ``.zip``), ready for ``local-dir:``."""
    path = Path(result.path)
    if not path.is_dir():
        return path.read_bytes()
    root = name.removesuffix(".zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            zf.write(file, f"{root}/{file.relative_to(path).as_posix()}")
    return buf.getvalue()


def parity_text(check: Parity) -> str:
    """How an export was checked, in one sentence (the CLI, the Export page)."""
    return (
        f"Checked on {check.images} validation {check.unit}: top-1 agreement {check.top1_agreement:.0%}, "
        f"largest logit difference {check.max_abs_logit_diff:.1e}"
    )


def describe(result: ExportResult) -> str:
    """The CLI's line for an export; a folder says how to load it."""
    where = f"{result.format}: {result.path}"
    if result.parity is not None:
        where = f"{where} ({parity_text(result.parity).lower()})"
    if result.format in FOLDER_FORMATS:
        where = f"{where}. Load it with timm.create_model('local-dir:{result.path}', pretrained=True)"
    return where


def export_run(run: Run, fmt: str, out: str | Path | None = None) -> ExportResult:
    """Write ``run`` as ``fmt`` to ``out`` (default: ``<run id><suffix>`` in the current folder;
    a folder for timm)."""
    from .export import write_bundle

    if fmt not in FORMATS:
        raise TLError(f"Unknown export format '{fmt}': choose one of {', '.join(FORMATS)}.")
    if not run.weights_path.exists():
        raise TLError(f"Run {run.id} has no trained weights to export yet.")
    path = Path(out) if out else Path(f"{run.id}{SUFFIXES[fmt]}")
    if fmt == "bundle":
        return ExportResult("bundle", str(write_bundle(run, path)), None)
    if run.data_config().get("modality") == "text":
        if fmt == "onnx":
            return export_text_onnx(run, path)
        raise TLError(
            f"Text models export as a bundle (weights, tokenizer, predict.py) or as ONNX; {fmt} is "
            "for image models."
        )
    return {"onnx": export_onnx, "torchscript": export_torchscript, "timm": export_timm}[fmt](run, path)
