"""One training at a time per device on this machine, whichever process asks: the app's
worker, a CLI run, a notebook.

A ``flock`` on ``<studio home>/locks/<device>.lock`` is the lock; the kernel drops it when the
holder dies, even by ``kill -9``. ``flock`` alone is not fair (a process that releases and
re-locks at once would win every time), so waiters also take a ticket: a marker file whose
name sorts by arrival, and nobody locks while an older live ticket waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .fsutil import read_json, write_json_atomic
from .paths import studio_home
from .runs import pid_alive


def _safe(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", device)


WAITING = "waiting for the device"
"""The stage a job reports while another process trains on its device."""


def locks_root() -> Path:
    return studio_home() / "locks"


def publish_load(device: str, jobs: int, root: Path | None = None) -> None:
    """Tell waiters in other processes how many jobs this process has for ``device``."""
    path = (root or locks_root()) / f"{_safe(device)}.{os.getpid()}.jobs.json"
    if jobs:
        write_json_atomic(path, {"pid": os.getpid(), "jobs": jobs})
    else:
        path.unlink(missing_ok=True)


def others_load(device: str, root: Path | None = None) -> int:
    """Jobs that live processes other than this one hold or queue for ``device``."""
    folder = root or locks_root()
    total = 0
    for path in folder.glob(f"{_safe(device)}.*.jobs.json"):
        data = read_json(path, {}) or {}
        pid = int(data.get("pid", -1))
        if pid != os.getpid() and pid_alive(pid):
            total += int(data.get("jobs", 0))
    return total


class DeviceLock:
    """``acquire`` waits its turn (reporting why through ``on_wait``) and gives up when ``stop``
    is set; ``release`` lets the next waiter in."""

    def __init__(self, device: str, root: Path | None = None, poll_s: float = 0.25):
        self.device = device
        self.root = root or locks_root()
        self.poll_s = poll_s
        self.path = self.root / f"{_safe(device)}.lock"
        self._fd: int | None = None

    def _ticket(self) -> tuple[Path, int]:
        """A file whose name sorts by arrival, locked for as long as we wait: the kernel drops
        the lock when the waiter dies, so a leftover file is recognisably stale (a pid could
        have been reused). It is locked before it gets its visible name."""
        stamp = f"{time.time_ns():020d}"
        name = f"{_safe(self.device)}.wait.{stamp}.{secrets.token_hex(4)}"
        tmp = self.root / f".{name}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(tmp, self.root / name)
        return self.root / name, fd

    @staticmethod
    def _waiting(path: Path) -> bool:
        """Whether a live waiter holds this ticket; stale ones are removed."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)
        return False

    def _older_tickets(self, mine: Path) -> int:
        pattern = f"{_safe(self.device)}.wait.*"
        return sum(1 for p in self.root.glob(pattern) if p.name < mine.name and self._waiting(p))

    def acquire(
        self, stop: threading.Event | None = None, on_wait: Callable[[str], None] | None = None
    ) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        ticket, ticket_fd = self._ticket()
        said = ""
        fd = -1
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            while True:
                if not self._older_tickets(ticket):
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        self._fd, fd = fd, -1
                        return True
                    except BlockingIOError:
                        pass
                if stop is not None and stop.is_set():
                    return False
                ahead = max(others_load(self.device, self.root), 1)
                message = f"{WAITING}: {ahead} job{'s' if ahead != 1 else ''} ahead"
                if on_wait is not None and message != said:
                    on_wait(message)
                    said = message
                time.sleep(self.poll_s)
        finally:
            ticket.unlink(missing_ok=True)
            os.close(ticket_fd)
            if fd >= 0:
                os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def held(
        self, stop: threading.Event | None = None, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[bool]:
        """``with lock.held(stop) as got:`` — ``got`` is False when stopped while waiting."""
        got = self.acquire(stop, on_wait)
        try:
            yield got
        finally:
            self.release()
