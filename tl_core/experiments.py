"""Lessons as experiments: a few runs queued together on the learner's own data, their curves
overlaid, and a verdict written from what they measured.

Each ``Experiment`` builds its runs, as ``(label, TrainConfig)`` pairs, from the learner's
current config, and turns the finished runs into a few sentences (``verdicts``). The runs share one
``TrainConfig.group`` id (``<experiment>-<hex>``), and a small manifest under the workspace's
runs folder (``.experiments/<group>.json``: labels and budget) lets the page find an experiment
again after a refresh or a restart.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import TrainConfig
from .errors import ConfigError, NotFound
from .fsutil import read_json, write_json_atomic
from .run_table import Curve
from .runs import Run, RunStatus, RunStore
from .ui_text import clock
from .verdicts import (
    FEATURE_EXTRACTION,
    FINE_TUNE_TOP,
    FROM_SCRATCH,
    HIGH_LR,
    LR_FACTOR,
    RECOMMENDED_LR,
    ExperimentRun,
    budget_text,
    forgetting_verdict,
    pct,
    pretraining_verdict,
)

if TYPE_CHECKING:
    from .jobs import JobManager, JobStatus

BUDGETS_S = (30.0, 60.0, 120.0, 300.0)
"""The per-run time budgets a learner picks from."""
FROM_SCRATCH_EPOCHS = 1000
"""More than any budget allows, so that the budget, not the epoch count, ends from-scratch."""
MANIFESTS = ".experiments"
_GROUP = re.compile(r"^[a-z][a-z-]*-[0-9a-f]{8}$")
_KEPT_FROM_USER = (
    "data",
    "data_label",
    "text_column",
    "label_column",
    "backbone",
    "image_size",
    "seed",
    "val_fraction",
    "test_fraction",
    "batch_size",
    "class_weights",
    "device",
    "workers",
    "model_kwargs",
    "catalog_only",
)
"""What an experiment takes from the learner's config: the data, the backbone and what the
machine needs. Everything else is the strategy's default, so the comparison is about one thing."""


# -- the runs an experiment queues -------------------------------------------------------------
def _lesson_base(cfg: TrainConfig) -> TrainConfig:
    return TrainConfig(**{name: getattr(cfg, name) for name in _KEPT_FROM_USER})


def _pretrained(cfg: TrainConfig) -> str:
    """The learner's weights, unless they chose none: these runs are about pretrained ones."""
    return "auto" if cfg.weights == "none" else cfg.weights


