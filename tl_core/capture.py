"""Webcam photos kept as an ordinary dataset: a folder of class folders in the workspace's uploads.

The Data page's camera source writes here one photo at a time; "use these photos" then hands the
folder to the same scanner as any upload, so Strategy, Train and Results see nothing special.
Every name that reaches the disk is validated here, and every write is atomic.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat

from .data import JUNK_NAMES, SPLIT_NAMES, TINY_CLASS, held_out
from .errors import DatasetError
from .fsutil import write_atomic
from .images import ImageProblem, load_rgb, thumbnail

CAPTURE_DIR = "camera"
"""The capture set's folder inside a workspace's uploads (zips unpack to ``<name>-<hash>``)."""
LABEL = "camera photos"
MIN_CLASSES = 2
MAX_CLASSES = 20
"""More classes than a webcam session can fill with photos; keeps the page short."""
MAX_NAME = 40
MAX_PHOTOS_PER_CLASS = 500
"""A webcam session never needs more; each photo costs disk on a shared server."""
MAX_PHOTO_BYTES = 20 * 1024**2
"""A 480p webcam frame is well under 1 MB and a phone photo a few MB; 20 MB is neither."""
BLANK_STDDEV = 2.0
"""Grey levels. A click before the camera's picture arrives gives a black frame (0.0 with
Chromium's camera); a photo of anything varies far more."""
_NAME = re.compile(r"^\w[\w \-]*$")
"""Letters (any script), digits, spaces, ``_`` and ``-``: no dots, slashes or other path tricks."""
_PHOTO = re.compile(r"^[0-9a-f]{16}\.(jpg|png)$")
_KEEP_AS_IS = {"JPEG": "jpg", "PNG": "png"}
_RESERVED = {n.lower() for names in SPLIT_NAMES.values() for n in names} | {n.lower() for n in JUNK_NAMES}
"""The scanner reads ``train``/``val``/``test`` folders as splits and skips junk ones."""


def check_class_name(name: str, existing: list[str] | tuple[str, ...] = ()) -> str:
    """The cleaned name (spaces collapsed) or a ``DatasetError`` saying what to change.

    Duplicates are compared ignoring case: on macOS and Windows ``Cat`` and ``cat`` are one folder.
    """
    clean = " ".join((name or "").split())
    if not clean:
        raise DatasetError("Type a name for the class first, e.g. 'thumbs up'.")
    if len(clean) > MAX_NAME:
        raise DatasetError(f"Class names can be at most {MAX_NAME} characters; shorten '{clean[:20]}…'.")
    if not _NAME.fullmatch(clean):
        raise DatasetError(
            f"'{clean}' can't be a class name: use letters, digits, spaces, '-' or '_' "
            "(no dots or slashes), starting with a letter or digit."
        )
    if clean.lower() in _RESERVED:
        raise DatasetError(
            f"'{clean}' is a folder name the dataset scanner treats specially; pick another name."
        )
    if clean.lower() in {e.lower() for e in existing}:
        raise DatasetError(f"There is already a class called '{clean}'; pick a different name.")
    return clean


def min_photos(val_fraction: float = 0.2) -> int:
    """Photos a class needs so the scanner keeps one to check with and one to learn from."""
    n = 2
    while n - held_out(n, val_fraction) < 1:
        n += 1
    return n


@dataclass(frozen=True)
class Photo:
    cls: str
    name: str
    """The file name, which is also the photo's id for deleting it."""
    path: str


@dataclass
class CaptureSummary:
    """What the Data page shows above "Use these photos": counts, and why it can't train yet."""

    classes: list[str]
    counts: dict[str, int]
    problems: list[str] = field(default_factory=list)
    """Empty when the set can be trained on."""
    hints: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ready": self.ready, "total": self.total}


def summarize(counts: dict[str, int], val_fraction: float = 0.2) -> CaptureSummary:
    """Whether photos per class are enough to train, in the scanner's terms, said for a camera."""
    classes = list(counts)
    problems: list[str] = []
    hints: list[str] = []
    if not classes:
        problems.append(
            "Name at least two classes first (e.g. 'thumbs up' and 'thumbs down'): a classifier "
            "learns to tell classes apart."
        )
    elif len(classes) < MIN_CLASSES:
        problems.append(
            f"Add a second class: a classifier needs at least two to tell apart (e.g. 'not {classes[0]}')."
        )
    need = min_photos(val_fraction)
    short = [c for c in classes if counts[c] < need]
    if short:
        problems.append(
            f"Take at least {need} photos of each class (one to learn from, one to check the "
            "model with): " + ", ".join(f"{c} needs {need - counts[c]} more" for c in short) + "."
        )
    small = [c for c in classes if need <= counts[c] < TINY_CLASS]
    if small:
        hints.append(
            f"Enough to try, but {TINY_CLASS} or more photos per class learn much better "
            f"({', '.join(f'{c}: {counts[c]}' for c in small)}). Vary the angle, distance and light."
        )
    return CaptureSummary(classes=classes, counts=dict(counts), problems=problems, hints=hints)


