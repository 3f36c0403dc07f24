"""``RayExecutor``: the job queue's jobs on a Ray cluster (``--executor ray``).

The app still decides *which* job goes next (its fair queue and quotas); Ray decides *where*:
each job runs on a Ray actor that asks for one GPU (or ``cpus_per_job`` CPUs on a cluster
without GPUs). Nothing is shared but Ray itself:

- the app scans the data and sends the images through Ray's object store (``transfer``); data
  over ``max_data_mb`` must instead be at the same path on every node, which the job checks;
- the actor runs the same ``runner.run_job`` as every other executor, in a scratch folder on
  its node, and streams the runner's events back as a Ray generator, with the run folder's
  changed files after each epoch and at the end;
- so the run folder is written on the app's machine, exactly as with the local executors;
  only ``node`` (and the GPU in ``device``) tell where the job ran.

A finished job's actor takes the next job that asks for the same resources, so torch is
imported once per worker; one idle for ``IDLE_S`` is let go. Ray is optional (``pip install
-e ".[cluster]"``): this module imports it only when used.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib.util
import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .config import TrainConfig
from .errors import ClusterError
from .executors import OnEvent
from .runner import JobSpec, Reporter, Stopped, failure, finish, run_job, scan
from .runs import Run, RunStatus, pid_alive
from .transfer import (
    FolderChanges,
    cached_data,
    data_fingerprint,
    pack_dataset,
    prune_data_cache,
    read_files,
    unpack_data,
    write_files,
)

POOL = "ray"
"""The manager's one device name for the whole cluster; its capacity is the cluster's."""
DEFAULT_MAX_DATA_MB = 1024.0
DEFAULT_CPUS_PER_JOB = 2
CONNECT_TIMEOUT_S = 5.0
WAITING = "waiting for a Ray worker"
IDLE_S = 60.0
"""A finished job's worker waits this long for the next job, then gives its GPU back to Ray."""
NODES_EVERY_S = 5.0
"""How often the cluster's nodes are looked up (capacity, the instructor's view)."""
SCRATCH_PREFIX = "tl-studio-job-"
SHUTDOWN_WAIT_S = 30.0
"""How long ``shutdown`` lets stopped jobs send their end before it disconnects."""


def require_ray() -> None:
    """Ray is an extra: say how to get it, in one line."""
    if importlib.util.find_spec("ray") is None:
        raise ClusterError(
            "The Ray executor needs Ray: pip install -e '.[cluster]' on this machine and on every "
            "worker node."
        )


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host:  # no port given
        return hostport, 10001 if address.startswith("ray://") else 6379
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ClusterError(f"can't reach Ray at {address}: {port!r} is not a port number") from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def connect(address: str | None = None) -> bool:
    """Join the cluster at ``address`` (``host:port``, ``ray://host:port`` or ``auto``; None:
    ``RAY_ADDRESS``, else start a local Ray); True when this call connected. An unreachable
    address fails in seconds with one line, never a hang."""
    require_ray()
    import ray

    if ray.is_initialized():  # a notebook that called ray.init() itself
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address not in ("auto", "local"):
        host, port = _host_port(address)
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise ClusterError(f"can't reach Ray at {address}: {exc.strerror or exc}") from None
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if not address:  # a new local cluster: no dashboard to serve
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except Exception as exc:
        where = address or "a new local cluster"
        raise ClusterError(f"can't reach Ray at {where}: {_first_line(exc)}") from None
    return True


def check_cluster(address: str | None) -> None:
    """Fail now, with one line, if Ray is missing or the cluster at ``address`` can't be
    joined: the CLI checks before it starts the app, which would otherwise fail on its first
    page."""
    require_ray()
    if address and connect(address):
        import ray

        ray.shutdown()


def node_label(host: str, node_id: str) -> str:
    """How a node is named in the queue and in the run: two nodes may share a host name."""
    return f"{host} ({node_id[:8]})"