def pretraining_runs(cfg: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """Frozen pretrained features, the top layers fine-tuned, and the same network from random
    weights with no early stopping (only the budget ends it)."""
    base = _lesson_base(cfg)
    weights = _pretrained(cfg)
    return [
        (FEATURE_EXTRACTION, replace(base, strategy="feature-extraction", weights=weights)),
        (FINE_TUNE_TOP, replace(base, strategy="fine-tune-top", weights=weights)),
        (
            FROM_SCRATCH,
            replace(base, strategy="from-scratch", weights="none", epochs=FROM_SCRATCH_EPOCHS, patience=None),
        ),
    ]


def forgetting_runs(cfg: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """Fine-tune top at the strategy's recommended LR and at ``LR_FACTOR`` times it; the
    backbone's LRs derive from the head's, so both move together."""
    base = replace(_lesson_base(cfg), strategy="fine-tune-top", weights=_pretrained(cfg))
    lr = base.resolved().lr
    assert lr is not None
    return [(RECOMMENDED_LR, replace(base, lr=lr)), (HIGH_LR, replace(base, lr=lr * LR_FACTOR))]


# -- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    key: str
    title: str
    question: str
    """What the learner will find out, in a sentence or two."""
    build: Callable[[TrainConfig], list[tuple[str, TrainConfig]]]
    verdict: Callable[[Sequence[ExperimentRun], float, int], str]
    reads_forgetting: bool = False
    """Its verdict quotes each run's "ImageNet knowledge kept" (``tl_core.forgetting``)."""


EXPERIMENTS: dict[str, Experiment] = {
    e.key: e
    for e in (
        Experiment(
            key="pretraining",
            title="Does pretraining help?",
            question=(
                "Three runs on your data with the same backbone and time budget: the pretrained "
                "backbone frozen (feature extraction), its top layers fine-tuned, and the same "
                "network trained from random weights."
            ),
            build=pretraining_runs,
            verdict=pretraining_verdict,
        ),
        Experiment(
            key="forgetting",
            title="Does a high learning rate make it forget?",
            question=(
                f"The same fine-tune-top run twice: at the recommended learning rate and at "
                f"{LR_FACTOR}× that. Which keeps more of what it learned from ImageNet, and which "
                "scores better on your data?"
            ),
            build=forgetting_runs,
            verdict=forgetting_verdict,
            reads_forgetting=True,
        ),
    )
}


def offered(modality: str) -> list[str]:
    """The experiments that make sense on this data: the forgetting meter probes with ImageNet
    photos, so texts get the pretraining lesson only."""
    return [k for k, e in EXPERIMENTS.items() if modality != "text" or not e.reads_forgetting]


def group_title(group: str) -> str:
    """The experiment a run belongs to, by its group id; empty for a run started alone."""
    exp = EXPERIMENTS.get(group.rsplit("-", 1)[0]) if group else None
    return exp.title if exp else group


# -- starting and finding experiments ----------------------------------------------------------
@dataclass
class ExperimentRecord:
    """The manifest: which experiment a group is, its runs' labels and the budget each had."""

    group: str
    experiment: str
    budget_s: float
    created_at: float
    runs: list[dict[str, str]]
    """``{"run_id": ..., "label": ...}`` in queue order."""
    data_label: str = ""
    backbone: str = ""

    @property
    def title(self) -> str:
        return EXPERIMENTS[self.experiment].title

    @property
    def label(self) -> str:
        when = time.strftime("%d %b %H:%M", time.localtime(self.created_at))
        return f"{self.title} · {self.data_label} · {self.backbone} · {budget_text(self.budget_s)} · {when}"


def _manifest(store: RunStore, group: str) -> Path:
    return store.root / MANIFESTS / f"{group}.json"


def load_record(store: RunStore, group: str) -> ExperimentRecord:
    """The experiment ``group`` of this workspace; ``NotFound`` for anything else (a typo'd or
    foreign URL reads the same as one that never existed)."""
    data = read_json(_manifest(store, group)) if _GROUP.fullmatch(group or "") else None
    try:
        if not isinstance(data, dict) or data.get("experiment") not in EXPERIMENTS:
            raise TypeError
        names = ExperimentRecord.__dataclass_fields__
        return ExperimentRecord(**{k: v for k, v in data.items() if k in names})
    except TypeError:  # no manifest, or not one this version can read
        raise NotFound("No such experiment in your workspace.") from None


def list_records(store: RunStore) -> list[ExperimentRecord]:
    """Newest first; experiments whose runs were all deleted are left out."""
    folder = store.root / MANIFESTS
    records = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            record = load_record(store, path.stem)
        except NotFound:
            continue
        if any((store.root / r["run_id"]).is_dir() for r in record.runs):
            records.append(record)
    return sorted(records, key=lambda r: r.created_at, reverse=True)


def record_config(store: RunStore, record: ExperimentRecord) -> TrainConfig | None:
    """The data and backbone the experiment ran on (its first run's config, untagged), to
    restore a refreshed tab's project from the experiment in its URL."""
    for ref in record.runs:
        try:
            data = store.get(ref["run_id"]).config_dict()
        except NotFound:
            continue
        if data:
            return replace(TrainConfig.from_dict(data), group="")
    return None


def plan(key: str, cfg: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """The runs experiment ``key`` would queue for ``cfg``, each resolved (checked, defaults
    filled), for the page to preview."""
    return [(label, c.resolved()) for label, c in EXPERIMENTS[key].build(cfg)]


def start(
    manager: JobManager,
    workspace: str,
    key: str,
    cfg: TrainConfig,
    budget_s: float,
    owner: str = "",
    request_id: str | None = None,
) -> ExperimentRecord:
    """Queue the experiment's runs together (all or none), each with ``budget_s``, and record
    the manifest. A repeated click returns the first click's experiment."""
    if not budget_s or budget_s <= 0:
        raise ConfigError("An experiment needs a time budget per run: pick one.")
    group = f"{key}-{secrets.token_hex(4)}"
    runs = [(label, replace(c, group=group)) for label, c in EXPERIMENTS[key].build(cfg)]
    ids = manager.submit_many([c for _, c in runs], workspace, owner, request_id, time_limit_s=budget_s)
    snaps = [manager.snapshot(job_id, workspace) for job_id in ids]
    store = manager.runs(workspace)
    try:
        return load_record(store, snaps[0].group)  # the same click, seen twice
    except NotFound:
        pass
    record = ExperimentRecord(
        group=snaps[0].group,
        experiment=key,
        budget_s=float(snaps[0].time_limit_s or budget_s),  # the room's limit may be shorter
        created_at=time.time(),
        runs=[{"run_id": s.run_id, "label": label} for s, (label, _) in zip(snaps, runs, strict=True)],
        data_label=cfg.data_label or Path(cfg.data).name,
        backbone=cfg.backbone,
    )
    save_record(store, record)
    return record


def save_record(store: RunStore, record: ExperimentRecord) -> None:
    write_json_atomic(_manifest(store, record.group), asdict(record))


# -- reading an experiment back --------------------------------------------------------------------
def _forgetting(run: Run) -> tuple[float | None, str]:
    """``(kept, detail)`` from the run's forgetting report; ``(None, "")`` when it has none."""
    try:
        from .forgetting import load_report
    except ImportError:  # the forgetting meter is not installed in this build
        return None, ""
    report = load_report(run)
    if report is None:
        return None, ""
    if report.by_construction:
        return report.kept, "the backbone never changed"
    kept = round(report.kept * report.n_probe)
    return report.kept, f"its top ImageNet answer unchanged on {kept} of {report.n_probe} probe images"


def _from_snapshot(label: str, snap: JobStatus) -> ExperimentRun:
    from .ui_text import stage_text

    return ExperimentRun(
        label=label,
        run_id=snap.run_id,
        status=snap.status,
        history=list(snap.history),
        result=snap.result,
        stage=snap.stage if snap.finished else stage_text(snap),
        error=snap.error,
        queue_position=snap.queue_position,
        started_at=snap.started_at,
    )


def _from_folder(label: str, run: Run) -> ExperimentRun:
    status = run.status()
    return ExperimentRun(
        label=label,
        run_id=run.id,
        status=status.get("status", RunStatus.UNKNOWN),
        history=run.metrics(),
        result=status.get("result"),
        error=status.get("error"),
        started_at=status.get("started_at"),
    )


@dataclass
class ExperimentView:
    """An experiment as the page shows it: its record, its runs as they stand, the class count."""

    record: ExperimentRecord
    runs: list[ExperimentRun]
    n_classes: int
    deleted: list[str] = field(default_factory=list)
    """Labels of runs deleted since (from the Runs page): the comparison is no longer whole."""

    @property
    def experiment(self) -> Experiment:
        return EXPERIMENTS[self.record.experiment]

    @property
    def finished(self) -> bool:
        return all(r.finished for r in self.runs)

    def curves(self) -> list[Curve]:
        return [r.curve() for r in self.runs]

    def verdict(self) -> str | None:
        """The verdict once every run has finished; None before (numbers still moving)."""
        if not self.finished or not self.runs:
            return None
        if self.deleted:
            return (
                f"No verdict: the {' and '.join(self.deleted)} run(s) of this experiment were "
                "deleted, so it no longer compares like with like. Run it again to compare."
            )
        return self.experiment.verdict(self.runs, self.record.budget_s, self.n_classes)


def collect(
    store: RunStore, record: ExperimentRecord, live: Mapping[str, JobStatus] | None = None
) -> ExperimentView:
    """The experiment's runs: from ``live`` job snapshots (by run id) while the manager knows
    them, else from their folders (after a restart). Deleted runs are left out."""
    live = live or {}
    runs, n_classes, deleted = [], 0, []
    reads_forgetting = EXPERIMENTS[record.experiment].reads_forgetting
    for ref in record.runs:
        try:
            folder = store.get(ref["run_id"])
        except NotFound:
            deleted.append(ref["label"])
            continue
        snap = live.get(ref["run_id"])
        run = _from_snapshot(ref["label"], snap) if snap else _from_folder(ref["label"], folder)
        run.lr = folder.config_dict().get("lr")
        if run.finished and reads_forgetting:
            run.kept, run.kept_detail = _forgetting(folder)
        n_classes = n_classes or len(folder.labels())
        runs.append(run)
    return ExperimentView(record, runs, n_classes, deleted)


def status_line(r: ExperimentRun, now: float | None = None) -> str:
    """Where one run of the experiment stands, in a line."""
    now = time.time() if now is None else now
    if r.status == RunStatus.QUEUED:
        return f"waiting, number {r.queue_position} in the queue" if r.queue_position else "waiting its turn"
    if r.status == RunStatus.FAILED:
        return f"failed: {r.error or 'no reason was given'}"
    if r.finished:
        reason = {
            RunStatus.TIME_LIMIT: "cut at the budget",
            RunStatus.EARLY_STOPPED: "early-stopped",
            RunStatus.COMPLETED: "finished",
            RunStatus.INTERRUPTED: "interrupted",
        }.get(r.stop_reason, "stopped")
        if not r.trained:
            return f"{reason} before its first epoch ended"
        n = len(r.history)
        return (
            f"{reason} after {n} epoch{'s' if n != 1 else ''}: kept {pct(r.best_acc)} (epoch {r.best_epoch})"
        )
    since = f" · {clock(now - r.started_at)} since it started" if r.started_at else ""
    if not r.trained:
        return f"{r.stage or 'starting'}{since}"
    return (
        f"training epoch {len(r.history) + 1} · kept so far {pct(r.best_acc)} (epoch {r.best_epoch}){since}"
    )


def plan_rows(key: str, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The preview table: what each run of experiment ``key`` will do with ``cfg``."""
    rows = []
    for label, c in plan(key, cfg):
        assert c.lr is not None
        if c.strategy == "feature-extraction":
            backbone = "frozen"
        elif c.weights == "none":
            backbone = f"{c.lr:g}, every layer"
        else:
            backbone = f"{c.lr * c.backbone_lr_scale:g} at the top, less below"
        rows.append(
            {
                "run": label,
                "strategy": c.strategy,
                "starts from": "random weights" if c.weights == "none" else "pretrained weights",
                "head LR": f"{c.lr:g}",
                "backbone LR": backbone,
                "epochs": "until the budget" if c.epochs == FROM_SCRATCH_EPOCHS else f"up to {c.epochs}",
            }
        )
    return rows


def total_text(n_runs: int, budget_s: float, room_limit_s: float | None = None) -> str:
    """What one click costs in time: the runs queue one after another on one device."""
    per_run = min(budget_s, room_limit_s) if room_limit_s else budget_s
    text = (
        f"{n_runs} runs of at most {budget_text(per_run)} each: up to {budget_text(n_runs * per_run)} "
        "in all, one after another, plus a few seconds each to load the data and the backbone and "
        "to measure the result."
    )
    if per_run < budget_s:
        text += f" (This room stops every job after {budget_text(per_run)}.)"
    return text


def poll_interval(view: ExperimentView) -> float | None:
    """How often the page looks again: every second while a run trains, rarely while they only
    wait in the queue, never once all have finished."""
    from .ui_text import POLL_QUEUED_S, POLL_RUNNING_S

    if view.finished:
        return None
    return (
        POLL_RUNNING_S
        if any(r.status in (RunStatus.RUNNING, RunStatus.STOPPING) for r in view.runs)
        else POLL_QUEUED_S
    )
