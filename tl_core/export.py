"""Export a run: a model bundle (weights, labels, preprocessing, a predict script) and a
standalone training script that reproduces the run with only torch and timm.

The training script embeds the run's exact plan (file lists, layer groups, phases, learning
rates) as data, so it needs no part of this package and can be read top to bottom.
"""

from __future__ import annotations

import io
import json
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

from .backbones import BACKBONES, classifier_name
from .config import TrainConfig
from .errors import TLError
from .freezing import bn_param_names, layer_groups
from .preprocessing import AUGMENT_KWARGS
from .runs import Run
from .strategies import plan_phases


def _template(name: str) -> str:
    return resources.files("tl_core.templates").joinpath(name).read_text(encoding="utf-8")


def _relative_items(items: list[tuple[str, int]], root: Path) -> list[tuple[str, int]]:
    return [(str(Path(p).relative_to(root)), label) for p, label in items]


def training_plan(run: Run) -> dict[str, Any]:
    """Everything the standalone script needs, as JSON-ready data."""
    import timm

    from .training import class_weights

    cfg = TrainConfig.from_dict(run.read_json("config.json") or {}).resolved()
    backbone = run.read_json("backbone.json") or {}
    labels = run.read_json("labels.json")
    split = run.read_json("split.json")
    if not backbone or not labels or not split:
        raise TLError(f"Run {run.id} did not get far enough to export (no backbone, labels or split yet).")
    root = Path(run.read_json("dataset.json")["root"])
    model = timm.create_model(
        cfg.backbone, pretrained=False, num_classes=len(labels), **backbone.get("model_kwargs", {})
    )
    groups = layer_groups(model)
    spec = BACKBONES.get(cfg.backbone)
    weights = class_weights([lbl for _, lbl in split["train"]], len(labels), cfg.class_weights)
    return {
        "backbone": cfg.backbone,
        "hub_name": spec.hub_name if spec else None,
        "weights": backbone["weights"],
        "weights_detail": backbone["weights_detail"],
        "model_kwargs": backbone.get("model_kwargs", {}),
        "classifier": classifier_name(model),
        "classes": labels,
        "data_config": run.read_json("data_config.json"),
        "augment": AUGMENT_KWARGS.get(cfg.augment),
        "feature_cache": cfg.uses_feature_cache,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "weight_decay": cfg.weight_decay,
        "label_smoothing": cfg.label_smoothing,
        "class_weights": weights.tolist() if weights is not None else None,
        "patience": cfg.patience,
        "train_bn": cfg.train_bn,
        "bn_params": sorted(bn_param_names(model)) if cfg.train_bn else [],
        "groups": {g.name: g.params for g in groups},
        "phases": [{"name": p.name, "epochs": p.epochs, "lrs": p.lrs} for p in plan_phases(cfg, groups)],
        "train": _relative_items(split["train"], root),
        "val": _relative_items(split["val"], root),
        "data_root_used": str(root),
    }


def training_script(run: Run) -> str:
    """A ``train.py`` that reproduces ``run`` (see the module docstring)."""
    plan = json.dumps(training_plan(run), indent=1)
    return _template("train.py").replace("__PLAN__", plan)


def bundle_bytes(run: Run, include_training_script: bool = True) -> bytes:
    """The model bundle as zip bytes: ready for ``st.download_button`` or a file."""
    if not run.weights_path.exists():
        raise TLError(f"Run {run.id} has no trained weights to export yet.")
    backbone = run.read_json("backbone.json") or {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(run.weights_path, "model.safetensors")
        zf.writestr("labels.json", json.dumps(run.read_json("labels.json"), indent=2))
        zf.writestr("preprocessing.json", json.dumps(run.read_json("data_config.json"), indent=2))
        zf.writestr("config.json", json.dumps(run.read_json("config.json"), indent=2))
        zf.writestr("backbone.json", json.dumps(backbone, indent=2))
        zf.writestr("metrics.jsonl", "".join(json.dumps(m) + "\n" for m in run.metrics()))
        zf.writestr("predict.py", _template("predict.py"))
        if include_training_script:
            zf.writestr("train.py", training_script(run))
        zf.writestr("README.txt", _BUNDLE_README.format(name=backbone.get("name", "?"), run=run.id))
    return buf.getvalue()


def write_bundle(run: Run, path: str | Path) -> Path:
    from .fsutil import write_atomic

    path = Path(path)
    write_atomic(path, bundle_bytes(run))
    return path


_BUNDLE_README = """Transfer Learning Studio model bundle
Run: {run}   Backbone: {name}

model.safetensors   the best weights (safetensors: no pickle, safe to load)
labels.json         class names, in output order
preprocessing.json  resize/crop/normalisation the model was trained with (timm data config)
config.json         every training setting
predict.py          python predict.py image.jpg   (needs torch, timm, pillow, safetensors)
train.py            python train.py DATA_DIR      reproduces the run from scratch
"""