# -- on the node ------------------------------------------------------------------------------------
class JobActor:
    """A worker on whichever node Ray picked: ``run`` streams one job's events, ``stop``
    (served on a second thread) asks that job to stop within a batch."""

    def __init__(self) -> None:
        self._job: str | None = None
        self._stop = threading.Event()
        _sweep_scratch()

    def ping(self) -> bool:
        return True

    def stop(self, job_id: str) -> None:
        """Only the job it was meant for: a late Stop never reaches this worker's next job."""
        if job_id == self._job:
            self._stop.set()

    def run(
        self,
        spec: dict[str, Any],
        dataset: dict[str, Any],
        shipped: tuple[str, list[Any]] | None,
        seed: dict[str, bytes],
        app_version: str,
    ) -> Iterator[dict[str, Any]]:
        import ray

        self._job, self._stop = spec["job_id"], threading.Event()
        node_id = ray.get_runtime_context().get_node_id()
        gpus = [str(g) for g in ray.get_gpu_ids()]
        device = f"cuda:{gpus[0]}" if gpus else "cpu"
        node = node_label(socket.gethostname(), node_id)
        work = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        run = Run(work / Path(spec["run_dir"]).name)  # the same name: messages cite the run id
        try:
            write_files(run.dir, seed)
            run.write_status(RunStatus.RUNNING, node=node, node_id=node_id, device=device)
            changes = FolderChanges(run.dir)
            changes.take()  # the app has these already
            yield {"type": "update", "fields": {"node": node, "device": device}}
            events: queue.Queue[dict[str, Any]] = queue.Queue()

            def job_thread() -> None:
                """Everything that can fail ends in the job's ``done`` event, never in silence."""
                try:
                    if app_version != __version__:
                        raise ClusterError(
                            f"Node {node} has tl-studio {__version__} and the app {app_version}: "
                            "install the same version on every node (pip install -e '.[cluster]')."
                        )
                    data_root = self._fetch_data(shipped, events.put)
                    local = spec | {
                        "run_dir": str(run.dir),
                        "device": device,
                        "dataset": dataset,
                        "data_root": data_root,
                        "lock_device": bool(gpus),  # Ray shares out the CPUs; a GPU may have CLI users
                    }
                    job = JobSpec(**local)
                except Exception as exc:
                    finish(run, *failure(exc, run), events.put)
                    return
                run_job(job, events.put, self._stop)

            threading.Thread(target=job_thread, name="tl-ray-job", daemon=True).start()
            while True:
                event = events.get()
                if event["type"] == "done":
                    yield {"type": "files", "files": changes.take(final=True)}
                    yield event
                    return
                yield event
                if event["type"] == "history" and (files := changes.take()):
                    yield {"type": "files", "files": files}
        finally:
            shutil.rmtree(work, ignore_errors=True)
            _release_memory()

    @staticmethod
    def _fetch_data(shipped: tuple[str, list[Any]] | None, emit: Any) -> str | None:
        """The node's copy of the data (from its cache, else from the object store); None when
        the data wasn't sent and must be at the app's paths."""
        if shipped is None:
            return None
        import ray

        key, refs = shipped
        folder = cached_data(key)
        if folder is None:
            emit({"type": "update", "fields": {"stage": "receiving the data"}})
            folder = unpack_data(ray.get(refs[0]))
            prune_data_cache(keep=folder)
        return str(folder)


def _sweep_scratch() -> None:
    """Scratch folders of workers that died mid-job (their pid is in the name)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _release_memory() -> None:
    """Between jobs, hand cached GPU blocks back, so the next job gets the whole card."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- on the app's machine ---------------------------------------------------------------------------
@dataclass
class _Job:
    spec: JobSpec
    on_event: OnEvent
    stop: threading.Event = field(default_factory=threading.Event)
    actor: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    placed: bool = False
    """The actor reported from its node: a Stop now saves what was trained."""
    killed: bool = False
    """Stopped while still waiting for a node: its actor was killed, nothing was trained."""
    pending: bool = False
    """Its new worker waits for Ray to find room: idle workers must make way."""
    done_sent: bool = False
    node: str = ""
    epochs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Guards ``actor``, ``placed`` and ``killed`` between ``stop`` and the job's thread."""


