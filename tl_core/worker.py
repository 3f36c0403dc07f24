"""The worker process: ``python -m tl_core.worker FD``.

Imports torch once, then runs the jobs the app sends over the socket ``FD``, one after
another. When the app goes away the socket closes and the worker exits with it, so no
orphaned process keeps a GPU busy.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import threading
from typing import Any

from .runner import JobSpec, run_job


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    send_lock = threading.Lock()
    specs: queue.Queue[dict[str, Any] | None] = queue.Queue()
    stops: dict[str, threading.Event] = {}

    def send(message: dict[str, Any]) -> None:
        data = (json.dumps(message, default=_plain) + "\n").encode()
        with send_lock:
            sock.sendall(data)

    def read() -> None:
        with sock.makefile("r", encoding="utf-8") as lines:
            for line in lines:
                message = json.loads(line)
                if message["type"] == "run":
                    stops.setdefault(message["spec"]["job_id"], threading.Event())
                    specs.put(message["spec"])
                elif message["type"] == "stop":
                    stops.setdefault(message["job_id"], threading.Event()).set()
                elif message["type"] == "exit":
                    specs.put(None)
                    return
        os._exit(0)  # the app is gone: nobody is left to report to

    threading.Thread(target=read, name="tl-worker-commands", daemon=True).start()
    import tl_core.training  # noqa: F401  (torch and timm, once, before the first job)

    send({"type": "ready", "pid": os.getpid()})
    while (spec := specs.get()) is not None:
        job_id = spec["job_id"]
        run_job(
            JobSpec(**spec),
            lambda event, job_id=job_id: send({"job_id": job_id, "event": event}),
            stops[job_id],
        )
        stops.pop(job_id, None)
        _release_memory()
    return 0


def _release_memory() -> None:
    """Between jobs, hand cached GPU blocks back, so the next holder of the device (this
    worker's next job, or a CLI run) gets the whole card."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _plain(value: Any) -> Any:
    """numpy scalars and paths as JSON understands them."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
