"""Export a run: a model bundle (weights, labels, preprocessing, a predict script) and a
standalone training script that reproduces the run with only torch and timm (texts: torch and
transformers).

The training script opens with the run's plan as the freeze map shows it (layer groups by module
name, phases, learning rates, settings) and ends with the exact file lists, so it needs no part
of this package and can be read top to bottom.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

from .backbones import BACKBONES, classifier_name
from .errors import TLError
from .freezing import group_prefixes, layer_groups
from .model_card import model_card
from .preprocessing import AUGMENT_KWARGS, TIMM_KEYS
from .runs import Run
from .strategies import plan_phases
from .text_models import TEXT_BACKBONES, with_encoder_folder


def _template(name: str) -> str:
    return resources.files("tl_core.templates").joinpath(name).read_text(encoding="utf-8")


def _relative_items(items: list[tuple[str, int]], root: Path) -> list[tuple[str, int]]:
    return [(str(Path(p).relative_to(root)), label) for p, label in items]


def training_plan(run: Run) -> dict[str, Any]:
    """Everything the standalone script needs, as JSON-ready data: the freeze map's groups by
    module name, the phases, the settings and the exact files (or, for texts, their keys)."""
    from .inference import rebuild_model
    from .training import class_weights

    cfg, backbone, labels, split, profile = (
        run.config().resolved(),
        run.backbone(),
        run.labels(),
        run.split(),
        run.profile(),
    )
    if not backbone or not labels or not split or not profile:
        raise TLError(f"Run {run.id} did not get far enough to export (no backbone, labels or split yet).")
    root = Path(profile.root)
    model = rebuild_model(run, weights=False)
    groups = layer_groups(model)
    weights = class_weights([lbl for _, lbl in split["train"]], len(labels), cfg.class_weights)
    text = profile.modality == "text"
    zipped = Path(profile.source).suffix.lower() == ".zip"
    plan: dict[str, Any] = {
        "run": run.id,
        "modality": profile.modality,
        "data_root_used": profile.source if text and zipped else str(root),  # the text script reads zips
        "backbone": cfg.backbone,
        "weights": backbone.weights,
        "weights_detail": backbone.weights_detail,
        "classes": labels,
        "classifier": classifier_name(model),
        "groups": group_prefixes(groups),
        "phases": [{"name": p.name, "epochs": p.epochs, "lr": p.lrs} for p in plan_phases(cfg, groups)],
        "batch_size": cfg.batch_size,
        "weight_decay": cfg.weight_decay,
        "label_smoothing": cfg.label_smoothing,
        "class_weights": weights.tolist() if weights is not None else None,
        "patience": cfg.patience,
        "seed": cfg.seed,
        "feature_cache": cfg.uses_feature_cache,
    }
    if text:
        text_spec = TEXT_BACKBONES.get(cfg.backbone)
        data_config = run.data_config()
        snapshot = Path(data_config["tokenizer"])  # a hub cache's .../snapshots/<commit>
        return plan | {
            "hub_name": text_spec.hub_id if text_spec else None,
            "hub_revision": snapshot.name if snapshot.parent.name == "snapshots" else None,
            "bundled_package": text_spec.bundled_package if text_spec else None,
            "max_length": data_config["max_length"],
            "pooling": data_config["pooling"],
            "text_column": profile.columns[0] if profile.columns else None,
            "split": {name: [(text_key(t), y) for t, y in items] for name, items in split.items() if items},
        }
    spec = BACKBONES.get(cfg.backbone)
    return plan | {
        "model_kwargs": backbone.model_kwargs,
        "hub_name": spec.hub_name if spec else None,
        "bundled_package": spec.bundled_package if spec else None,
        "preprocessing": {k: v for k, v in run.data_config().items() if k in TIMM_KEYS},
        "augment": AUGMENT_KWARGS.get(cfg.augment),
        "train_bn": cfg.train_bn,
        "workers": cfg.workers,
        "split": {name: _relative_items(items, root) for name, items in split.items() if items},
    }


def text_key(text: str) -> str:
    """How ``train.py`` names a text: the start of its SHA-256, so the script carries none of
    the user's texts (it finds them in their data) and stays small."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _literal(value: Any, indent: int = 4) -> str:
    """``value`` as Python source: one entry per line for the plan's dicts and lists, so a
    person reads (and edits) the freeze map as a table."""
    if isinstance(value, dict) and value and any(isinstance(v, (dict, list)) for v in value.values()):
        pad = " " * indent
        rows = "".join(f"{pad}{k!r}: {_literal(v, indent + 4)},\n" for k, v in value.items())
        return "{\n" + rows + " " * (indent - 4) + "}"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        pad = " " * indent
        rows = "".join(f"{pad}{v!r},\n" for v in value)
        return "[\n" + rows + " " * (indent - 4) + "]"
    return repr(value)


def _split_literal(split: dict[str, list[tuple[str, int]]]) -> str:
    """The file lists, one file per line (long, so at the end of the script)."""
    rows = []
    for name, items in split.items():
        files = "".join(f"        [{path!r}, {label}],\n" for path, label in items)
        rows.append(f"    {name!r}: [\n{files}    ],\n")
    return "{\n" + "".join(rows) + "}"