class RayExecutor:
    """Runs jobs on Ray actors; see the module's docstring.

    Args:
        address: the cluster (``host:port``, ``ray://host:port``, ``auto``); None starts a
            local Ray (or joins ``RAY_ADDRESS``), to try it on one machine.
        max_data_mb: data up to this size travels through Ray's object store; larger data
            must be at the same path on every node (0: never send).
        cpus_per_job: what a job asks for on a cluster without GPUs.
    """

    is_cluster = True
    """Ray picks node and GPU; the manager asks ``capacity`` how many jobs fit."""

    def __init__(
        self,
        address: str | None = None,
        *,
        max_data_mb: float = DEFAULT_MAX_DATA_MB,
        cpus_per_job: int = DEFAULT_CPUS_PER_JOB,
    ):
        self.max_data_bytes = max_data_mb * 1e6
        self.cpus_per_job = max(1, int(cpus_per_job))
        self._connected_here = connect(address)
        import ray

        self._actor_class = ray.remote(JobActor)
        self._jobs: dict[str, _Job] = {}
        self._packs: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._nodes: list[dict[str, Any]] = []
        self._refresh_nodes()
        self._idle: list[tuple[Any, str, float]] = []
        """Workers whose job ended: (actor, what it holds, since when)."""
        self._closed = False
        self._wake = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name="tl-ray-housekeeping", daemon=True
        )
        self._housekeeper.start()

    # -- the cluster --------------------------------------------------------------------------
    def _refresh_nodes(self) -> None:
        """Look the live nodes up; on a failed look-up the last answer stands."""
        import ray

        with contextlib.suppress(Exception):  # the head busy or restarting: the queue goes on
            self._nodes = [n for n in ray.nodes() if n.get("Alive")]

    def _has_gpus(self) -> bool:
        return any(n.get("Resources", {}).get("GPU", 0) >= 1 for n in self._nodes)

    def _slots(self, node: dict[str, Any], gpu: bool) -> int:
        res = node.get("Resources", {})
        cpus = int(res.get("CPU", 0))
        return min(int(res.get("GPU", 0)), cpus) if gpu else cpus // self.cpus_per_job

    def devices(self) -> list[str]:
        return [POOL]

    def capacity(self, device: str) -> int:
        """How many jobs the cluster runs at once: one per GPU (each with a CPU beside it),
        else one per ``cpus_per_job`` CPUs of a node. Nodes that join count from the next
        look-up on. What other Ray users hold is not subtracted: their jobs wait in Ray."""
        gpu = self._has_gpus()
        return max(1, sum(self._slots(n, gpu) for n in self._nodes))

    def _options(self, cfg: TrainConfig) -> dict[str, Any]:
        """What the job's actor asks Ray for; fails now if no node could ever give it."""
        gpu = cfg.device != "cpu" and self._has_gpus()
        if cfg.device.startswith("cuda") and not gpu:
            raise ClusterError(
                "This job asks for a GPU and no node of the Ray cluster has one: use device auto or cpu."
            )
        common = {"max_concurrency": 2, "max_restarts": 0}  # run, and stop beside it
        if gpu:
            return common | {"num_gpus": 1, "num_cpus": 1}
        biggest = max((n.get("Resources", {}).get("CPU", 0) for n in self._nodes), default=0)
        if biggest < self.cpus_per_job:
            raise ClusterError(
                f"Each job asks for {self.cpus_per_job} CPUs (TL_STUDIO_RAY_CPUS) and the largest "
                f"node of the Ray cluster has {biggest:g}: ask for fewer, or add a bigger node."
            )
        return common | {"num_cpus": self.cpus_per_job, "num_gpus": 0}

    def _ship(self, dataset: Any, reporter: Reporter) -> tuple[str, list[Any]] | None:
        """Put the dataset's images in the object store (once per data version); None when it is
        too large and must be on a shared path."""
        import ray

        if dataset.profile.modality == "text":
            return None  # the texts travel inside the scan itself
        key, nbytes = data_fingerprint(dataset)
        if nbytes > self.max_data_bytes:
            return None
        with self._lock:
            ref = self._packs.get(key)
            if ref is not None:
                self._packs.move_to_end(key)
        if ref is None:
            reporter.update(stage=f"sending the data to the cluster ({nbytes / 1e6:.1f} MB)")
            ref = ray.put(pack_dataset(dataset, key))
            with self._lock:
                self._packs[key] = ref
                while len(self._packs) > 2:  # the object store is memory: keep the recent ones
                    self._packs.popitem(last=False)
        return key, [ref]  # in a list, so Ray hands the node the reference, not the bytes

    # -- workers ------------------------------------------------------------------------------
    def _take_actor(self, options: dict[str, Any]) -> Any:
        """An idle worker holding what ``options`` asks for, else None (idle workers that hold
        something else are let go, so Ray can place a new one)."""
        import ray
        from ray.exceptions import RayError

        key = _holding(options)
        while True:
            with self._lock:
                same = [e for e in self._idle if e[1] == key]
                if same:
                    pick, others = same[-1][0], []  # the most recently used: still warm
                    self._idle = [e for e in self._idle if e[0] is not pick]
                else:
                    pick, others, self._idle = None, self._idle, []
            for actor, _, _ in others:
                ray.kill(actor)
            if pick is None:
                return None
            try:  # a worker whose node was lost meanwhile is not given a job
                ray.get(pick.ping.remote(), timeout=10)
                return pick
            except RayError:
                ray.kill(pick)

    def _give_back(self, actor: Any, options: dict[str, Any], reusable: bool) -> None:
        import ray

        with self._lock:
            waiting = any(j.pending for j in self._jobs.values())
            if reusable and not self._closed and not waiting:
                self._idle.append((actor, _holding(options), time.monotonic()))
                return
        ray.kill(actor)  # its resources go back now (to a job waiting for room, say)

    def _housekeeping(self) -> None:
        """Every few seconds: look the nodes up, and let idle workers go after ``IDLE_S`` (a
        shared cluster gets its GPUs back)."""
        import ray

        while not self._wake.wait(max(0.1, min(IDLE_S / 4, NODES_EVERY_S))):
            self._refresh_nodes()
            now = time.monotonic()
            with self._lock:
                old = [e for e in self._idle if now - e[2] > IDLE_S]
                self._idle = [e for e in self._idle if e not in old]
            for actor, _, _ in old:
                ray.kill(actor)

    # -- the Executor interface ---------------------------------------------------------------
    def start(self, spec: JobSpec, on_event: OnEvent) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor was shut down")
            job = self._jobs[spec.job_id] = _Job(spec, on_event)
            thread = self._threads[spec.job_id] = threading.Thread(
                target=self._drive, args=(job,), name=f"tl-ray-{spec.job_id[:8]}", daemon=True
            )
        thread.start()

    def _drive(self, job: _Job) -> None:
        """The app's side of one job, from the scan to its one ``done`` event."""
        import ray
        from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, RayError, RayTaskError

        spec, run = job.spec, Run(job.spec.run_dir)
        emit = functools.partial(self._emit, job)
        ran = False
        try:
            reporter = Reporter(emit, job.stop)
            cfg = TrainConfig.from_dict(spec.config)
            dataset = scan(cfg, reporter)
            job.options = self._options(cfg)
            shipped = self._ship(dataset, reporter)
            reporter.update(stage=WAITING)
            actor = self._take_actor(job.options)
            if actor is None:
                job.pending = True  # until it reports from a node
                actor = self._actor_class.options(**job.options).remote()
            with job.lock:
                job.actor = actor
                stopped = job.stop.is_set()
            if stopped:
                raise Stopped
            args = (spec.to_dict(), dataset.to_dict(), shipped, read_files(run.dir), __version__)
            ran = True
            for ref in actor.run.remote(*args):
                if not self._receive(job, run, ray.get(ref)):
                    return  # the job's own done event was delivered
            raise RuntimeError("the job's stream ended without a done event")
        except Exception as exc:
            if job.done_sent:  # a failure after the end (delivering it): the job stands as it ended
                logging.getLogger(__name__).exception("after job %s ended", spec.job_id)
            elif job.killed and isinstance(exc, RayError):
                finish(
                    run,
                    RunStatus.STOPPED,
                    {},
                    {"status": RunStatus.STOPPED, "stage": "stopped while waiting"},
                    emit,
                )
            elif isinstance(exc, (RayActorError, NodeDiedError, ObjectLostError)):
                self._fail_lost(job, run, exc, emit)
            else:  # the job's own error, raised on the node, or one here
                cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause else exc
                finish(run, *failure(cause, run), emit)
        finally:
            with self._lock:
                self._jobs.pop(spec.job_id, None)
                self._threads.pop(spec.job_id, None)
            with job.lock:
                actor, job.actor = job.actor, None
            if actor is not None:  # not given back at the job's end: it died, or never ran it
                self._give_back(actor, job.options, reusable=not ran and not job.killed)

    def _emit(self, job: _Job, event: dict[str, Any]) -> None:
        """Deliver one event to the manager; a job's ``done`` goes out once."""
        if event["type"] == "done":
            if job.done_sent:
                return
            job.done_sent = True
        job.on_event(job.spec.job_id, event)

    def _receive(self, job: _Job, run: Run, event: dict[str, Any]) -> bool:
        """Handle one event from the node; False after the job's ``done``."""
        kind = event["type"]
        if kind == "files":
            write_files(run.dir, event["files"])
            return True
        if kind == "update" and "node" in event["fields"]:
            with job.lock:
                job.placed, job.pending, job.node = True, False, event["fields"]["node"]
            run.write_status(RunStatus.RUNNING, node=job.node, device=event["fields"].get("device", ""))
        elif kind == "history":
            job.epochs += 1
            run.write_status(RunStatus.RUNNING, epochs_run=job.epochs, epoch=event["record"].get("epoch"))
        elif kind == "done":
            with job.lock:  # free for the next job before the manager dispatches it
                actor, job.actor = job.actor, None
            self._give_back(actor, job.options, reusable=True)
        self._emit(job, event)
        return kind != "done"

    def _fail_lost(self, job: _Job, run: Run, exc: BaseException, emit: Any) -> None:
        """The actor or its node died: this job fails with the reason, the queue goes on."""
        reason = next((line.strip() for line in str(exc).splitlines() if "because" in line), "")
        reason = reason.split(". ")[0].rstrip(".")  # Ray's first sentence: "...because its node has died"
        where = f"on {job.node}" if job.node else "before it reached a node"
        error = (
            f"The Ray worker running this job {where} died ({reason or type(exc).__name__}). Your "
            "other runs and the app are fine; start the job again."
        )
        final = {
            "status": RunStatus.FAILED,
            "stage": "failed",
            "error": error,
            "error_type": "WorkerDied",
        }
        finish(run, RunStatus.FAILED, {"error": error}, final | {"user_error": True}, emit)

    def stop(self, job_id: str) -> None:
        import ray

        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return
        with job.lock:
            job.stop.set()  # while scanning: the scan's progress hook sees it
            actor, placed = job.actor, job.placed
            job.killed = actor is not None and not placed
        if actor is None:
            return
        if placed:
            actor.stop.remote(job_id)  # within one batch, keeping the best weights
        else:
            ray.kill(actor)  # still waiting for a node: nothing to save

    def warm(self, device: str, on_event: OnEvent) -> None:
        """Nothing to start: workers start with the first jobs and then stay warm."""

    def describe(self) -> list[dict[str, Any]]:
        """One row per live node, with the jobs the app has there."""
        with self._lock:
            jobs = list(self._jobs.values())
        rows = []
        for n in self._nodes:
            res = n.get("Resources", {})
            label = node_label(n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?"), n["NodeID"])
            running = sum(1 for j in jobs if j.node == label)
            rows.append(
                {
                    "device": f"Ray node {label}",
                    "pid": None,
                    "state": f"{running} job(s); {res.get('GPU', 0):g} GPU, {res.get('CPU', 0):g} CPU",
                }
            )
        return rows

    def shutdown(self) -> None:
        import ray

        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
            threads = list(self._threads.values())
            idle, self._idle = self._idle, []
        self._wake.set()
        for job in jobs:
            self.stop(job.spec.job_id)  # running ones keep what they trained
        for actor, _, _ in idle:
            ray.kill(actor)
        # Every thread that talks to Ray ends first: a call into a shut-down Ray kills the process.
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for job in jobs:
            if job.actor is not None:  # stuck past the wait: its stream ends now
                ray.kill(job.actor)
        for thread in [*threads, self._housekeeper]:
            thread.join(5.0)
        if self._connected_here:
            ray.shutdown()


def _holding(options: dict[str, Any]) -> str:
    """What a worker holds, as a key: a worker is reused only for a job asking the same."""
    return repr(sorted(options.items()))
