"""``RayExecutor``: the job queue's jobs on a Ray cluster (``--executor ray``).

The app still decides *which* job goes next (its fair queue and quotas); Ray decides *where*:
each job is a Ray actor asking for one GPU (or ``cpus_per_job`` CPUs on a CPU-only cluster).
Nothing is shared but Ray itself:

- the app scans the data and sends the images through Ray's object store (``transfer``); data
  over ``max_data_mb`` must instead be at the same path on every node, which the job checks;
- the actor runs the same ``runner.run_job`` as every other executor, in a scratch folder on
  its node, and streams the runner's events back as a Ray generator, with the run folder's
  changed files after each epoch and at the end;
- so the run folder is written on the app's machine, exactly as with the local executors;
  only ``node`` (and the GPU in ``device``) tell where the job ran.

Ray is optional (``pip install -e ".[cluster]"``): this module imports it only when used.
"""

from __future__ import annotations

import collections
import functools
import logging
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

from .config import TrainConfig
from .errors import ClusterError
from .executors import OnEvent
from .runner import JobSpec, Reporter, Stopped, failure, finish, run_job, scan
from .runs import Run
from .transfer import (
    FolderChanges,
    cached_data,
    data_fingerprint,
    pack_dataset,
    read_files,
    unpack_data,
    write_files,
)

_log = logging.getLogger(__name__)

POOL = "ray"
"""The manager's one device name for the whole cluster; its capacity is the cluster's."""
DEFAULT_MAX_DATA_MB = 1024.0
DEFAULT_CPUS_PER_JOB = 2
CONNECT_TIMEOUT_S = 5.0
WAITING = "waiting for a Ray worker"
IDLE_S = 60.0
"""A finished job's worker waits this long for the next job, then gives its GPU back to Ray."""


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
    """Join the cluster at ``address`` (``host:port``, ``ray://host:port`` or ``auto``), or
    start a local one when None; True when this call started Ray. An unreachable address fails
    in seconds with one line, never a hang."""
    try:
        import ray
    except ImportError:
        raise ClusterError(
            "The Ray executor needs Ray: pip install -e '.[cluster]' on this machine and on every "
            "worker node."
        ) from None
    if ray.is_initialized():
        return False
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
        ray.init(address=address or None, **options)
    except Exception as exc:
        raise ClusterError(
            f"can't reach Ray at {address or 'a new local cluster'}: {_first_line(exc)}"
        ) from None
    return True


def check_cluster(address: str) -> None:
    """Fail now, with one line, if the cluster at ``address`` can't be joined (the CLI checks
    before it starts the app, which would otherwise fail on its first page)."""
    import ray

    if connect(address):
        ray.shutdown()


