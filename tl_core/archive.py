"""Safe extraction of user-supplied zip archives.

Never ``extractall`` an untrusted zip: a member named ``../../.bashrc``, an absolute path or a
symlink could write outside the target, and a 42 kB zip can inflate to petabytes. An archive
with any such member is refused as a whole, before anything is written.
"""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .errors import DatasetError
from .fsutil import build_dir_atomically

DEFAULT_MAX_BYTES = 4 * 1024**3
"""4 GiB uncompressed: room for a large workshop dataset, far below a zip bomb."""
MAX_MEMBER_BYTES = 256 * 1024**2
"""No single image in a dataset is 256 MiB; a member that big is a bomb or the wrong upload."""
MAX_MEMBERS = 200_000
"""Far more images than a workshop dataset holds; each member costs a file and an inode."""
MAX_RATIO = 100
"""JPEG and PNG are already compressed and barely shrink in a zip (about 1:1, BMP/TIFF maybe
10:1); a member that inflates 100:1 is not a photo. Zeros deflate about 1000:1."""
RATIO_MIN_BYTES = 8 * 1024**2
"""The ratio rule applies only past 8 MiB: small text or flat-colour files may compress well."""
_CHUNK = 1024 * 1024
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{16}-")
_REMOVE_IT = "Remove that file, zip the image folders again and re-upload."


def display_name(path: str | Path) -> str:
    """The user's own name for a stored file: ``save_upload`` prefixes a content hash they never chose."""
    return _UPLOAD_PREFIX.sub("", Path(path).name, count=1)


def _human(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _size_problem(size: int, packed: int, verb: str) -> str | None:
    """Why a member of ``size`` bytes, stored in ``packed`` bytes, cannot be an image (or None)."""
    if size > RATIO_MIN_BYTES and size > MAX_RATIO * max(packed, 1):
        return (
            f"{verb} {_human(size)} from {_human(packed)} ({size / max(packed, 1):,.0f}:1), "
            "which no image does"
        )
    if size > MAX_MEMBER_BYTES:
        return f"{verb} {_human(size)}, over the {_human(MAX_MEMBER_BYTES)} per-file limit for an image"
    return None


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


def _too_many(count: int, where: str) -> DatasetError:
    return DatasetError(
        f"Refused {where}: it holds {count:,} files, over the {MAX_MEMBERS:,} limit. "
        "Use a smaller dataset or split it."
    )


def check_zip(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> list[zipfile.ZipInfo]:
    """Validate every member of the archive from its headers alone; return them or raise ``DatasetError``."""
    shown = display_name(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{shown} is not a readable zip archive ({exc}).") from exc
    with zf:
        infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _too_many(len(infos), shown)
    for info in infos:
        problem = _member_problem(info)
        if problem:
            raise DatasetError(
                f"Refused {shown}: member '{info.filename}' {problem}, which could write "
                "outside the extraction folder. Re-create the zip from the dataset folder itself."
            )
        problem = _size_problem(info.file_size, info.compress_size, "would inflate")
        if problem:
            raise DatasetError(f"Refused {shown}: member '{info.filename}' {problem}. {_REMOVE_IT}")
    # Members never share bytes in an honest zip; overlapping ones are the classic bomb trick.
    packed = sum(i.compress_size for i in infos)
    if packed > path.stat().st_size:
        raise DatasetError(
            f"Refused {shown}: its headers claim {_human(packed)} of compressed data in a "
            f"{_human(path.stat().st_size)} file, so they are forged. Re-create the zip."
        )
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise DatasetError(
            f"Refused {shown}: it would unpack to {declared / 1e9:.1f} GB, over the "
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
    Headers can lie about sizes, so the bytes actually inflated are checked against the same
    limits, per member and in total.
    """
    path = Path(path)
    shown = display_name(path)
    if not path.is_file():
        raise DatasetError(f"No such file: {shown if shown != path.name else path}")
    infos = check_zip(path, max_bytes)
    final = Path(dest_root) / f"{path.stem[:40]}-{_fingerprint(path)}"

    def unpack(tmp: Path) -> None:
        written = 0
        with zipfile.ZipFile(path) as zf:
            for info in infos:
                target = (tmp / info.filename.replace("\\", "/")).resolve()
                if not target.is_relative_to(tmp.resolve()):  # defence in depth
                    raise DatasetError(f"Refused {shown}: '{info.filename}' escapes the folder.")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                member = 0
                with zf.open(info) as src, target.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        member += len(chunk)
                        written += len(chunk)
                        problem = _size_problem(member, info.compress_size, "inflated to over")
                        if problem:
                            raise DatasetError(
                                f"Refused {shown}: while unpacking, member '{info.filename}' "
                                f"{problem} (its header said {_human(info.file_size)}). {_REMOVE_IT}"
                            )
                        if written > max_bytes:
                            raise DatasetError(
                                f"Refused {shown}: it inflates past the "
                                f"{max_bytes / 1e9:.1f} GB limit (its headers under-state sizes)."
                            )
                        dst.write(chunk)

    try:
        return build_dir_atomically(final, unpack)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DatasetError(f"{shown} is damaged and cannot be unpacked ({exc}).") from exc


def save_files(
    files: Iterable[tuple[str, bytes]], dest_root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES
) -> Path:
    """Write uploaded ``(relative path, bytes)`` pairs (a browser folder upload) into a fresh
    folder, with the same path and size checks as a zip; return the folder."""
    files = list(files)
    if len(files) > MAX_MEMBERS:
        raise _too_many(len(files), "the upload")
    for name, data in files:
        problem = _path_problem(name)
        if problem:
            raise DatasetError(f"Refused the upload: '{name}' {problem}.")
        if len(data) > MAX_MEMBER_BYTES:
            raise DatasetError(
                f"Refused the upload: '{name}' is {_human(len(data))}, over the "
                f"{_human(MAX_MEMBER_BYTES)} per-file limit for an image. Leave that file out."
            )
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
    """Store an uploaded archive under a content-addressed name (re-uploads reuse it).

    The stored name is ``<16 hex>-<name>``; messages show it through ``display_name``.
    """
    from .fsutil import write_atomic

    safe = PurePosixPath(name.replace("\\", "/")).name or "upload.zip"
    path = Path(dest_root) / f"{hashlib.sha256(data).hexdigest()[:16]}-{safe}"
    if not path.exists():
        write_atomic(path, data)
    return path
