"""The worker process: ``python -m tl_core.worker FD``.

Imports torch once, then runs the jobs the app sends over the socket ``FD``, one after
another. When the app goes away the socket closes and the worker exits with it, so no
orphaned process keeps a GPU busy.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
from typing import Any

from .runner import JobSpec, run_job
from .wire import LineSocket


def main(argv: list[str]) -> int:
    app = LineSocket(socket.socket(fileno=int(argv[0])))
    specs: queue.Queue[dict[str, Any] | None] = queue.Queue()
    stops: dict[str, threading.Event] = {}

    def read() -> None:
        for message in app.messages():
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

    app.send({"type": "ready", "pid": os.getpid()})
    while (spec := specs.get()) is not None:
        job_id = spec["job_id"]
        run_job(
            JobSpec(**spec),
            lambda event, job_id=job_id: app.send({"job_id": job_id, "event": event}),
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
