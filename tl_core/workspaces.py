"""Workspaces: the private corner of a shared server that one student's runs and uploads live in.

Solo mode has one implicit workspace, ``solo``, whose folders are the studio's usual
``runs/`` and ``uploads/``, so the CLI and notebooks see what they always saw. In a workshop
each student joins with a name and gets a random, unguessable id; their runs and uploads live
under ``workspaces/<id>/`` and nothing lists or opens another workspace's files.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, NotFound
from .fsutil import read_json, write_json_atomic
from .paths import runs_root, studio_home, uploads_root
from .runs import RunStore

SOLO = "solo"
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_NAME = 40


@dataclass
class Workspace:
    id: str
    name: str
    created_at: float
    last_seen: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _solo() -> Workspace:
    return Workspace(id=SOLO, name="you", created_at=0.0, last_seen=time.time())


class WorkspaceStore:
    """Workspaces under ``<studio home>/workspaces``; ``solo_runs`` moves the solo runs folder
    (the CLI's ``--runs-dir``)."""

    def __init__(self, root: str | Path | None = None, solo_runs: str | Path | None = None):
        self.root = Path(root) if root else studio_home() / "workspaces"
        self.solo_runs = Path(solo_runs) if solo_runs else None

    def _dir(self, workspace_id: str) -> Path:
        if not isinstance(workspace_id, str) or not _ID.fullmatch(workspace_id):
            raise NotFound("No such workspace: join again from the Home page.")
        return self.root / workspace_id

    def create(self, name: str) -> Workspace:
        name = " ".join((name or "").split())
        if not name:
            raise ConfigError("Type your name first: the instructor sees it next to your runs.")
        if len(name) > MAX_NAME:
            raise ConfigError(f"Please use a name of at most {MAX_NAME} characters.")
        now = time.time()
        ws = Workspace(id=secrets.token_urlsafe(18), name=name, created_at=now, last_seen=now)
        folder = self._dir(ws.id)
        (folder / "runs").mkdir(parents=True)
        write_json_atomic(folder / "workspace.json", ws.to_dict())
        return ws

    def get(self, workspace_id: str) -> Workspace:
        if workspace_id == SOLO:
            return _solo()
        data = read_json(self._dir(workspace_id) / "workspace.json")
        if not isinstance(data, dict):
            raise NotFound("No such workspace: join again from the Home page.")
        return Workspace(**{k: data[k] for k in ("id", "name", "created_at", "last_seen")})

    def exists(self, workspace_id: str) -> bool:
        try:
            self.get(workspace_id)
        except NotFound:
            return False
        return True

    def list(self) -> list[Workspace]:
        """Every joined workspace, oldest first (the solo one is not listed)."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in self.root.iterdir():
            try:
                out.append(self.get(folder.name))
            except NotFound:
                continue
        return sorted(out, key=lambda w: w.created_at)

    def touch(self, workspace_id: str, min_interval_s: float = 60.0) -> None:
        """Record activity (the upload clean-up goes by it); at most once a minute."""
        if workspace_id == SOLO:
            return
        ws = self.get(workspace_id)
        now = time.time()
        if now - ws.last_seen >= min_interval_s:
            ws.last_seen = now
            write_json_atomic(self._dir(workspace_id) / "workspace.json", ws.to_dict())

    def runs_dir(self, workspace_id: str) -> Path:
        if workspace_id == SOLO:
            return self.solo_runs or runs_root()
        return self._dir(workspace_id) / "runs"

    def uploads_dir(self, workspace_id: str) -> Path:
        if workspace_id == SOLO:
            return uploads_root()
        return self._dir(workspace_id) / "uploads"

    def runs(self, workspace_id: str) -> RunStore:
        return RunStore(self.runs_dir(workspace_id))

    def sweep_uploads(self, idle_s: float, now: float | None = None) -> list[Path]:
        """Delete the uploads of workspaces idle for ``idle_s``; their runs stay (they hold the
        models, and the file lists a run needs were saved with it)."""
        now = time.time() if now is None else now
        removed = []
        for ws in self.list():
            uploads = self.uploads_dir(ws.id)
            if now - ws.last_seen >= idle_s and uploads.exists():
                shutil.rmtree(uploads, ignore_errors=True)
                removed.append(uploads)
        return removed
