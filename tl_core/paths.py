"""Where the studio keeps its files: one home folder, overridable for workshops and tests."""

from __future__ import annotations

import os
from pathlib import Path


def studio_home() -> Path:
    """``$TL_STUDIO_HOME`` or ``~/.tl-studio``; read on every call so tests can redirect it."""
    env = os.environ.get("TL_STUDIO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".tl-studio"


def runs_root() -> Path:
    return studio_home() / "runs"


def samples_root() -> Path:
    return studio_home() / "samples"


def uploads_root() -> Path:
    return studio_home() / "uploads"


def cache_root() -> Path:
    return studio_home() / "cache"