# -- on the node ------------------------------------------------------------------------------------
class JobActor:
    """A worker on whichever node Ray picked: ``run`` streams one job's events, ``stop``
    (served on a second thread) asks it to stop within a batch. The executor hands a finished
    actor the next job with the same resources, so torch is imported once per worker, not
    once per job."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def ping(self) -> bool:
        return True

    def stop(self) -> None:
        self._stop.set()

    def run(
        self,
        spec: dict[str, Any],
        dataset: dict[str, Any],
        shipped: tuple[str, list[Any]] | None,
        seed: dict[str, bytes],
    ) -> Iterator[dict[str, Any]]:
        import ray

        self._stop = threading.Event()  # this job's
        node_id = ray.get_runtime_context().get_node_id()
        gpus = [str(g) for g in ray.get_gpu_ids()]
        device = f"cuda:{gpus[0]}" if gpus else "cpu"
        work = Path(tempfile.mkdtemp(prefix="tl-studio-job-"))
        run = Run(work / Path(spec["run_dir"]).name)  # the same name: messages cite the run id
        try:
            write_files(run.dir, seed)
            node = socket.gethostname()
            run.write_status("running", node=node, node_id=node_id, device=device)
            yield {"type": "update", "fields": {"node": f"{node} ({node_id[:8]})", "device": device}}
            events: queue.Queue[dict[str, Any]] = queue.Queue()

            def work_() -> None:
                try:
                    data_root = self._receive(shipped, events.put)
                except Exception as exc:  # a full disk on the node: this job fails, readably
                    finish(run, *failure(exc, run), events.put)
                    return
                local = spec | {
                    "run_dir": str(run.dir),
                    "device": device,
                    "dataset": dataset,
                    "data_root": data_root,
                    "lock_device": bool(gpus),  # Ray shares out the CPUs; a GPU may have CLI users too
                }
                run_job(JobSpec(**local), events.put, self._stop)

            threading.Thread(target=work_, name="tl-ray-job", daemon=True).start()
            changes = FolderChanges(run.dir)
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
    def _receive(shipped: tuple[str, list[Any]] | None, emit: Any) -> str | None:
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
        return str(folder)


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
    placed: bool = False
    """The actor reported from its node: a Stop now saves what was trained."""
    killed: bool = False
    """Stopped while still waiting for a node: its actor was killed, nothing was trained."""
    node: str = ""
    epochs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RayExecutor:
    """Runs jobs as Ray actors; see the module's docstring.

    Args:
        address: the cluster (``host:port``, ``ray://host:port``, ``auto``); None starts a
            local Ray, to try it on one machine.
        max_data_mb: data up to this size travels through Ray's object store; larger data
            must be at the same path on every node.
        cpus_per_job: what a job asks for on a cluster without GPUs.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        max_data_mb: float = DEFAULT_MAX_DATA_MB,
        cpus_per_job: int = DEFAULT_CPUS_PER_JOB,
    ):
        self.address = address
        self.max_data_bytes = max_data_mb * 1e6
        self.cpus_per_job = max(1, int(cpus_per_job))
        self._started_here = connect(address)
        import ray

        self._actor_class = ray.remote(JobActor)
        self._jobs: dict[str, _Job] = {}
        self._packs: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._nodes: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._idle: list[tuple[Any, str, float]] = []
        """Workers whose job ended: (actor, what it holds, since when)."""
        self._closed = False
        threading.Thread(target=self._reap_idle, name="tl-ray-idle", daemon=True).start()

    # -- the cluster --------------------------------------------------------------------------
    def _alive_nodes(self, max_age_s: float = 5.0) -> list[dict[str, Any]]:
        """``ray.nodes()`` of live nodes, looked up at most every ``max_age_s``."""
        import ray

        stamp, nodes = self._nodes
        if time.monotonic() - stamp > max_age_s:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            self._nodes = (time.monotonic(), nodes)
        return nodes

    def _slots(self, node: dict[str, Any], gpu: bool) -> int:
        res = node.get("Resources", {})
        return int(res.get("GPU", 0)) if gpu else int(res.get("CPU", 0) // self.cpus_per_job)

    def _has_gpus(self) -> bool:
        return any(n.get("Resources", {}).get("GPU", 0) >= 1 for n in self._alive_nodes())

    def devices(self) -> list[str]:
        return [POOL]

    def capacity(self, device: str) -> int:
        """How many jobs the cluster runs at once: one per GPU, else per ``cpus_per_job``
        CPUs of a node. Nodes that join later count from the next look-up on."""
        gpu = self._has_gpus()
        return max(1, sum(self._slots(n, gpu) for n in self._alive_nodes()))

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
        biggest = max((n.get("Resources", {}).get("CPU", 0) for n in self._alive_nodes()), default=0)
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

    # -- the Executor interface ---------------------------------------------------------------
    def start(self, spec: JobSpec, on_event: OnEvent) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor was shut down")
            job = self._jobs[spec.job_id] = _Job(spec, on_event)
        threading.Thread(
            target=self._drive, args=(job,), name=f"tl-ray-{spec.job_id[:8]}", daemon=True
        ).start()

    def _drive(self, job: _Job) -> None:
        """The app's side of one job, from the scan to the ``done`` event."""
        import ray
        from ray.exceptions import RayError

        spec, run = job.spec, Run(job.spec.run_dir)
        emit = functools.partial(job.on_event, spec.job_id)
        reporter = Reporter(emit, job.stop)
        options: dict[str, Any] = {}
        reusable = False
        try:
            try:
                cfg = TrainConfig.from_dict(spec.config)
                dataset = scan(cfg, reporter)
                options = self._options(cfg)
                shipped = self._ship(dataset, reporter)
                reporter.update(stage=WAITING)
                with job.lock:
                    if job.stop.is_set():
                        raise Stopped
                    job.actor = self._take_actor(options)
                stream = job.actor.run.remote(spec.to_dict(), dataset.to_dict(), shipped, read_files(run.dir))
                for ref in stream:
                    if not self._receive(job, run, ray.get(ref)):
                        reusable = True  # the job ended its own way: its worker is fine
                        return
                raise RuntimeError("the job's stream ended without a done event")
            except RayError as exc:
                reusable = False
                if job.killed:
                    finish(run, "stopped", {}, {"status": "stopped", "stage": "stopped while waiting"}, emit)
                else:
                    self._fail_lost(job, run, exc, emit)
            except Exception as exc:
                finish(run, *failure(exc, run), emit)
        finally:
            with self._lock:
                self._jobs.pop(spec.job_id, None)
            if job.actor is not None:
                self._give_back(job.actor, options, reusable)

    def _take_actor(self, options: dict[str, Any]) -> Any:
        """An idle worker holding what ``options`` asks for, else a new one (idle workers that
        hold something else are let go first, so Ray can place it)."""
        import ray
        from ray.exceptions import RayError

        key = repr(sorted(options.items()))
        while True:
            with self._lock:
                same = [e for e in self._idle if e[1] == key]
                pick = same[-1][0] if same else None  # the most recently used: still warm
                others, self._idle = (
                    ([], [e for e in self._idle if e[0] is not pick]) if same else (self._idle, [])
                )
            for actor, _, _ in others:
                ray.kill(actor)
            if pick is None:
                return self._actor_class.options(**options).remote()
            try:  # a worker whose node was lost meanwhile is not given a job
                ray.get(pick.ping.remote(), timeout=10)
                return pick
            except RayError:
                ray.kill(pick)

    def _give_back(self, actor: Any, options: dict[str, Any], reusable: bool) -> None:
        import ray

        with self._lock:
            if reusable and not self._closed:
                self._idle.append((actor, repr(sorted(options.items())), time.monotonic()))
                return
        ray.kill(actor)  # its resources go back now, not when Ray notices

    def _reap_idle(self) -> None:
        """Let idle workers go after ``IDLE_S``: a shared cluster gets its GPUs back."""
        import ray

        while not self._closed:
            time.sleep(max(0.1, min(IDLE_S / 4, 5.0)))
            now = time.monotonic()
            with self._lock:
                old = [e for e in self._idle if now - e[2] > IDLE_S]
                self._idle = [e for e in self._idle if e not in old]
            for actor, _, _ in old:
                ray.kill(actor)

    def _receive(self, job: _Job, run: Run, event: dict[str, Any]) -> bool:
        """Handle one event from the node; False after the job's ``done``."""
        kind = event["type"]
        if kind == "files":
            write_files(run.dir, event["files"])
            return True
        if kind == "update" and "node" in event["fields"]:
            job.placed, job.node = True, event["fields"]["node"]
            run.write_status("running", node=job.node, device=event["fields"].get("device", ""))
        elif kind == "history":
            job.epochs += 1
            run.write_status("running", epochs_run=job.epochs, epoch=event["record"].get("epoch"))
        job.on_event(job.spec.job_id, event)
        return kind != "done"

    @staticmethod
    def _fail_lost(job: _Job, run: Run, exc: BaseException, emit: Any) -> None:
        """The actor or its node died: this job fails with the reason, the queue goes on."""
        reason = next((line.strip() for line in str(exc).splitlines() if "because" in line), "")
        reason = reason.split(". ")[0].rstrip(".")  # Ray's first sentence: "...because its node has died"
        where = f"on {job.node}" if job.node else "before it reached a node"
        error = (
            f"The Ray worker running this job {where} died ({reason or type(exc).__name__}). Your "
            "other runs and the app are fine; start the job again."
        )
        fields = {"error": error}
        final = {"status": "failed", "stage": "failed", "error": error, "error_type": "WorkerDied"}
        finish(run, "failed", fields, final | {"user_error": True}, emit)

    def stop(self, job_id: str) -> None:
        import ray

        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return
        with job.lock:
            job.stop.set()  # while scanning: the scan's progress hook sees it
            actor, placed = job.actor, job.placed
        if actor is None:
            return
        if placed:
            actor.stop.remote()  # within one batch, keeping the best weights
        else:
            job.killed = True
            ray.kill(actor)  # still waiting for a node: nothing to save

    def warm(self, device: str, on_event: OnEvent) -> None:
        """Nothing to start: Ray starts a worker per job."""

    def describe(self) -> list[dict[str, Any]]:
        """One row per live node, with the jobs the app has there."""
        with self._lock:
            jobs = list(self._jobs.values())
        rows = []
        for n in self._alive_nodes(max_age_s=0.0):
            res = n.get("Resources", {})
            label = f"{n.get('NodeManagerHostname') or n.get('NodeManagerAddress')} ({n['NodeID'][:8]})"
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
            idle, self._idle = self._idle, []
        for job in jobs:
            self.stop(job.spec.job_id)
        for actor, _, _ in idle:
            ray.kill(actor)
        if self._started_here:
            ray.shutdown()
