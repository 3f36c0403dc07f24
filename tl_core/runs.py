"""A run is a folder: ``config.json``, ``metrics.jsonl``, ``status.json``, ``best.safetensors``,
``labels.json``, ``data_config.json``, ``dataset.json``, ``split.json`` and ``backbone.json``.
``Run`` owns those names and reads them back as typed values; other modules keep their own
files (predictions, the forgetting report, exports) beside them.

Everything is written atomically (``metrics.jsonl`` is append-only, one line per epoch), so a
crash or a browser refresh never leaves a half-written file, and runs can be listed and
reloaded after the process restarts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NotFound, TLError
from .fsutil import read_json, write_atomic, write_json_atomic
from .paths import runs_root

if TYPE_CHECKING:
    from .backbones import BackboneInfo
    from .config import TrainConfig
    from .data import DatasetProfile

PROCESS_TOKEN = uuid.uuid4().hex
"""Identifies this process in ``status.json``; a ``running`` status with another token whose
pid is gone was interrupted (crash, kill, reboot)."""


class RunStatus(str, Enum):
    """Every state a run or job can be in; ``status.json`` holds the value. A ``str``, so JSON,
    f-strings and comparisons with a plain string all see the value."""

    QUEUED = "queued"
    RUNNING = "running"
    STOPPING = "stopping"
    COMPLETED = "completed"
    EARLY_STOPPED = "early-stopped"
    """Patience ran out: no new best epoch for ``patience`` epochs."""
    STOPPED = "stopped"
    """By the user, or at a room's time limit."""
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """The process running it ended before it finished (crash, kill, reboot)."""
    UNKNOWN = "unknown"
    """No ``status.json``: a folder being created or damaged by hand."""
    TIME_LIMIT = "time-limit"
    """A training result's status when a room's time limit ended it (the run is ``stopped``)."""

    __str__ = str.__str__
    __format__ = str.__format__  # the value, on every Python (3.12 changed Enum's)


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.STOPPING)
_TOMBSTONE = ".deleted-"
"""A run being deleted is first renamed to a hidden ``.deleted-*`` folder: listing skips hidden
names, so a half-removed folder never shows as a run."""


