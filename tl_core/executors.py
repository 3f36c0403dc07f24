"""Where jobs run: the ``Executor`` interface and its two local implementations.

- ``ThreadExecutor``: a thread of this process. The CLI and notebooks use it: nothing to
  start, nothing slower than before.
- ``ProcessExecutor``: one long-lived worker process per device, which imports torch once and
  runs jobs one after another. The app uses it, so a segfault or an out-of-memory kill takes
  down one job, never the server and every student's session with it.

Both speak the runner's JSON events (``tl_core.runner``); an executor on other machines (Ray)
only has to deliver the same events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .paths import studio_home
from .runner import JobSpec, run_job
from .wire import LineSocket

_log = logging.getLogger(__name__)

OnEvent = Callable[[str, dict[str, Any]], None]
"""``on_event(job_id, event)``; called from the executor's own threads."""


class Executor(Protocol):
    def start(self, spec: JobSpec, on_event: OnEvent) -> None:
        """Begin ``spec`` now; report through ``on_event``, ending with one ``done`` event."""

    def stop(self, job_id: str) -> None:
        """Ask a started job to stop within one batch."""

    def warm(self, device: str, on_event: OnEvent) -> None:
        """Get ready for ``device`` ahead of the first job (may do nothing)."""

    def describe(self) -> list[dict[str, Any]]:
        """One row per worker (device, pid, state) for the instructor's view."""

    def shutdown(self) -> None: ...


class ThreadExecutor:
    def __init__(self) -> None:
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, spec: JobSpec, on_event: OnEvent) -> None:
        stop = threading.Event()
        with self._lock:
            self._stops[spec.job_id] = stop

        def emit(event: dict[str, Any]) -> None:
            if event["type"] == "done":
                with self._lock:
                    self._stops.pop(spec.job_id, None)
            on_event(spec.job_id, event)

        threading.Thread(
            target=run_job, args=(spec, emit, stop), name=f"tl-job-{spec.job_id[:8]}", daemon=True
        ).start()

    def warm(self, device: str, on_event: OnEvent) -> None:
        """Nothing to start: this process already has torch."""

    def stop(self, job_id: str) -> None:
        with self._lock:
            stop = self._stops.get(job_id)
        if stop is not None:
            stop.set()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            n = len(self._stops)
        return [{"device": "in-process", "pid": os.getpid(), "state": f"{n} job(s) running"}]

    def shutdown(self) -> None:
        with self._lock:
            for stop in self._stops.values():
                stop.set()


def death_message(returncode: int | None) -> str:
    """What a student reads when the process training their model dies."""
    if returncode is not None and returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown"
        text = f"The training process died: signal {sig} ({name})."
        if sig == signal.SIGKILL:
            text += " This usually means the machine ran out of memory: try a smaller batch size or backbone."
        elif sig == signal.SIGSEGV:
            text += " That is a crash inside a library, not your data: try again, or another backbone."
        return text + " Your other runs and the app are fine; start the job again."
    return f"The training process ended unexpectedly (exit code {returncode}). Start the job again."


