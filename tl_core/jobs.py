"""Training jobs: a ``JobManager`` with one fair queue over a pool of devices (every GPU of the
machine, or the CPU), executors that run the jobs.

Jobs belong to the server, not to a browser tab: whoever knows a job id *and* its workspace
can watch or stop it, so a refresh re-attaches and other students see "not found". The
manager only keeps a ``JobStatus`` per job, fed by the executor's JSON events; readers get
cheap copies via ``snapshot()``. Where the job really runs (a thread, a worker process, a Ray
actor on another machine) is the executor's business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import NotFound, QuotaExceeded
from .executors import Executor, ProcessExecutor, ThreadExecutor
from .queueing import pooled_waits, service_order
from .runner import STOP_STAGES, JobSpec
from .runs import Run, RunStatus, RunStore
from .settings import StudioSettings
from .workspaces import SOLO, WorkspaceStore

FINISHED = (RunStatus.STOPPED, RunStatus.COMPLETED, RunStatus.FAILED)
JOB_KINDS = ("train", "lr-find")
DOUBLE_SUBMIT_S = 10.0
"""A repeated ``request_id`` within this window is the same click, not a second job."""


@dataclass
class JobStatus:
    job_id: str
    run_id: str
    run_dir: str
    workspace: str = SOLO
    owner: str = ""
    """The workspace's display name, for the instructor's queue."""
    data_label: str = ""
    backbone: str = ""
    strategy: str = ""
    kind: str = "train"
    """``train`` or ``lr-find``."""
    group: str = ""
    """Shared by the runs of one experiment (``TrainConfig.group``)."""
    status: str = RunStatus.QUEUED
    """queued / running / stopping / stopped / completed / failed."""
    queue_position: int | None = None
    wait_s: float | None = None
    """Estimated seconds until a queued job starts; None while there is nothing to go by."""
    starts_at: float | None = None
    """When the estimate expects it to start; ``wait_s`` counts down to it in snapshots."""
    stage: str = "waiting"
    stage_done: int = 0
    stage_total: int = 0
    phase: str = ""
    epoch: int = 0
    epochs_total: int = 0
    step: int = 0
    steps_total: int = 0
    progress: float = 0.0
    eta_s: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    """Exception class name; anything but a ``TLError`` subclass is a bug."""
    user_error: bool = False
    result: dict[str, Any] | None = None
    device: str = ""
    node: str = ""
    """The Ray node a job ran on (host name and node id); empty on this machine."""
    time_limit_s: float | None = None
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def trained(self) -> bool:
        """At least one epoch ended, so there are weights and results to look at."""
        return bool(self.history)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Job:
    """The manager's record of one job: its config, run folder and live status."""

    def __init__(
        self,
        job_id: str,
        config: TrainConfig,
        run: Run,
        wants: str | None,
        workspace: str,
        owner: str,
        request_id: str | None = None,
        time_limit_s: float | None = None,
        kind: str = "train",
    ):
        self.id = job_id
        self.kind = kind
        self.config = config
        self.run = run
        self.wants = wants
        """The one device this job must run on; None: any device of the manager's pool."""
        self.device_key = wants or ""
        """Where it runs, once started (a physical device: ``cuda:1``, ``cpu``)."""
        self.workspace = workspace
        self.request_id = request_id
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._status = JobStatus(
            job_id=job_id,
            run_id=run.id,
            run_dir=str(run.dir),
            workspace=workspace,
            owner=owner,
            data_label=config.data_label or Path(config.data).name,
            backbone=config.backbone,
            strategy=config.strategy,
            kind=kind,
            group=config.group,
            device=wants or "",
            time_limit_s=time_limit_s,
        )

    def update(self, **changes: Any) -> None:
        with self._lock:
            self._status = dataclasses.replace(self._status, **changes)

    def append_history(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._status.history.append(record)

    def snapshot(self) -> JobStatus:
        with self._lock:
            snap = dataclasses.replace(self._status, history=list(self._status.history))
        if snap.starts_at is not None and snap.status == RunStatus.QUEUED:
            snap.wait_s = max(snap.starts_at - time.time(), 0.0)
        return snap

    def update_unless_finished(self, **changes: Any) -> bool:
        """Compare-and-set: a Stop that races the job's own end must not overwrite it."""
        with self._lock:
            if self._status.finished:
                return False
            self._status = dataclasses.replace(self._status, **changes)
            return True

    def peek(self, name: str) -> Any:
        with self._lock:
            return getattr(self._status, name)


def _default_pool(executor: Executor) -> list[str]:
    """Worker processes get every visible GPU; in-process threads share this process's one
    CUDA device (the first visible GPU, named by its physical id so the device lock matches);
    an executor with devices of its own (a Ray cluster) names them."""
    from .devices import visible_devices

    if getattr(executor, "is_cluster", False):
        return executor.devices()  # type: ignore[attr-defined]
    pool = visible_devices()
    return pool if isinstance(executor, ProcessExecutor) else pool[:1]


class JobManager:
    """Submit, watch and stop training jobs; at most ``max_per_device`` run at once per device.

    Args:
        runs_dir: the solo workspace's runs (default ``$TL_STUDIO_HOME/runs``).
        executor: ``"thread"`` (this process; the CLI's and notebooks' default), ``"process"``
            (a worker process per device; the app's), ``"ray"`` (a local Ray; for a cluster pass
            ``RayExecutor(address)``) or any ``Executor``.
        max_queued_per_workspace: queued jobs one workspace may have; None is no limit.
        time_limit_s: each job stops (keeping its best weights) after this long.
        max_finished_jobs: finished jobs remembered in memory; their runs stay on disk.
        devices: the pool that ``auto``/``cuda`` jobs are placed on (``visible_devices()``);
            default: every visible GPU for worker processes, else one device.
    """

    def __init__(
        self,
        runs_dir: str | Path | None = None,
        max_per_device: int = 1,
        *,
        executor: Executor | str = "thread",
        workspaces: WorkspaceStore | None = None,
        max_queued_per_workspace: int | None = None,
        time_limit_s: float | None = None,
        max_finished_jobs: int = 500,
        devices: list[str] | None = None,
    ):
        self.workspaces = workspaces or WorkspaceStore()
        if runs_dir is not None:
            self.workspaces.solo_runs = Path(runs_dir)
        self.store = self.workspaces.runs(SOLO)
        self.max_per_device = max_per_device
        self.max_queued_per_workspace = max_queued_per_workspace
        self.time_limit_s = time_limit_s
        self.max_finished_jobs = max_finished_jobs
        if isinstance(executor, str):
            executor = _EXECUTORS[executor]()
        self.executor: Executor = executor
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queue: list[Job] = []
        self._running: dict[str, Job] = {}
        self._last_served: dict[str, int] = {}
        self._turn = 0
        self._durations: list[tuple[tuple[str, str], float]] = []
        self._pool: list[str] | None = list(devices) if devices else None
        self._published: set[str] = set()
        if devices and isinstance(self.executor, ThreadExecutor):
            own = _default_pool(self.executor)
            if any(d.startswith("cuda:") and d not in own for d in devices):
                from .errors import ConfigError

                raise ConfigError(
                    f"In-process jobs train on this process's first GPU ({', '.join(own)}); for "
                    f"{', '.join(devices)} use executor='process', or CUDA_VISIBLE_DEVICES."
                )

    @property
    def devices(self) -> list[str]:
        """The pool; looked up on first use so that creating a manager imports no torch."""
        if self._pool is None:
            self._pool = _default_pool(self.executor)
        return self._pool

    @property
    def on_cluster(self) -> bool:
        """Jobs run on a cluster (Ray) that picks node and GPU itself."""
        return getattr(self.executor, "is_cluster", False)

    def _limit(self, device: str) -> int:
        """Jobs ``device`` runs at once: ``max_per_device``, or a cluster's own capacity."""
        return self.executor.capacity(device) if self.on_cluster else self.max_per_device  # type: ignore[attr-defined]

    def _wants(self, requested: str) -> str | None:
        """The device a job asking for ``requested`` must run on; None for any of the pool."""
        pool = self.devices
        if self.on_cluster:  # its scheduler picks node and GPU
            if requested in ("auto", "cuda", "cpu"):
                return None
            from .errors import ConfigError

            raise ConfigError(
                f"On a Ray cluster Ray picks the GPU: ask for auto, cuda or cpu, not {requested}."
            )
        gpus = [d for d in pool if d.startswith("cuda:")]
        if requested == "auto" or (requested == "cuda" and gpus):
            return None
        if requested in pool:
            return requested
        if requested.startswith("cuda"):
            from .errors import ConfigError

            if not gpus:
                raise ConfigError(
                    f"{requested} was requested but this server trains on {', '.join(pool)}; "
                    "use --device auto or cpu."
                )
            raise ConfigError(
                f"{requested} is not among the GPUs jobs run on here ({', '.join(gpus)}); pick one "
                "of them, or auto for the first free one. The command line and notebooks train on "
                "one GPU: choose it with CUDA_VISIBLE_DEVICES=<n>."
            )
        from .devices import detect_device

        return detect_device(requested).device

    # -- submitting --------------------------------------------------------------------------
    def submit(
        self,
        config: TrainConfig,
        workspace: str = SOLO,
        owner: str = "",
        request_id: str | None = None,
        *,
        kind: str = "train",
        time_limit_s: float | None = None,
    ) -> str:
        """Validate ``config``, create its run folder, queue it; return an unguessable job id.

        A UI passes ``request_id`` (e.g. its tab and the settings): the same id again while
        that job is still queued or running, within seconds, returns the same job, so a
        double-clicked Start submits once.

        Args:
            kind: ``train``, or ``lr-find`` for a learning-rate range test on ``config``.
            time_limit_s: this job's own budget; the room's limit still applies if shorter.
        """
        return self.submit_many([config], workspace, owner, request_id, kind=kind, time_limit_s=time_limit_s)[
            0
        ]

    def submit_many(
        self,
        configs: list[TrainConfig],
        workspace: str = SOLO,
        owner: str = "",
        request_id: str | None = None,
        *,
        kind: str = "train",
        time_limit_s: float | None = None,
    ) -> list[str]:
        """Queue ``configs`` together, all or none: an experiment's runs either all fit the
        workspace's quota or none is started (a half-queued comparison compares nothing)."""
        from .backbones import check_weights

        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}; expected one of {JOB_KINDS}")
        resolved = [c.resolved() for c in configs]
        for cfg in resolved:
            check_weights(cfg.backbone, cfg.weights, cfg.catalog_only)
        ws = self.workspaces.get(workspace)
        limits = [t for t in (time_limit_s, self.time_limit_s) if t]
        limit = min(limits) if limits else None
        wants = [self._wants(cfg.device) for cfg in resolved]
        with self._lock:
            same = [
                j
                for j in self._queue + list(self._running.values())
                if request_id is not None
                and (j.workspace, j.request_id) == (workspace, request_id)
                and time.time() - j.peek("submitted_at") < DOUBLE_SUBMIT_S
            ]
            if same:  # in submission order, as the first click returned them
                return [j.id for j in sorted(same, key=lambda j: j.peek("submitted_at"))]
            queued = sum(1 for j in self._queue if j.workspace == workspace)
            quota = self.max_queued_per_workspace
            if quota is not None and len(resolved) > quota:
                raise QuotaExceeded(
                    f"This queues {len(resolved)} runs at once, and this room lets each person have "
                    f"{quota} waiting: ask the instructor to raise TL_STUDIO_MAX_QUEUED."
                )
            if quota is not None and queued + len(resolved) > quota:
                raise QuotaExceeded(
                    f"You already have {queued} job(s) waiting; this needs room for "
                    f"{len(resolved)}, and this room allows {quota} waiting at a time. Stop some, or "
                    "start this once they are running."
                    if len(resolved) > 1
                    else f"You already have {queued} job(s) waiting, the most this room allows. Stop "
                    "one of them, or start this once one of them is running."
                )
            store = self.workspaces.runs(workspace)
            runs: list[Run] = []
            try:  # every run folder first, so a full disk queues nothing
                for cfg in resolved:
                    runs.append(store.create(cfg.to_dict(), kind=kind))
            except BaseException:
                for made in runs:
                    shutil.rmtree(made.dir, ignore_errors=True)
                raise
            ids = []
            for cfg, want, run in zip(resolved, wants, runs, strict=True):
                job = Job(
                    secrets.token_urlsafe(16),
                    cfg,
                    run,
                    want,
                    workspace,
                    owner or ws.name,
                    request_id=request_id,
                    time_limit_s=limit,
                    kind=kind,
                )
                self._jobs[job.id] = job
                self._queue.append(job)
                ids.append(job.id)
            self._dispatch_locked()
        return ids

    def _candidates(self, job: Job) -> list[str]:
        return [job.wants] if job.wants else self.devices

    def _dispatch_locked(self) -> None:
        """One fair order over the whole queue (round-robin across workspaces); each job in
        turn goes to the least busy free device it may use. A job whose device is busy is
        skipped, not in the way: the next one may fit another device."""
        order = service_order(self._queue, lambda j: j.workspace, self._last_served)
        devices = list(dict.fromkeys([*self.devices, *(j.wants for j in order if j.wants)]))
        busy = {d: 0 for d in devices}
        for job in self._running.values():
            busy[job.device_key] = busy.get(job.device_key, 0) + 1
        waiting = []
        for job in order:
            free = [d for d in self._candidates(job) if busy[d] < self._limit(d)]
            if not free:
                waiting.append(job)
                continue
            device = min(free, key=lambda d: busy[d])
            try:
                self._start_locked(job, device)
            except Exception as exc:  # disk full, executor shut down: fail this job, not the queue
                self._running.pop(job.id, None)
                job.update(
                    status=RunStatus.FAILED,
                    stage="failed",
                    error=f"Could not start: {exc}",
                    finished_at=time.time(),
                )
                job.done.set()
                continue
            busy[device] += 1
        slots = self._slots_left_s(devices)
        waits = pooled_waits(waiting, slots, self._candidates, self._expected_s)
        for pos, (job, wait) in enumerate(zip(waiting, waits, strict=True), start=1):
            starts_at = None if wait is None else time.time() + wait
            job.update(queue_position=pos, wait_s=wait, starts_at=starts_at)
        self._published |= set(busy)  # a device that falls idle must publish its 0 too
        for device in sorted(self._published):
            load = busy.get(device, 0) + sum(1 for j in waiting if device in self._candidates(j))
            self._publish(device, load)

    def _start_locked(self, job: Job, device: str) -> None:
        self._queue.remove(job)
        job.device_key = device
        self._running[job.id] = job
        self._turn += 1
        self._last_served[job.workspace] = self._turn
        now = time.time()
        job.update(
            status=RunStatus.RUNNING,
            queue_position=None,
            wait_s=None,
            starts_at=None,
            started_at=now,
            stage="starting",
            device=device,
        )
        job.run.write_status(RunStatus.RUNNING, started_at=now, device=device)
        spec = JobSpec(
            job_id=job.id,
            config=job.config.to_dict(),
            run_dir=str(job.run.dir),
            device=device,
            time_limit_s=job.peek("time_limit_s"),
            kind=job.kind,
        )
        self.executor.start(spec, self._on_event)

    @staticmethod
    def _publish(device: str, jobs: int) -> None:
        from .devicelock import publish_load

        with contextlib.suppress(OSError):  # only a courtesy to waiting CLI runs
            publish_load(device, jobs)

    # -- estimates ---------------------------------------------------------------------------
    def _expected_s(self, job: Job) -> float | None:
        """The median length of finished jobs of the same kind and strategy, else of all
        finished jobs; None before anything has finished."""
        same = [s for key, s in self._durations if key == (job.kind, job.config.strategy)]
        pool = same or [s for _, s in self._durations]
        if not pool:
            return None
        return min(statistics.median(pool), self.time_limit_s or float("inf"))

    def _left_s(self, job: Job) -> float | None:
        eta = job.peek("eta_s")
        if eta is None:
            expected = self._expected_s(job)
            started = job.peek("started_at") or time.time()
            eta = None if expected is None else max(expected - (time.time() - started), 0.0)
        return eta

    def _slots_left_s(self, devices: list[str]) -> list[tuple[str, float | None]]:
        """Every place a job can run (``max_per_device`` per device) and when it frees up."""
        slots: list[tuple[str, float | None]] = []
        for device in devices:
            lefts = [self._left_s(j) for j in self._running.values() if j.device_key == device]
            limit = self._limit(device)
            slots += [(device, left) for left in lefts[:limit]]
            slots += [(device, 0.0)] * max(limit - len(lefts), 0)
        return slots

    # -- events from the executor ------------------------------------------------------------
    def _on_event(self, job_id: str, event: dict[str, Any]) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            return
        kind = event["type"]
        if kind == "update":
            fields = dict(event["fields"])
            if job.peek("status") == RunStatus.STOPPING:
                fields.pop("status", None)
            job.update(**fields)
        elif kind == "history":
            job.append_history(event["record"])
        elif kind == "done":
            self._finish(job, event["fields"])

    def _finish(self, job: Job, fields: dict[str, Any]) -> None:
        """The job's one ``done``: whatever goes wrong here, the job ends and the queue moves."""
        try:
            fields = {
                "status": RunStatus.FAILED,
                "stage": "failed",
                "finished_at": time.time(),
            } | fields
            if fields["status"] == RunStatus.FAILED and not fields.get("error"):
                fields["error"] = "The job ended without saying why; start it again."
            job.update(**fields)
            if fields["status"] == RunStatus.FAILED and fields.get("error_type") == "WorkerDied":
                job.run.write_status(
                    RunStatus.FAILED, error=fields.get("error"), finished_at=fields["finished_at"]
                )
        finally:
            try:
                with self._lock:
                    self._running.pop(job.id, None)
                    started = job.peek("started_at")
                    # Time-limited jobs are the long ones: leaving them out would promise short waits.
                    counts = (
                        fields.get("status") == RunStatus.COMPLETED
                        or fields.get("stage") == STOP_STAGES[RunStatus.TIME_LIMIT]
                    )
                    if counts and started:
                        key = (job.kind, job.config.strategy)  # a short LR test says little of training
                        self._durations = [*self._durations[-49:], (key, time.time() - started)]
                    self._dispatch_locked()
                    self._prune_locked()
            finally:
                job.done.set()  # even if starting the next job failed: this one has ended

    def _prune_locked(self) -> None:
        finished = [j for j in self._jobs.values() if j.done.is_set() or j.peek("status") in FINISHED]
        excess = len(finished) - self.max_finished_jobs
        for job in sorted(finished, key=lambda j: j.peek("submitted_at"))[: max(excess, 0)]:
            del self._jobs[job.id]

    # -- reading and stopping ----------------------------------------------------------------
    def _job(self, job_id: str, workspace: str | None = None) -> Job:
        """``workspace=None`` is the instructor's view of every job."""
        job = self._jobs.get(job_id)
        if job is None or (workspace is not None and job.workspace != workspace):
            raise NotFound(f"No job with id '{job_id}' here (it may have ended before a restart).")
        return job

    def snapshot(self, job_id: str, workspace: str | None = None) -> JobStatus:
        return self._job(job_id, workspace).snapshot()

    def stop(self, job_id: str, workspace: str | None = None) -> JobStatus:
        """Ask a job to stop; a queued job stops at once, a running one within one batch."""
        job = self._job(job_id, workspace)
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                now = time.time()
                job.update(
                    status=RunStatus.STOPPED,
                    stage="stopped while queued",
                    queue_position=None,
                    finished_at=now,
                )
                job.run.write_status(RunStatus.STOPPED, finished_at=now)
                job.done.set()
                self._dispatch_locked()
            elif job.update_unless_finished(status=RunStatus.STOPPING):
                self.executor.stop(job.id)
        return job.snapshot()

    def stop_group(self, group: str, workspace: str | None = None) -> int:
        """Stop every job of an experiment at once: its queued jobs leave the queue before any
        running one is signalled, so a run ending meanwhile can't start the next. Returns how
        many jobs were asked to stop."""
        with self._lock:
            jobs = [
                j
                for j in self._queue + list(self._running.values())
                if j.config.group == group and (workspace is None or j.workspace == workspace)
            ]
        queued = [j for j in jobs if j.peek("status") == RunStatus.QUEUED]
        for job in queued + [j for j in jobs if j not in queued]:
            self.stop(job.id, workspace)
        return len(jobs)

    def wait(self, job_id: str, timeout: float | None = None, workspace: str | None = None) -> JobStatus:
        self._job(job_id, workspace).done.wait(timeout)
        return self.snapshot(job_id, workspace)

    def jobs(self, workspace: str | None = None) -> list[JobStatus]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if workspace is None or j.workspace == workspace]
        return [j.snapshot() for j in jobs]

    def queue(self) -> list[JobStatus]:
        """Running jobs, then queued ones in the order they will start (the instructor's view)."""
        with self._lock:
            running = list(self._running.values())
            waiting = list(self._queue)
        snaps = [j.snapshot() for j in running + waiting]
        return sorted(
            snaps,
            key=lambda s: (s.status not in (RunStatus.RUNNING, RunStatus.STOPPING), s.queue_position or 0),
        )

    def job_config(self, job_id: str, workspace: str | None = None) -> TrainConfig:
        return self._job(job_id, workspace).config

    def runs(self, workspace: str = SOLO) -> RunStore:
        return self.workspaces.runs(workspace)

    def shutdown(self) -> None:
        self.executor.shutdown()


