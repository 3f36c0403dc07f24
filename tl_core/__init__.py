"""Transfer Learning Studio's engine: data, backbones, freezing, training, jobs and runs.

Never imports streamlit; the CLI, the app, tests and notebooks all use this same API. Heavy
modules (torch, timm) load when first used, so ``import tl_core`` stays cheap for the UI.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TLError": "errors",
    "DatasetError": "errors",
    "BackboneError": "errors",
    "WeightsUnavailable": "errors",
    "ConfigError": "errors",
    "TrainingFailed": "errors",
    "scan_dataset": "data",
    "Dataset": "data",
    "DatasetProfile": "data",
    "list_samples": "samples",
    "SAMPLES": "samples",
    "BACKBONES": "backbones",
    "BackboneSpec": "backbones",
    "list_backbones": "backbones",
    "create_backbone": "backbones",
    "available_sources": "backbones",
    "prefetch": "backbones",
    "layer_groups": "freezing",
    "set_trainable": "freezing",
    "report": "freezing",
    "TrainConfig": "config",
    "STRATEGIES": "config",
    "plan_phases": "strategies",
    "Trainer": "training",
    "TrainResult": "training",
    "EpochRecord": "training",
    "Callback": "training",
    "NotFound": "errors",
    "QuotaExceeded": "errors",
    "JobManager": "jobs",
    "create_app_manager": "jobs",
    "JobSpec": "runner",
    "run_job": "runner",
    "Executor": "executors",
    "ThreadExecutor": "executors",
    "ProcessExecutor": "executors",
    "RayExecutor": "ray_executor",
    "DeviceLock": "devicelock",
    "StudioSettings": "settings",
    "SOLO": "workspaces",
    "Workspace": "workspaces",
    "WorkspaceStore": "workspaces",
    "RoomBoard": "room",
    "room_results": "room",
    "JobStatus": "jobs",
    "get_job_manager": "jobs",
    "RunStore": "runs",
    "Run": "runs",
    "RunStatus": "runs",
    "detect_device": "devices",
    "train": "api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Lazy re-exports (PEP 562): the app's first paint must not wait for torch."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tl_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
