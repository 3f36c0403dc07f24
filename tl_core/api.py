"""fastai-style one-call happy path for notebooks: ``tl_core.train("digits")``."""

from __future__ import annotations

from typing import Any

from .config import TrainConfig
from .errors import TLError
from .jobs import JobManager, JobStatus, get_job_manager
from .runs import RunStatus


def train(data: str = "digits", manager: JobManager | None = None, **settings: Any) -> JobStatus:
    """Train on ``data`` with ``TrainConfig`` defaults (override any field as a keyword) and
    block until done. Goes through the ``JobManager``, exactly like the UI and the CLI."""
    from .data import modality_of

    manager = manager or get_job_manager()
    cfg = TrainConfig(data=data, **settings)
    if "backbone" not in settings:  # the default backbone of the data's kind
        cfg = cfg.for_modality(modality_of(data))
    job_id = manager.submit(cfg)
    status = manager.wait(job_id)
    if status.status == RunStatus.FAILED:
        raise TLError(status.error or "training failed")
    return status