def _ray_executor() -> Executor:
    from .ray_executor import RayExecutor

    return RayExecutor()


_EXECUTORS = {"thread": ThreadExecutor, "process": ProcessExecutor, "ray": _ray_executor}


def create_executor(settings: StudioSettings, local: str = "process") -> Executor:
    """``settings.executor``'s executor: ``local`` (``process`` for the app, ``thread`` for
    the CLI), or Ray at ``settings.ray_address``."""
    if settings.executor != "ray":
        return _EXECUTORS[local]()
    from .ray_executor import RayExecutor

    return RayExecutor(
        settings.ray_address, max_data_mb=settings.ray_max_data_mb, cpus_per_job=settings.ray_cpus_per_job
    )


def create_app_manager(settings: StudioSettings) -> JobManager:
    """The app's manager: jobs in worker processes (one per device of ``settings.devices``) or
    on a Ray cluster, the room's limits, the workers started now so that the first students'
    jobs don't wait for torch to import."""
    from .devices import visible_devices

    executor = create_executor(settings)
    manager = JobManager(
        executor=executor,
        devices=None if settings.executor == "ray" else visible_devices(settings.devices),
        max_queued_per_workspace=settings.max_queued_per_workspace,
        time_limit_s=settings.job_time_limit_s,
    )
    for device in manager.devices:
        manager.executor.warm(device, manager._on_event)
    return manager


_MANAGER: JobManager | None = None
_MANAGER_LOCK = threading.Lock()


def get_job_manager() -> JobManager:
    """The process-wide manager for notebooks (in-process threads, solo workspace)."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = JobManager()
        return _MANAGER