def worker_env(device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of ``device``'s worker: a GPU worker sees only its own card
    (``CUDA_VISIBLE_DEVICES``), so training code keeps saying ``cuda`` and can't touch the
    other students' GPUs."""
    env = dict(os.environ if base is None else base)
    if device.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = device.removeprefix("cuda:")
    return env


class _Worker:
    """One worker process and the socket to it; restarted by ``ProcessExecutor`` after a death."""

    def __init__(self, device: str, on_event: OnEvent, on_death: Callable[[_Worker], None]):
        self.device = device
        self.on_event = on_event
        self.on_death = on_death
        self.jobs: set[str] = set()
        self.pid: int | None = None
        self.alive = True
        self.started = time.time()
        self.ready = threading.Event()
        self.lock = threading.Lock()
        """Guards ``alive`` and ``jobs`` between ``start`` and the reader."""
        parent, child = socket.socketpair()
        log = studio_home() / "logs" / f"worker-{device.replace(':', '-')}.log"
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "tl_core.worker", str(child.fileno())],
                    pass_fds=[child.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=Path(__file__).resolve().parent.parent,
                    env=worker_env(device),
                )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.pid = self.proc.pid
        self.wire = LineSocket(parent)
        self._reader = threading.Thread(target=self._read, name=f"tl-worker-{device}", daemon=True)
        self._reader.start()

    def send(self, message: dict[str, Any]) -> None:
        self.wire.send(message)

    def _deliver(self, job_id: str, event: dict[str, Any]) -> None:
        """A failure in the receiver is a bug there, not a dead worker: log it, keep reading."""
        try:
            self.on_event(job_id, event)
        except Exception:
            _log.exception("handling %s for job %s failed", event.get("type"), job_id)

    def _read(self) -> None:
        try:
            for message in self.wire.messages():
                if message.get("type") == "ready":
                    self.ready.set()
                    continue
                job_id, event = message["job_id"], message["event"]
                if event["type"] == "done":
                    with self.lock:
                        self.jobs.discard(job_id)
                self._deliver(job_id, event)
        except (OSError, ValueError):
            pass  # the socket closed or broke: the worker is gone
        with self.lock:  # from here on ``start`` sends nothing to this worker
            self.alive = False
            orphans = list(self.jobs)
            self.jobs.clear()
        with contextlib.suppress(OSError):
            self.wire.close()
        code = self.proc.wait()
        for job_id in orphans:  # died mid-job: that job fails, nothing else does
            fields = {
                "status": "failed",
                "stage": "failed",
                "error": death_message(code),
                "error_type": "WorkerDied",
                "user_error": True,
                "finished_at": time.time(),
            }
            self._deliver(job_id, {"type": "done", "fields": fields})
        self.on_death(self)

    def take(self, job_id: str) -> bool:
        """Claim ``job_id`` for this worker, unless it has died (then its reader can't fail it)."""
        with self.lock:
            if self.alive:
                self.jobs.add(job_id)
            return self.alive

    def close(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError):
            self.send({"type": "exit"})
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.wire.close()


class ProcessExecutor:
    """A worker process per device, started on first use (or by ``warm``) and restarted after
    it dies."""

    def __init__(self) -> None:
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0
        """Workers that died and were replaced."""

    def _worker(self, device: str, on_event: OnEvent) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor was shut down")
            worker = self._workers.get(device)
            if worker is None or not worker.alive:
                self.restarts += worker is not None
                worker = _Worker(device, on_event, self._replace)
                self._workers[device] = worker
            return worker

    def _replace(self, dead: _Worker) -> None:
        """Restart a dead worker at once, so the next job doesn't wait for torch to import; a
        worker that died before it was ready is not restarted (that would loop)."""
        with self._lock:
            if self._workers.get(dead.device) is not dead:
                return  # a job already started its replacement
            del self._workers[dead.device]
            if self._closed or not dead.ready.is_set():
                return
            self.restarts += 1
            self._workers[dead.device] = _Worker(dead.device, dead.on_event, self._replace)

    def warm(self, device: str, on_event: OnEvent) -> None:
        """Start the device's worker now, so the first job doesn't wait for torch to import."""
        self._worker(device, on_event)

    def start(self, spec: JobSpec, on_event: OnEvent) -> None:
        while not (worker := self._worker(spec.device, on_event)).take(spec.job_id):
            time.sleep(0.05)  # it died just now: its replacement takes the job
        with contextlib.suppress(OSError):  # died before the send: its reader fails the job
            worker.send({"type": "run", "spec": spec.to_dict()})

    def stop(self, job_id: str) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            if job_id in worker.jobs:
                with contextlib.suppress(OSError):
                    worker.send({"type": "stop", "job_id": job_id})

    def pids(self) -> dict[str, int]:
        with self._lock:
            return {d: w.pid for d, w in self._workers.items() if w.alive and w.pid}

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            workers = list(self._workers.values())
        return [
            {
                "device": w.device,
                "pid": w.pid,
                "state": ("busy" if w.jobs else "idle") if w.ready.is_set() else "starting",
                "up_s": round(time.time() - w.started),
            }
            for w in workers
            if w.alive
        ]

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.close()