@dataclass
class RunSummary:
    run_id: str
    run_dir: str
    status: str
    created_at: float
    backbone: str
    strategy: str
    data: str
    best_val_acc: float | None = None
    epochs_run: int = 0
    error: str | None = None
    data_label: str = ""
    kind: str = "train"
    """``train``, or ``lr-find`` (a range test: no model to evaluate or export)."""
    group: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What a person tells runs apart by: data, strategy, accuracy and start time; the id
        is secondary (``id_label``)."""
        acc = f"{self.best_val_acc:.1%}" if self.best_val_acc is not None else self.status
        when = time.strftime("%H:%M", time.localtime(self.created_at))
        return f"{self.data_label} · {self.strategy} · {acc} · {when}"

    @property
    def id_label(self) -> str:
        return f"{self.label}  ({self.run_id[-6:]})"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Run:
    """File access for one run folder."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.id = self.dir.name

    CONFIG = "config.json"
    STATUS = "status.json"
    METRICS = "metrics.jsonl"
    WEIGHTS = "best.safetensors"
    LABELS = "labels.json"
    DATA_CONFIG = "data_config.json"
    DATASET = "dataset.json"
    SPLIT = "split.json"
    BACKBONE = "backbone.json"

    # paths
    config_path = property(lambda self: self.dir / Run.CONFIG)
    status_path = property(lambda self: self.dir / Run.STATUS)
    metrics_path = property(lambda self: self.dir / Run.METRICS)
    weights_path = property(lambda self: self.dir / Run.WEIGHTS)
    labels_path = property(lambda self: self.dir / Run.LABELS)
    data_config_path = property(lambda self: self.dir / Run.DATA_CONFIG)
    dataset_path = property(lambda self: self.dir / Run.DATASET)

    # what training recorded, typed (empty or None until the run got that far)
    def config_dict(self) -> dict[str, Any]:
        return self.read_json(Run.CONFIG, {}) or {}

    def config(self) -> TrainConfig:
        from .config import TrainConfig

        return TrainConfig.from_dict(self.config_dict())

    def labels(self) -> list[str]:
        """Class names in the model's output order."""
        return list(self.read_json(Run.LABELS, []) or [])

    def split(self) -> dict[str, list[tuple[str, int]]]:
        """The exact ``(path, label index)`` files of each split, as scanned for training."""
        raw = self.read_json(Run.SPLIT, {}) or {}
        return {name: [(str(p), int(label)) for p, label in rows] for name, rows in raw.items()}

    def data_config(self) -> dict[str, Any]:
        """The model's preprocessing (timm data config), ``input_size`` as the tuple timm wants."""
        cfg = dict(self.read_json(Run.DATA_CONFIG, {}) or {})
        if "input_size" in cfg:
            cfg["input_size"] = tuple(cfg["input_size"])
        return cfg

    def backbone(self) -> BackboneInfo | None:
        """What was built: name, weights source, ``model_kwargs``."""
        from dataclasses import fields

        from .backbones import BackboneInfo

        raw = self.read_json(Run.BACKBONE)
        if not raw:
            return None
        known = {f.name for f in fields(BackboneInfo)}
        return BackboneInfo(**({"model_kwargs": {}} | {k: v for k, v in raw.items() if k in known}))

    def profile(self) -> DatasetProfile | None:
        """The dataset scan: classes, counts per split, skipped files, image statistics."""
        from .data import DatasetProfile

        raw = self.read_json(Run.DATASET)
        return DatasetProfile.from_dict(raw) if raw else None

    def record_setup(
        self,
        config: TrainConfig,
        profile: DatasetProfile,
        items: dict[str, list[tuple[str, int]]],
        info: BackboneInfo,
    ) -> None:
        """Everything a finished run is rebuilt, evaluated and exported from, written before
        training starts."""
        import dataclasses

        self.write_json(Run.CONFIG, config.to_dict())
        self.write_json(Run.LABELS, profile.classes)
        self.write_json(Run.DATA_CONFIG, info.data_config)
        self.write_json(Run.DATASET, profile.to_dict())
        self.write_json(Run.SPLIT, items)  # the exact files, for export without a rescan
        self.write_json(Run.BACKBONE, dataclasses.asdict(info))

    def write_json(self, name: str, obj: Any) -> None:
        write_json_atomic(self.dir / name, obj)

    def read_json(self, name: str, default: Any = None) -> Any:
        return read_json(self.dir / name, default)

    def write_status(self, status: str, **fields: Any) -> None:
        current = self.read_json(Run.STATUS, {}) or {}
        current.update(fields, status=status, pid=os.getpid(), process=PROCESS_TOKEN, updated_at=time.time())
        write_json_atomic(self.status_path, current)

    def status(self) -> dict[str, Any]:
        """``status.json``, with a dead process's ``running`` reported as ``interrupted``."""
        st = self.read_json(Run.STATUS, {}) or {}
        if (
            st.get("status") in ACTIVE
            and st.get("process") != PROCESS_TOKEN
            and not pid_alive(int(st.get("pid", -1)))
        ):
            st["status"] = RunStatus.INTERRUPTED
            st.setdefault("error", "The process running this job ended before it finished.")
        return st

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One JSON line per epoch; the single ``write`` call keeps lines whole."""
        line = json.dumps(record, default=float) + "\n"
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a hard crash
        return out

    def save_weights(self, state_dict: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        write_atomic(self.weights_path, save(tensors, metadata=metadata))

    def load_weights(self) -> dict[str, Any]:
        from safetensors.torch import load_file

        if not self.weights_path.exists():
            raise TLError(f"Run {self.id} has no saved weights (it never finished an epoch).")
        return load_file(str(self.weights_path))

    def summary(self) -> RunSummary:
        cfg = self.config_dict()
        st = self.status()
        return RunSummary(
            run_id=self.id,
            run_dir=str(self.dir),
            status=st.get("status", RunStatus.UNKNOWN),
            created_at=float(st.get("created_at", self.dir.stat().st_mtime)),
            backbone=cfg.get("backbone", "?"),
            strategy=cfg.get("strategy", "?"),
            data=cfg.get("data", "?"),
            data_label=cfg.get("data_label") or Path(str(cfg.get("data", "?"))).name,
            best_val_acc=st.get("best_val_acc"),
            epochs_run=int(st.get("epochs_run", 0)),
            error=st.get("error"),
            kind=st.get("kind", "train"),
            group=cfg.get("group", ""),
        )


class RunStore:
    """All runs under one root folder (default ``~/.tl-studio/runs``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else runs_root()

    def create(self, config: dict[str, Any], kind: str = "train") -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = str(config.get("backbone", "run")).replace("/", "_")
        run_dir = self.root / f"{stamp}-{name}-{secrets.token_hex(3)}"
        run_dir.mkdir()
        run = Run(run_dir)
        run.write_json(Run.CONFIG, config)
        run.write_status(RunStatus.QUEUED, created_at=time.time(), kind=kind)
        return run

    def get(self, run_id: str) -> Run:
        try:
            run_dir = (self.root / run_id).resolve()
            found = (
                run_dir.parent == self.root.resolve()
                and not run_dir.name.startswith(".")
                and (run_dir / Run.CONFIG).exists()
            )
        except (OSError, ValueError):  # a NUL byte, a name too long for the file system
            found = False
        if not found:
            raise NotFound(f"No run '{run_id}' in {self.root}.")
        return Run(run_dir)

    def list(self) -> list[RunSummary]:
        """Newest first; folders that aren't runs are ignored."""
        if not self.root.is_dir():
            return []
        runs = []
        for d in self.root.iterdir():
            if d.name.startswith(".") or not (d / Run.CONFIG).exists():
                continue
            try:
                runs.append(Run(d).summary())
            except FileNotFoundError:  # deleted while we listed
                continue
        return sorted(runs, key=lambda r: r.created_at, reverse=True)

    def delete(self, run_id: str) -> None:
        """Remove a finished run for good; a queued or running one must be stopped first.

        The folder is renamed to a hidden tombstone in one step, then removed: a crash midway
        leaves a hidden folder that the next ``delete`` sweeps, never a half-run in the list.
        """
        run = self.get(run_id)
        status = run.status().get("status")
        if status in ACTIVE:
            raise TLError(
                f"Run {run.id} is still {status}: stop it first (the Stop button where it "
                "trains), then delete it."
            )
        tombstone = self.root / f"{_TOMBSTONE}{run.id}-{secrets.token_hex(3)}"
        try:
            os.replace(run.dir, tombstone)
        except FileNotFoundError as exc:  # deleted by another tab a moment ago
            raise NotFound(f"No run '{run_id}' here: it was deleted a moment ago.") from exc
        for leftover in self.root.glob(f"{_TOMBSTONE}*"):
            shutil.rmtree(leftover, ignore_errors=True)
