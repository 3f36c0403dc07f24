"""``StudioSettings``: solo or workshop, and the room's limits, read from the environment.

A workshop is one server for a room of students, so it has limits that a person alone at
their laptop would only find annoying. Solo mode keeps every limit off.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

WORKSHOP_MAX_QUEUED = 3
WORKSHOP_TIME_LIMIT_S = 15 * 60.0
UPLOAD_TTL_S = 24 * 3600.0

EXECUTORS = ("local", "ray")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r}: use 1 or 0.")


def _choice(name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first when unset)."""
    value = os.environ.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: use one of {', '.join(choices)}.")
    return value


def _number(name: str, default: float | None, scale: float = 1.0) -> float | None:
    """``0`` (or ``none``) switches a limit off; the variable's unit is scaled to seconds."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("none", "off"):
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not a number.") from exc
    if number < 0:
        raise ConfigError(f"{name} must be 0 (off) or more, got {value}.")
    return number * scale if number else None


@dataclass(frozen=True)
class StudioSettings:
    workshop: bool = False
    room_code: str | None = None
    """Asked for when joining, so a server on a shared network admits only the room."""
    instructor_token: str | None = None
    """Without it there is no instructor page at all."""
    max_queued_per_workspace: int | None = None
    job_time_limit_s: float | None = None
    upload_ttl_s: float | None = UPLOAD_TTL_S
    allow_local_paths: bool = True
    devices: str | None = None
    """Which GPUs the app trains on (``0,2``; checked by ``devices.visible_devices``); None: all."""
    executor: str = "local"
    """``local`` (this machine's devices) or ``ray`` (a Ray cluster; see ``ray_executor``)."""
    ray_address: str | None = None
    """The Ray cluster to join; None starts a local Ray."""
    ray_cpus_per_job: int = 2
    """What a job asks Ray for on a cluster without GPUs."""
    ray_max_data_mb: float = 1024.0
    """Data up to this size travels through Ray; larger data must be on a path every node mounts
    (0: never send)."""

    @classmethod
    def from_env(cls, workshop: bool | None = None) -> StudioSettings:
        """``TL_STUDIO_WORKSHOP``, ``TL_STUDIO_ROOM_CODE``, ``TL_STUDIO_INSTRUCTOR_TOKEN``,
        ``TL_STUDIO_MAX_QUEUED``, ``TL_STUDIO_JOB_TIME_LIMIT_MIN``, ``TL_STUDIO_UPLOAD_TTL_HOURS``,
        ``TL_STUDIO_ALLOW_PATHS``, ``TL_STUDIO_DEVICES``, ``TL_STUDIO_EXECUTOR``,
        ``TL_STUDIO_RAY_ADDRESS``, ``TL_STUDIO_RAY_CPUS`` and ``TL_STUDIO_RAY_MAX_DATA_MB``."""
        room = _flag("TL_STUDIO_WORKSHOP", False) if workshop is None else workshop
        max_queued = _number("TL_STUDIO_MAX_QUEUED", WORKSHOP_MAX_QUEUED if room else None)
        return cls(
            workshop=room,
            room_code=os.environ.get("TL_STUDIO_ROOM_CODE") or None,
            instructor_token=os.environ.get("TL_STUDIO_INSTRUCTOR_TOKEN") or None,
            max_queued_per_workspace=max(1, round(max_queued)) if max_queued else None,
            job_time_limit_s=_number(
                "TL_STUDIO_JOB_TIME_LIMIT_MIN", WORKSHOP_TIME_LIMIT_S if room else None, scale=60.0
            ),
            upload_ttl_s=_number("TL_STUDIO_UPLOAD_TTL_HOURS", UPLOAD_TTL_S, scale=3600.0),
            # Students must not browse the server's disk; alone, your own folders are the point.
            allow_local_paths=_flag("TL_STUDIO_ALLOW_PATHS", not room),
            devices=os.environ.get("TL_STUDIO_DEVICES", "").strip() or None,
            executor=_choice("TL_STUDIO_EXECUTOR", EXECUTORS),
            ray_address=os.environ.get("TL_STUDIO_RAY_ADDRESS", "").strip() or None,
            ray_cpus_per_job=max(1, round(_number("TL_STUDIO_RAY_CPUS", 2) or 1)),
            ray_max_data_mb=_number("TL_STUDIO_RAY_MAX_DATA_MB", 1024.0) or 0.0,
        )

    def check_instructor(self, token: str) -> bool:
        """Constant-time, so response timing reveals nothing about the token."""
        if not self.instructor_token or not token:
            return False
        return hmac.compare_digest(token.encode(), self.instructor_token.encode())

    def check_room_code(self, code: str) -> bool:
        if not self.room_code:
            return True
        return hmac.compare_digest(code.strip().encode(), self.room_code.encode())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["instructor_token"] = "set" if self.instructor_token else None
        out["room_code"] = "set" if self.room_code else None
        return out
