"""The app <-> worker protocol: JSON messages, one per line, over a socket.

Both ends use this one class, so the framing and the JSON rules (numpy scalars, paths) can't
drift apart; a Ray executor would carry the same dicts.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any


def _plain(value: Any) -> Any:
    """numpy scalars and paths as JSON understands them."""
    return value.item() if hasattr(value, "item") else str(value)


class LineSocket:
    """``send`` may be called from several threads; ``messages`` is read by one."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, default=_plain) + "\n").encode()
        with self._lock:
            self.sock.sendall(data)

    def messages(self) -> Iterator[dict[str, Any]]:
        """Until the other end closes; a broken line raises ``ValueError``."""
        with self.sock.makefile("r", encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)

    def close(self) -> None:
        self.sock.close()
