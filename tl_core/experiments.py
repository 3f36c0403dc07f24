"""Lessons as experiments: a few runs queued together on the learner's own data, their curves
overlaid, and a verdict written from what they measured.

Each ``Experiment`` builds its runs, as ``(label, TrainConfig)`` pairs, from the learner's
current config, and turns the finished runs into a few sentences. The runs share one
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
from .errors import NotFound
from .fsutil import read_json, write_json_atomic
from .run_table import Curve, curve
from .runs import ACTIVE, Run, RunStore
from .ui_text import TIME_LIMIT, best_record, clock

if TYPE_CHECKING:
    from .jobs import JobManager, JobStatus

BUDGETS_S = (30.0, 60.0, 120.0, 300.0)
"""The per-run time budgets a learner picks from."""
FROM_SCRATCH_EPOCHS = 1000
"""More than any budget allows, so that the budget, not the epoch count, ends from-scratch."""
LR_FACTOR = 100
"""The forgetting preset's "too high" learning rate, as a multiple of the recommended one."""
CLOSE = 0.02
"""Accuracies within 2 points are "about the same": a validation set of a few hundred images
moves by that much between seeds."""
MANIFESTS = ".experiments"
_GROUP = re.compile(r"^[a-z][a-z-]*-[0-9a-f]{8}$")
_KEPT_FROM_USER = (
    "data",
    "data_label",
    "backbone",
    "image_size",
    "seed",
    "val_fraction",
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


FEATURE_EXTRACTION, FINE_TUNE_TOP, FROM_SCRATCH = "feature extraction", "fine-tune top", "from scratch"
RECOMMENDED_LR, HIGH_LR = "recommended LR", f"{LR_FACTOR}× LR"


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


# -- what the finished runs measured -----------------------------------------------------------
@dataclass
class ExperimentRun:
    """One run of an experiment, live (from a job snapshot) or from its folder."""

    label: str
    run_id: str
    status: str
    history: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    """The ``TrainResult`` summary once finished (wall time, device, why it stopped)."""
    stage: str = ""
    error: str | None = None
    queue_position: int | None = None
    started_at: float | None = None
    lr: float | None = None
    kept: float | None = None
    """Forgetting experiments: fraction of probe images whose ImageNet answer was kept."""
    kept_detail: str = ""

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    @property
    def trained(self) -> bool:
        return bool(self.history)

    @property
    def stop_reason(self) -> str:
        """``completed``, ``early-stopped``, ``time-limit``, ``stopped``, or the run's status."""
        if self.stage == TIME_LIMIT:
            return "time-limit"
        return (self.result or {}).get("status") or self.status

    @property
    def cut(self) -> bool:
        return self.stop_reason == "time-limit"

    def curve(self) -> Curve:
        return curve(self.label, self.history, self.result)

    @property
    def best_acc(self) -> float:
        return float(best_record(self.history)["val_acc"])

    @property
    def best_epoch(self) -> int:
        return int(best_record(self.history)["epoch"])

    @property
    def seconds_to_best(self) -> float:
        c = self.curve()
        return c.seconds[c.epochs.index(self.best_epoch)]

    @property
    def train_s(self) -> float:
        return self.curve().seconds[-1]

    def seconds_to_reach(self, accuracy: float) -> float | None:
        """Training seconds until validation accuracy first reached ``accuracy``."""
        c = self.curve()
        return next((s for s, a in zip(c.seconds, c.val_acc, strict=True) if a >= accuracy), None)


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _points(x: float) -> str:
    return f"{abs(x) * 100:.1f} points"


def _dur(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def budget_text(seconds: float) -> str:
    """``30`` -> ``"30 s"``, ``120`` -> ``"2 min"``."""
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"


def _climbing(r: ExperimentRun) -> bool:
    """Its last epoch was its best, and better than its first: the budget ended a rise."""
    return (
        len(r.history) >= 2
        and r.best_epoch == r.history[-1]["epoch"]
        and r.best_acc > r.history[0]["val_acc"]
    )


def _ending(r: ExperimentRun, budget_s: float) -> str:
    n = len(r.history)
    epochs = f"{n} epoch{'s' if n != 1 else ''}"
    reason = r.stop_reason
    if reason == "time-limit":
        still = " while still improving" if _climbing(r) else ""
        return f"The {budget_text(budget_s)} budget cut it after {epochs}{still}."
    if reason == "early-stopped":
        return f"Early stopping ended it after {epochs}: validation loss had stopped improving."
    if reason == "completed":
        return f"It finished all {epochs} in {_dur(r.train_s)}."
    if reason == "interrupted":
        return f"It was interrupted (the server stopped) after {epochs}."
    return f"It was stopped by hand after {epochs}."


def describe_run(r: ExperimentRun, budget_s: float, name: str | None = None) -> str:
    """One or two sentences: best accuracy, when it was reached, and what ended the run."""
    name = name or r.label[:1].upper() + r.label[1:]
    if r.status == "failed":
        return f"{name} failed: {r.error or 'no reason was given'}"
    if not r.trained:
        if r.cut:
            return f"{name} did not finish a single epoch within the {budget_text(budget_s)} budget."
        return f"{name} ended before its first epoch ({r.status})."
    return (
        f"{name} reached **{_pct(r.best_acc)}** after {_dur(r.seconds_to_best)} of training "
        f"(epoch {r.best_epoch}). {_ending(r, budget_s)}"
    )


def _by_label(runs: Sequence[ExperimentRun]) -> dict[str, ExperimentRun]:
    return {r.label: r for r in runs}


def pretraining_verdict(runs: Sequence[ExperimentRun], budget_s: float, n_classes: int) -> str:
    """Each run's measured best, chance level, and what that says about pretraining on this data."""
    by = _by_label(runs)
    scratch = by.get(FROM_SCRATCH)
    pretrained = [r for r in runs if r.label != FROM_SCRATCH]
    parts = [describe_run(r, budget_s) for r in pretrained]
    if scratch is not None:
        parts.append(describe_run(scratch, budget_s, "From scratch (the same network, random weights)"))
    chance = 1 / n_classes if n_classes else None
    if chance is not None:
        parts.append(f"Guessing would score {_pct(chance)} ({n_classes} classes).")
    trained = [r for r in pretrained if r.trained]
    if scratch is None or not scratch.trained:
        parts.append(
            "From scratch has no epoch to compare with: give it a longer budget."
            if trained
            else "No run finished an epoch, so there is nothing to compare yet: try a longer budget."
        )
        return " ".join(parts)
    if not trained:
        parts.append("No pretrained run finished an epoch, so there is nothing to compare yet.")
        return " ".join(parts)
    best = max(trained, key=lambda r: r.best_acc)
    gap = best.best_acc - scratch.best_acc
    if chance is not None and scratch.best_acc < chance + 0.1:
        parts.append(f"From scratch stayed close to guessing ({_pct(scratch.best_acc)}).")
    if gap >= CLOSE:
        text = f"**Pretraining helped:** {best.label} beat from scratch by {_points(gap)}"
        caught = best.seconds_to_reach(scratch.best_acc)
        if caught is not None and caught < scratch.seconds_to_best:
            text += (
                f", and it passed from scratch's best ({_pct(scratch.best_acc)}) after {_dur(caught)} "
                f"of training, where from scratch needed {_dur(scratch.seconds_to_best)}"
            )
        text += "."
        if scratch.cut and _climbing(scratch):
            text += (
                " From scratch might climb further with more time, but it starts from nothing, "
                "while the pretrained backbone already knows edges, textures and shapes."
            )
    elif gap > -CLOSE:
        text = (
            f"**About even:** from scratch came within {_points(gap)} of {best.label}, so on this data "
            "pretraining adds little accuracy"
        )
        if best.seconds_to_best < scratch.seconds_to_best:
            text += (
                f"; it still got there sooner ({_dur(best.seconds_to_best)} against "
                f"{_dur(scratch.seconds_to_best)})"
            )
        text += "."
    else:
        text = (
            f"**From scratch won** on this data, by {_points(gap)} over {best.label}. That happens "
            "when the images look little like the photos the backbone was pretrained on, or when the "
            "task is simple enough to learn from nothing within the budget."
        )
    parts.append(text)
    return " ".join(parts)


def forgetting_verdict(runs: Sequence[ExperimentRun], budget_s: float, n_classes: int) -> str:
    """Accuracy and "ImageNet knowledge kept" of the same run at the recommended LR and at 100x."""
    by = _by_label(runs)
    low, high = by.get(RECOMMENDED_LR), by.get(HIGH_LR)
    parts = []
    for r, name in ((low, "At the recommended learning rate"), (high, f"At {LR_FACTOR}× that")):
        if r is None:
            continue
        lr = f" (head LR {r.lr:g})" if r.lr else ""
        if r.status == "failed":
            parts.append(f"{name}{lr} the run failed: {r.error or 'no reason was given'}")
            continue
        if not r.trained:
            parts.append(f"{name}{lr} the run finished no epoch within the {budget_text(budget_s)} budget.")
            continue
        text = f"{name}{lr}, fine-tune top reached **{_pct(r.best_acc)}** validation accuracy"
        if r.kept is not None:
            detail = f" ({r.kept_detail})" if r.kept_detail else ""
            text += f" and kept **{r.kept:.0%}** of its ImageNet knowledge{detail}"
        parts.append(text + ".")
    if low is None or high is None or not (low.trained and high.trained):
        return " ".join(parts)
    if low.kept is not None and high.kept is not None:
        lost = low.kept - high.kept
        if lost >= 0.1:
            parts.append(
                f"**The high learning rate made it forget:** it kept {_points(lost)} less of what "
                "pretraining taught. That is catastrophic forgetting, and why pretrained layers are "
                "fine-tuned with small learning rates."
            )
        elif lost <= -0.1:
            parts.append(
                f"Here the high learning rate did not cost ImageNet knowledge: it kept {_points(lost)} "
                "more than the recommended one."
            )
        else:
            parts.append(
                f"Both kept about as much ImageNet knowledge ({low.kept:.0%} and {high.kept:.0%}): within "
                "this budget the high learning rate did not overwrite more of it."
            )
    else:
        parts.append(
            "ImageNet knowledge kept was not measured for these runs: it needs pretrained weights that "
            "include an ImageNet classifier."
        )
    gap = low.best_acc - high.best_acc
    if gap >= CLOSE:
        parts.append(f"The high learning rate also cost {_points(gap)} of accuracy on your data.")
    elif gap <= -CLOSE:
        parts.append(
            f"On your data, though, the high learning rate scored {_points(gap)} higher: forgetting "
            "ImageNet did not hurt this task."
        )
    else:
        parts.append("Accuracy on your data was about the same.")
    return " ".join(parts)


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
            data = store.get(ref["run_id"]).read_json("config.json")
        except NotFound:
            continue
        if isinstance(data, dict):
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
        status=status.get("status", "unknown"),
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
        return self.experiment.verdict(self.runs, self.record.budget_s, self.n_classes)


def collect(
    store: RunStore, record: ExperimentRecord, live: Mapping[str, JobStatus] | None = None
) -> ExperimentView:
    """The experiment's runs: from ``live`` job snapshots (by run id) while the manager knows
    them, else from their folders (after a restart). Deleted runs are left out."""
    live = live or {}
    runs, n_classes = [], 0
    reads_forgetting = EXPERIMENTS[record.experiment].reads_forgetting
    for ref in record.runs:
        try:
            folder = store.get(ref["run_id"])
        except NotFound:
            continue
        snap = live.get(ref["run_id"])
        run = _from_snapshot(ref["label"], snap) if snap else _from_folder(ref["label"], folder)
        run.lr = (folder.read_json("config.json", {}) or {}).get("lr")
        if run.finished and reads_forgetting:
            run.kept, run.kept_detail = _forgetting(folder)
        n_classes = n_classes or len(folder.read_json("labels.json", []) or [])
        runs.append(run)
    return ExperimentView(record, runs, n_classes)


def status_line(r: ExperimentRun, now: float | None = None) -> str:
    """Where one run of the experiment stands, in a line."""
    now = time.time() if now is None else now
    if r.status == "queued":
        return f"waiting, number {r.queue_position} in the queue" if r.queue_position else "waiting its turn"
    if r.status == "failed":
        return f"failed: {r.error or 'no reason was given'}"
    if r.finished:
        reason = {
            "time-limit": "cut at the budget",
            "early-stopped": "early-stopped",
            "completed": "finished",
            "interrupted": "interrupted",
        }.get(r.stop_reason, "stopped")
        if not r.trained:
            return f"{reason} before its first epoch ended"
        n = len(r.history)
        return (
            f"{reason} after {n} epoch{'s' if n != 1 else ''}: best {_pct(r.best_acc)} (epoch {r.best_epoch})"
        )
    since = f" · {clock(now - r.started_at)} since it started" if r.started_at else ""
    if not r.trained:
        return f"{r.stage or 'starting'}{since}"
    return (
        f"training epoch {len(r.history) + 1} · best so far {_pct(r.best_acc)} (epoch {r.best_epoch}){since}"
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
    return POLL_RUNNING_S if any(r.status in ("running", "stopping") for r in view.runs) else POLL_QUEUED_S