def training_script(run: Run) -> str:
    """A ``train.py`` that reproduces ``run`` (see the module docstring): the modality's part
    (data, model), then the training loop both share, then the plan's file lists."""
    plan = training_plan(run)
    text = plan["modality"] == "text"
    fill = {key.upper(): _literal(value) for key, value in plan.items() if key != "split"}
    fill |= {
        "RUN": plan["run"],
        "ROOT": plan["data_root_used"],
        "DATA_USED": repr(plan["data_root_used"]),
        "SPLIT": _split_literal(plan["split"]),
    }
    template = (
        _template("train_texts.py" if text else "train_images.py")
        + "\n\n"
        + _template("train_loop.py")
        + "\n\n"
        + (_TEXT_LISTS if text else _FILE_LISTS)
        + 'SPLIT = __SPLIT__\n\nif __name__ == "__main__":\n    main()\n'
    )
    # One pass: a class or file name that happens to contain a marker stays as it is.
    return re.sub(r"__([A-Z_]+)__", lambda m: fill.get(m.group(1), m.group(0)), template)


FILE_LISTS = "# ---- the run's exact "
"""Where ``train.py``'s code ends and its (long) file lists begin."""
_FILE_LISTS = FILE_LISTS + "files, relative to DATA_DIR: [path, class index] " + "-" * 27 + "\n"
_TEXT_LISTS = FILE_LISTS + "texts, by key: [the start of the text's SHA-256, class index] " + "-" * 11 + "\n"


def script_preview(script: str) -> str:
    """``train.py`` without its file lists: the part a person reads."""
    head, _, tail = script.partition(FILE_LISTS)
    files = sum(1 for line in tail.splitlines() if line.startswith("        ["))
    what = tail.split(",", 1)[0]
    return head + f"# ---- then the run's exact {what} ({files} of them), and main() ----\n"


def bundle_bytes(run: Run, include_training_script: bool = True) -> bytes:
    """The model bundle as zip bytes: ready for ``st.download_button`` or a file."""
    if not run.weights_path.exists():
        raise TLError(f"Run {run.id} has no trained weights to export yet.")
    backbone = run.backbone()
    text = run.data_config().get("modality") == "text"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(run.weights_path, "model.safetensors")
        for name, source in (
            ("labels.json", Run.LABELS),
            ("preprocessing.json", Run.DATA_CONFIG),
            ("config.json", Run.CONFIG),
            ("backbone.json", Run.BACKBONE),
        ):
            data = run.read_json(source)
            if text and name in ("preprocessing.json", "backbone.json"):
                data = with_encoder_folder(data, TEXT_ENCODER_DIR)
            zf.writestr(name, json.dumps(data, indent=2))
        if text:
            for file in encoder_files(run.data_config()):
                zf.write(file, f"{TEXT_ENCODER_DIR}/{file.name}")
        zf.writestr("metrics.jsonl", "".join(json.dumps(m) + "\n" for m in run.metrics()))
        zf.writestr("MODEL_CARD.md", model_card(run))
        zf.writestr("predict.py", _template("predict_text.py" if text else "predict.py"))
        if include_training_script:
            zf.writestr("train.py", training_script(run))
        readme = _TEXT_BUNDLE_README if text else _BUNDLE_README
        zf.writestr("README.txt", readme.format(name=backbone.name if backbone else "?", run=run.id))
    return buf.getvalue()


TEXT_ENCODER_DIR = "encoder"
"""Where a text bundle keeps its encoder's configuration and tokenizer files."""


def encoder_files(data_config: dict[str, Any]) -> list[Path]:
    """The tokenizer and architecture files of a text run's encoder folder: everything but the
    pretrained weights (the bundle's own ``model.safetensors`` replaces them)."""
    folder = Path(data_config["tokenizer"])
    if not folder.is_dir():
        raise TLError(f"The encoder's files are no longer at {folder}: reinstall its package or prefetch it.")
    skip = (".safetensors", ".bin", ".h5", ".onnx", ".msgpack", ".ot", ".md")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.endswith(skip) and not p.name.startswith(".")
    )


def write_bundle(run: Run, path: str | Path) -> Path:
    from .fsutil import write_atomic

    path = Path(path)
    write_atomic(path, bundle_bytes(run))
    return path


_BUNDLE_README = """Transfer Learning Studio model bundle
Run: {run}   Backbone: {name}

MODEL_CARD.md       what it was trained on, how well it did (validation and test), its limits
model.safetensors   the kept epoch's weights (safetensors: no pickle, safe to load)
labels.json         class names, in output order
preprocessing.json  resize/crop/normalisation the model was trained with (timm data config)
config.json         every training setting
predict.py          python predict.py image.jpg   (needs torch, timm, pillow, safetensors)
train.py            python train.py DATA_DIR      reproduces the run from scratch
"""

_TEXT_BUNDLE_README = """Transfer Learning Studio model bundle (text)
Run: {run}   Encoder: {name}

MODEL_CARD.md       what it was trained on, how well it did (validation and test), its limits
model.safetensors   the kept epoch's weights: the encoder and the head (no pickle, safe to load)
encoder/            the encoder's configuration and tokenizer files
labels.json         class names, in output order
preprocessing.json  maximum length and pooling the model was trained with
config.json         every training setting (tl-studio train DATA --config config.json)
predict.py          python predict.py "a text"   (needs torch, transformers, safetensors)
train.py            python train.py DATA         reproduces the run from scratch
"""
