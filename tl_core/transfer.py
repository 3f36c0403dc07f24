"""Moving a job's data and its run folder between machines that share no filesystem.

The Ray executor needs both directions:

- **out**: the scanned dataset's images travel once per node, packed as bytes (Ray's object
  store carries them), and are unpacked into a node-local cache keyed by the data's
  fingerprint, so the next job on the same data starts at once;
- **back**: the run folder the job writes on its node comes home as the files that changed,
  written atomically into the real run folder on the app's machine.

Nothing here imports Ray: these are plain bytes and folders, tested without a cluster.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .data import Dataset
from .errors import DatasetError
from .fsutil import build_dir_atomically, prune_lru, write_atomic
from .paths import studio_home
from .runs import Run

DATA_CACHE_BYTES = 4 * 10**9
"""What a node keeps of the datasets it received; the least recently used go first."""
HELD_BACK = frozenset({Run.STATUS})
"""Sent only with the job's end: mid-run, the app's own ``status.json`` (its process, alive)
is the truth, so a listing of runs never mistakes a remote job for a dead local one."""


@dataclass
class DataPack:
    """The images of a scanned dataset as ``relative path -> bytes``."""

    key: str
    """The data's fingerprint; also the name of its folder in a node's cache."""
    files: dict[str, bytes]

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.files.values())


def data_fingerprint(dataset: Dataset) -> tuple[str, int]:
    """A key that changes when any file of the dataset does (by name, size and mtime), and the
    total size in bytes; costs a ``stat`` per file, not a read."""
    digest = hashlib.sha256(dataset.profile.root.encode())
    total = 0
    for split, rows in sorted(dataset.relative_items().items()):
        for rel, label in rows:
            st = os.stat(Path(dataset.profile.root) / rel)
            total += st.st_size
            digest.update(f"{split}\0{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32], total


def pack_dataset(dataset: Dataset, key: str | None = None) -> DataPack:
    """Every image the dataset uses (each once, whichever splits list it)."""
    root = Path(dataset.profile.root)
    names = sorted({rel for rows in dataset.relative_items().values() for rel, _ in rows})
    return DataPack(key or data_fingerprint(dataset)[0], {rel: (root / rel).read_bytes() for rel in names})


def data_cache() -> Path:
    """Where a node keeps the datasets it received (``$TL_STUDIO_HOME/ray/data``)."""
    return studio_home() / "ray" / "data"


def cached_data(key: str, cache: Path | None = None) -> Path | None:
    """The folder of an already received dataset (now the most recently used), or None."""
    folder = (cache or data_cache()) / key
    if not folder.is_dir():
        return None
    os.utime(folder)
    return folder


def prune_data_cache(keep: Path, cache: Path | None = None, max_bytes: int = DATA_CACHE_BYTES) -> list[Path]:
    """Remove the least recently used datasets until the cache fits in ``max_bytes``; ``keep``
    (the one a job is about to read) stays whatever its size."""
    root = cache or data_cache()
    folders = (f for f in root.iterdir() if f.is_dir() and not f.name.startswith("."))
    return prune_lru(folders, max_bytes, keep=keep)


def unpack_data(pack: DataPack, cache: Path | None = None) -> Path:
    """Unpack ``pack`` into the cache (once: two jobs unpacking the same data at the same time
    both end up with one complete folder) and return its folder."""

    def build(tmp: Path) -> None:
        write_files(tmp, pack.files, atomic=False)

    return build_dir_atomically((cache or data_cache()) / pack.key, build)


def missing_files(dataset: Dataset, limit: int = 3) -> list[str]:
    """Up to ``limit`` of the dataset's files that this machine can't see."""
    missing = []
    for rows in dataset.items.values():
        for path, _ in rows:
            if not os.path.isfile(path):
                missing.append(path)
                if len(missing) >= limit:
                    return missing
    return missing


def _checked(name: str) -> PurePosixPath:
    """A relative name inside a folder: never absolute, never climbing out, never hidden."""
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or any(p in ("", "..") or p.startswith(".") for p in rel.parts):
        raise DatasetError(f"Refusing to write {name!r}: not a plain relative file name.")
    return rel


def write_files(root: Path, files: dict[str, bytes], *, atomic: bool = True) -> None:
    """Write ``relative name -> bytes`` under ``root``; each file appears whole or not at all."""
    for name, data in files.items():
        path = root / _checked(name)
        if atomic:
            write_atomic(path, data)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def read_files(root: Path) -> dict[str, bytes]:
    """Every visible file under ``root`` by relative name (a run folder's few small files)."""
    return {rel: (root / rel).read_bytes() for rel in _visible(root)}


def _visible(root: Path) -> list[str]:
    """Relative names of the files under ``root``, without hidden ones (temp files)."""
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                out.append(Path(folder, name).relative_to(root).as_posix())
    return sorted(out)


class FolderChanges:
    """The files of a folder that changed since the last ``take``: a run folder comes home
    epoch by epoch, not as one lump at the end."""

    def __init__(self, root: Path):
        self.root = root
        self._sent: dict[str, tuple[int, int, int]] = {}

    def take(self, final: bool = False) -> dict[str, bytes]:
        """Changed files; ``HELD_BACK`` ones only when ``final``."""
        out = {}
        for rel in _visible(self.root):
            if rel in HELD_BACK and not final:
                continue
            try:
                st = os.stat(self.root / rel)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)  # an atomic write is a new inode
                if self._sent.get(rel) != stamp:
                    out[rel] = (self.root / rel).read_bytes()
                    self._sent[rel] = stamp
            except FileNotFoundError:  # replaced while we looked: the next take gets it
                continue
        return out
