"""Fair scheduling for a shared device: round-robin across workspaces, FIFO within each.

Pure functions over the queue, so the order a student is promised and the order jobs really
start come from the same code, and tests can check it without training anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def service_order(
    queued: Sequence[T], workspace_of: Callable[[T], str], last_served: Mapping[str, int]
) -> list[T]:
    """The order ``queued`` (oldest first) will start in if nothing else arrives.

    Each turn goes to the workspace served longest ago (never served counts as longest), and
    within a workspace its jobs keep their order: one student queueing five jobs delays the
    others by at most one job each.
    """
    lanes: dict[str, list[T]] = {}
    for job in queued:
        lanes.setdefault(workspace_of(job), []).append(job)
    arrival = {ws: i for i, ws in enumerate(lanes)}
    served = {ws: last_served.get(ws, -1) for ws in lanes}
    order: list[T] = []
    turn = max(last_served.values(), default=0) + 1
    while lanes:
        ws = min(lanes, key=lambda w: (served[w], arrival[w]))
        order.append(lanes[ws].pop(0))
        served[ws] = turn
        turn += 1
        if not lanes[ws]:
            del lanes[ws]
    return order


def expected_waits(
    order: Sequence[T], running_left_s: float | None, duration_s: Callable[[T], float | None]
) -> list[float | None]:
    """Seconds until each job in ``order`` starts: what is left of the running job plus the
    expected length of each job ahead; ``None`` from the first unknown onwards."""
    waits: list[float | None] = []
    total = running_left_s
    for job in order:
        waits.append(total)
        if total is not None:
            length = duration_s(job)
            total = None if length is None else total + length
    return waits
