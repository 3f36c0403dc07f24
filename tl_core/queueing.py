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


def pooled_waits(
    order: Sequence[T],
    slots: Sequence[tuple[str, float | None]],
    candidates: Callable[[T], Sequence[str]],
    duration_s: Callable[[T], float | None],
) -> list[float | None]:
    """``expected_waits`` for several devices: ``slots`` are (device, seconds until free), and
    each job in ``order`` takes the first slot to free up among its ``candidates`` devices (as
    the dispatcher will). ``None`` where a slot it may take has no estimate."""
    free = [[device, left] for device, left in slots]
    waits: list[float | None] = []
    for job in order:
        mine = [s for s in free if s[0] in candidates(job)]
        if not mine:
            waits.append(None)
            continue
        known = [s for s in mine if s[1] is not None]
        slot = min(known, key=lambda s: s[1]) if known else mine[0]
        wait = slot[1] if len(known) == len(mine) else None
        waits.append(wait)
        length = duration_s(job)
        slot[1] = None if wait is None or length is None else wait + length
    return waits