class CaptureSet:
    """A folder of class folders of photos; the folder itself is the dataset source."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def in_uploads(cls, uploads_dir: str | Path) -> CaptureSet:
        return cls(Path(uploads_dir) / CAPTURE_DIR)

    # -- classes ---------------------------------------------------------------------------------
    def classes(self) -> list[str]:
        """Class folders, sorted as the scanner sorts them (so label order matches)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _class_dir(self, name: str) -> Path:
        """Only names listed on disk reach a path: a crafted name finds nothing."""
        if name not in self.classes():
            raise DatasetError(f"There is no class called '{name}' any more; refresh the page.")
        return self.root / name

    def add_class(self, name: str) -> str:
        existing = self.classes()
        if len(existing) >= MAX_CLASSES:
            raise DatasetError(f"That's {MAX_CLASSES} classes already, the most a camera set can hold.")
        clean = check_class_name(name, existing)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            (self.root / clean).mkdir()
        except FileExistsError as exc:  # another tab made it a moment ago
            raise DatasetError(f"There is already a class called '{clean}'; pick a different name.") from exc
        return clean

    def rename_class(self, old: str, new: str) -> str:
        src = self._class_dir(old)
        clean = check_class_name(new, [c for c in self.classes() if c != old])
        if clean != old:
            target = self.root / clean
            try:
                if target.exists():  # another tab made it meanwhile: never merge into it
                    raise FileExistsError(target)
                os.rename(src, target)
            except OSError as exc:
                raise DatasetError(
                    f"Could not rename '{old}' to '{clean}' ({type(exc).__name__}); reload the page "
                    "and try again."
                ) from exc
        return clean

    def delete_class(self, name: str) -> int:
        """Remove a class and its photos; returns how many photos went with it."""
        folder = self._class_dir(name)
        n = len(self.photos(name))
        shutil.rmtree(folder)
        return n

    # -- photos ----------------------------------------------------------------------------------
    def photos(self, cls: str) -> list[Photo]:
        """The class's photos, newest first."""
        folder = self._class_dir(cls)
        files = [p for p in folder.iterdir() if p.is_file() and _PHOTO.fullmatch(p.name)]
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
        return [Photo(cls=cls, name=p.name, path=str(p)) for p in files]

    def add_photo(self, cls: str, data: bytes) -> tuple[Photo, bool]:
        """Validate and store one photo; also say whether it is new. Named by its content, so
        the same frame sent twice (a double click, a rerun) is stored once, and never in two
        classes (one picture with two labels teaches nothing and leaks into validation)."""
        folder = self._class_dir(cls)
        if len(data) > MAX_PHOTO_BYTES:
            raise DatasetError(
                f"That photo is {len(data) / 1e6:.0f} MB, over the {MAX_PHOTO_BYTES // 1024**2} MB "
                "limit for one photo; use a smaller image."
            )
        try:
            rgb = load_rgb(data)
        except ImageProblem as exc:
            raise DatasetError(f"That photo can't be used: {exc}. Take it again.") from exc
        if ImageStat.Stat(rgb.convert("L")).stddev[0] < BLANK_STDDEV:
            raise DatasetError(
                "That photo is blank (one flat colour): wait until the camera's picture shows, "
                "check nothing covers the lens, then take it again."
            )
        with Image.open(io.BytesIO(data)) as img:
            ext = _KEEP_AS_IS.get(img.format or "")
        if ext is None:  # a format we don't keep: store the decoded pixels as PNG
            buf = io.BytesIO()
            rgb.save(buf, format="PNG")
            data, ext = buf.getvalue(), "png"
        name = f"{hashlib.sha256(data).hexdigest()[:16]}.{ext}"
        path = folder / name
        if path.exists():
            return Photo(cls=cls, name=name, path=str(path)), False
        other = next((c for c in self.classes() if c != cls and (self.root / c / name).exists()), None)
        if other is not None:
            raise DatasetError(
                f"That exact photo is already in '{other}'; one picture can't teach two classes. "
                "Take a new one."
            )
        if len(self.photos(cls)) >= MAX_PHOTOS_PER_CLASS:
            raise DatasetError(
                f"{cls} already has {MAX_PHOTOS_PER_CLASS} photos, the most one class can hold. "
                "Delete some or use them as they are."
            )
        write_atomic(path, data)
        return Photo(cls=cls, name=name, path=str(path)), True

    def delete_photo(self, cls: str, name: str) -> bool:
        """Delete one photo by its file name; False if it was already gone."""
        if not _PHOTO.fullmatch(name or ""):
            raise DatasetError(f"'{name}' is not a photo of this set.")
        path = self._class_dir(cls) / name
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def thumbnails(self, cls: str, size: int = 96) -> list[tuple[Photo, Image.Image]]:
        """Small previews, newest first; a file that became unreadable is left out."""
        out = []
        for photo in self.photos(cls):
            try:
                out.append((photo, thumbnail(photo.path, size)))
            except ImageProblem:
                continue
        return out

    # -- the whole set ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {c: len(self.photos(c)) for c in self.classes()}

    def summary(self, val_fraction: float = 0.2) -> CaptureSummary:
        return summarize(self.counts(), val_fraction)
