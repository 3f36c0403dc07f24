"""Safe extraction of user-supplied zip archives.

Never ``extractall`` an untrusted zip: a member named ``../../.bashrc``, an absolute path or a
symlink could write outside the target, and a 42 kB zip can inflate to petabytes. An archive
with any such member is refused as a whole, before anything is written.
"""

from __future__ import annotations

import hashlib
import stat
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .errors import DatasetError
from .fsutil import build_dir_atomically

DEFAULT_MAX_BYTES = 4 * 1024**3
"""4 GiB uncompressed: room for a large workshop dataset, far below a zip bomb."""
_CHUNK = 1024 * 1024


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return _path_problem(info.filename)


def _path_problem(name: str) -> str | None:
    name = name.replace("\\", "/")
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        return "has an absolute path"
    if len(name) >= 2 and name[1] == ":":
        return "has a drive-letter path"
    if ".." in PurePosixPath(name).parts:
        return "contains '..'"
    return None


def check_zip(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> list[zipfile.ZipInfo]:
    """Validate every member of the archive; return them or raise ``DatasetError``."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path.name} is not a readable zip archive ({exc}).") from exc
    with zf:
        infos = zf.infolist()
    for info in infos:
        problem = _member_problem(info)
        if problem:
            raise DatasetError(
                f"Refused {path.name}: member '{info.filename}' {problem}, which could write "
                "outside the extraction folder. Re-create the zip from the dataset folder itself."
            )
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise DatasetError(
            f"Refused {path.name}: it would unpack to {declared / 1e9:.1f} GB, over the "
            f"{max_bytes / 1e9:.1f} GB limit. Use a smaller dataset or raise the limit."
        )
    return infos


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def extract_zip(path: str | Path, dest_root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Extract ``path`` into a fresh folder under ``dest_root`` and return that folder.

    The folder is named after the archive's content hash, so extracting the same upload twice
    reuses the first result. Extraction happens in a temporary sibling that is renamed into
    place only when complete: an interrupted extraction leaves nothing half-written behind.
    Headers can lie about sizes, so the bytes actually inflated are counted too.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"No such file: {path}")
    infos = check_zip(path, max_bytes)
    final = Path(dest_root) / f"{path.stem[:40]}-{_fingerprint(path)}"

    def unpack(tmp: Path) -> None:
        written = 0
        with zipfile.ZipFile(path) as zf:
            for info in infos:
                target = (tmp / info.filename.replace("\\", "/")).resolve()
                if not target.is_relative_to(tmp.resolve()):  # defence in depth
                    raise DatasetError(f"Refused {path.name}: '{info.filename}' escapes the folder.")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise DatasetError(
                                f"Refused {path.name}: it inflates past the "
                                f"{max_bytes / 1e9:.1f} GB limit (its headers under-state sizes)."
                            )
                        dst.write(chunk)

    try:
        return build_dir_atomically(final, unpack)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DatasetError(f"{path.name} is damaged and cannot be unpacked ({exc}).") from exc


def save_files(
    files: Iterable[tuple[str, bytes]], dest_root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES
) -> Path:
    """Write uploaded ``(relative path, bytes)`` pairs (a browser folder upload) into a fresh
    folder, with the same path checks as a zip; return the folder."""
    files = list(files)
    for name, _ in files:
        problem = _path_problem(name)
        if problem:
            raise DatasetError(f"Refused the upload: '{name}' {problem}.")
    total = sum(len(data) for _, data in files)
    if total > max_bytes:
        raise DatasetError(
            f"Refused the upload: {total / 1e9:.1f} GB is over the {max_bytes / 1e9:.1f} GB limit."
        )
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())

    def write(tmp: Path) -> None:
        for name, data in files:
            target = tmp / name.replace("\\", "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    return build_dir_atomically(Path(dest_root) / f"folder-{digest.hexdigest()[:16]}", write)


def save_upload(name: str, data: bytes, dest_root: str | Path) -> Path:
    """Store an uploaded archive under a content-addressed name (re-uploads reuse it)."""
    from .fsutil import write_atomic

    safe = PurePosixPath(name.replace("\\", "/")).name or "upload.zip"
    path = Path(dest_root) / f"{hashlib.sha256(data).hexdigest()[:16]}-{safe}"
    if not path.exists():
        write_atomic(path, data)
    return path
