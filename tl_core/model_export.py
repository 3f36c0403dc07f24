"""Exports that run without this package or timm: ONNX (for onnxruntime, phones, browsers) and
TorchScript (for C++ and plain ``torch.jit.load``).

Each export is checked against the run's own torch model on real validation images before it
is written: the largest logit difference and the top-1 agreement are reported and stored in the
file's metadata, next to the labels and the preprocessing, so the file explains itself. An
export that disagrees with the model is refused, and nothing is written.
"""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TLError
from .fsutil import write_atomic
from .runs import Run

if TYPE_CHECKING:  # torch loads when an export is built, not when the Export page opens
    import torch

    from .inference import LoadedModel

FORMATS = ("bundle", "onnx", "torchscript")
SUFFIXES = {"bundle": "-bundle.zip", "onnx": ".onnx", "torchscript": ".torchscript.pt"}
PARITY_IMAGES = 32
MAX_LOGIT_DIFF = 1e-3
"""Float32 kernels differ in summation order, not in answers: beyond this, the export is wrong."""


@dataclass
class Parity:
    """How closely an export reproduces the torch model, on real validation images."""

    images: int
    max_abs_logit_diff: float
    top1_agreement: float


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

    split = run.read_json("split.json") or {}
    transform = eval_transform(loaded.data_config)
    images = []
    for path, _ in split.get("val", []):
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


def _metadata(run: Run, loaded: LoadedModel, parity: Parity) -> dict[str, str]:
    """What a user of the bare file needs: the labels in output order and the preprocessing."""
    return {
        "labels.json": json.dumps(loaded.labels),
        "preprocessing.json": json.dumps(loaded.data_config),
        "parity.json": json.dumps(asdict(parity)),
        "source.json": json.dumps({"run": run.id, "backbone": loaded.config.backbone}),
    }


def export_onnx(run: Run, out: Path) -> ExportResult:
    """ONNX with a dynamic batch dimension (input ``image``, output ``logits``), checked with
    onnxruntime."""
    import torch

    from .inference import load_run_model

    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise TLError(
            'ONNX export needs onnx, onnxscript and onnxruntime: pip install -e ".[export]".'
        ) from None
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


def saved_export(run: Run, fmt: str) -> ExportResult | None:
    """The export the app already built for ``run`` (kept in its folder: a finished run never
    changes), or None."""
    record = run.read_json(f"exports/{fmt}.json")
    if not record or not Path(record["path"]).is_file():
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


def parity_text(check: Parity) -> str:
    """How an export was checked, in one sentence (the CLI, the Export page)."""
    return (
        f"Checked on {check.images} validation images: top-1 agreement {check.top1_agreement:.0%}, "
        f"largest logit difference {check.max_abs_logit_diff:.1e}"
    )


def describe(result: ExportResult) -> str:
    """The CLI's line for an export."""
    where = f"{result.format}: {result.path}"
    return where if result.parity is None else f"{where} ({parity_text(result.parity).lower()})"


def export_run(run: Run, fmt: str, out: str | Path | None = None) -> ExportResult:
    """Write ``run`` as ``fmt`` to ``out`` (default: ``<run id><suffix>`` in the current folder)."""
    from .export import write_bundle

    if fmt not in FORMATS:
        raise TLError(f"Unknown export format '{fmt}': choose one of {', '.join(FORMATS)}.")
    if not run.weights_path.exists():
        raise TLError(f"Run {run.id} has no trained weights to export yet.")
    path = Path(out) if out else Path(f"{run.id}{SUFFIXES[fmt]}")
    if fmt == "bundle":
        return ExportResult("bundle", str(write_bundle(run, path)), None)
    return {"onnx": export_onnx, "torchscript": export_torchscript}[fmt](run, path)
