"""The room: a board of runs students chose to share, and the instructor's table of results.

Sharing is the instructor's call ("Share with the room"), so a student's work is never shown
to the room without someone deciding to. The board stores references (workspace, run id), not
copies, and opens runs only through their workspace, so it can't be used to reach anything else.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import NotFound
from .fsutil import read_json, write_json_atomic
from .paths import studio_home
from .runs import Run, RunSummary
from .workspaces import WorkspaceStore

_LOCK = threading.Lock()


@dataclass
class BoardEntry:
    entry_id: str
    workspace: str
    run_id: str
    owner: str
    shared_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RoomBoard:
    """``<studio home>/room/board.json``: shared runs, written atomically under a lock."""

    def __init__(self, workspaces: WorkspaceStore | None = None, path: str | Path | None = None):
        self.workspaces = workspaces or WorkspaceStore()
        self.path = Path(path) if path else studio_home() / "room" / "board.json"

    def entries(self) -> list[BoardEntry]:
        raw = read_json(self.path, []) or []
        return [BoardEntry(**e) for e in raw if isinstance(e, dict)]

    def _save(self, entries: list[BoardEntry]) -> None:
        write_json_atomic(self.path, [e.to_dict() for e in entries])

    def share(self, workspace: str, run_id: str) -> BoardEntry:
        """Put a finished run on the board (once; sharing again returns the same entry)."""
        run = self.workspaces.runs(workspace).get(run_id)
        if not run.weights_path.exists():
            raise NotFound("That run has no trained weights yet, so there is nothing to show the room.")
        with _LOCK:
            entries = self.entries()
            for entry in entries:
                if (entry.workspace, entry.run_id) == (workspace, run.id):
                    return entry
            owner = self.workspaces.get(workspace).name
            entry = BoardEntry(secrets.token_urlsafe(12), workspace, run.id, owner, time.time())
            self._save([*entries, entry])
            return entry

    def unshare(self, entry_id: str) -> None:
        with _LOCK:
            self._save([e for e in self.entries() if e.entry_id != entry_id])

    def run(self, entry_id: str) -> Run:
        """A shared run, opened through its workspace; anything not on the board is not found."""
        for entry in self.entries():
            if entry.entry_id == entry_id:
                return self.workspaces.runs(entry.workspace).get(entry.run_id)
        raise NotFound("That run is not on the room board.")

    def leaderboard(self) -> pd.DataFrame:
        """Best validation accuracy first; runs deleted since sharing are left out."""
        rows = []
        for entry in self.entries():
            try:
                summary = self.workspaces.runs(entry.workspace).get(entry.run_id).summary()
            except NotFound:
                continue
            rows.append({"entry_id": entry.entry_id, "who": entry.owner, **_run_row(summary)})
        frame = pd.DataFrame(rows, columns=["entry_id", "who", *_RUN_COLUMNS])
        frame = frame.sort_values("val accuracy", ascending=False, na_position="last")
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame.reset_index(drop=True)


_RUN_COLUMNS = ["data", "backbone", "strategy", "val accuracy", "epochs", "status", "started", "run"]


def _run_row(summary: RunSummary) -> dict[str, Any]:
    return {
        "data": summary.data_label,
        "backbone": summary.backbone,
        "strategy": summary.strategy,
        "val accuracy": summary.best_val_acc,
        "epochs": summary.epochs_run,
        "status": summary.status,
        "started": time.strftime("%H:%M", time.localtime(summary.created_at)),
        "run": summary.run_id,
    }


def room_results(workspaces: WorkspaceStore | None = None) -> pd.DataFrame:
    """Every workspace's runs, one row each: the instructor's table and its CSV download."""
    workspaces = workspaces or WorkspaceStore()
    rows = []
    for ws in workspaces.list():
        for summary in workspaces.runs(ws.id).list():
            if summary.kind != "train":
                continue  # an LR range test has no accuracy to compare
            rows.append({"who": ws.name, "workspace": ws.id, **_run_row(summary)})
    return pd.DataFrame(rows, columns=["who", "workspace", *_RUN_COLUMNS])
