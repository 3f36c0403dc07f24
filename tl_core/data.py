"""Find, validate and split a user's images; describe them in a ``DatasetProfile``.

Accepted sources: a folder with ``train/`` and ``val/`` (and optional ``test/``) of class
folders, a folder of class folders (split here, stratified and seeded), a ``.zip`` of either,
or the name of a built-in sample. Unusable files are skipped with a reason, never fatal.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .archive import DEFAULT_MAX_BYTES, display_name, extract_zip
from .errors import DatasetError
from .images import ImageProblem, load_rgb, thumbnail
from .paths import studio_home, uploads_root
from .samples import SAMPLES, materialize_sample
from .text_data import holds_text, is_table, scan_texts, table_in

SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", "__pycache__"})
IMBALANCE_RATIO = 3.0
TINY_CLASS = 10
SMALL_IMAGE_PX = 64
"""A shorter side under this is "small", far below the ~224 px photos backbones learned from.
Also the JPEG draft size when scanning: drafting never goes below it, so sizes stay exact here."""
GREY_SPREAD = 12
"""Max channel spread (0-255) of a grey pixel: grey scans saved as colour JPEGs carry a little."""

ProgressFn = Callable[[int, int], None]


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class DatasetProfile:
    """Everything the wizard and the UI need to know about a dataset, JSON-serialisable."""

    source: str
    root: str
    layout: str
    """``split`` (train/val given), ``folders`` (split here) or ``sample``."""
    classes: list[str]
    counts: dict[str, dict[str, int]]
    """split -> class -> number of usable images."""
    skipped: list[SkippedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    val_fraction: float | None = None
    test_fraction: float | None = None
    """Share of each class held out here as the test split; None: none, or a test/ folder."""
    seed: int | None = None
    suggested_image_size: int | None = None
    grey_fraction: float | None = None
    """Share of usable images that are grey-scale (whatever mode they are stored in)."""
    small_fraction: float | None = None
    """Share of usable images whose shorter side is under ``SMALL_IMAGE_PX``."""
    modality: str = "image"
    """``image`` or ``text`` (``text_data``): items are then (text, label) pairs."""
    encoding: str | None = None
    """Texts: how the file's bytes were decoded (a fallback is said, never silent)."""
    columns: list[str] | None = None
    """Texts from a table: the [text, label] columns used."""

    def n(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())

    @property
    def n_train(self) -> int:
        return self.n("train")

    @property
    def n_val(self) -> int:
        return self.n("val")

    @property
    def n_test(self) -> int:
        return self.n("test")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(n_train=self.n_train, n_val=self.n_val, n_test=self.n_test)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetProfile:
        """The inverse of ``to_dict`` (whose derived ``n_*`` totals are dropped)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["skipped"] = [SkippedFile(**s) for s in values.get("skipped", [])]
        return cls(**values)


@dataclass
class Dataset:
    """A scanned dataset: its profile plus the (path, label index) pairs of each split."""

    profile: DatasetProfile
    items: dict[str, list[tuple[str, int]]]

    @property
    def classes(self) -> list[str]:
        return self.profile.classes

    def to_dict(self) -> dict[str, Any]:
        return {"profile": asdict(self.profile), "items": self.items}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dataset:
        """The inverse of ``to_dict``: a scan made on another machine (or read back from JSON)."""
        items = {split: [(str(p), int(label)) for p, label in rows] for split, rows in data["items"].items()}
        return cls(profile=DatasetProfile.from_dict(data["profile"]), items=items)

    def relative_items(self) -> dict[str, list[tuple[str, int]]]:
        """Each item's path relative to the profile's root: how a copy elsewhere names it."""
        root = Path(self.profile.root)
        out: dict[str, list[tuple[str, int]]] = {}
        for split, rows in self.items.items():
            out[split] = []
            for path, label in rows:
                rel = Path(path).relative_to(root)  # every scanned file lies under the root
                out[split].append((rel.as_posix(), label))
        return out

    def moved_to(self, root: str | Path) -> Dataset:
        """The same images, read from a copy of the root at ``root`` (a Ray node's cache). The
        profile still names the original, so what a run records is the same wherever it ran."""
        items = {
            split: [(str(Path(root) / rel), label) for rel, label in rows]
            for split, rows in self.relative_items().items()
        }
        return Dataset(profile=self.profile, items=items)


def _is_junk(name: str) -> bool:
    return name in JUNK_NAMES or name.startswith(".")


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not _is_junk(p.name))


def _extraction_root(archive: Path) -> Path:
    """An upload unpacks beside itself, inside its own workspace (and goes when the workspace's
    uploads are cleaned up); any other zip unpacks into the studio's uploads folder."""
    parent = archive.resolve().parent
    return parent if parent.is_relative_to(studio_home().resolve()) else uploads_root()


def _unwrap(root: Path) -> Path:
    """Descend through a lone wrapper folder (``data.zip`` -> ``data/`` -> classes)."""
    for _ in range(2):
        children = _visible_children(root)
        lone = children[0] if len(children) == 1 and children[0].is_dir() else None
        if lone and not _split_dirs(root) and any(c.is_dir() for c in _visible_children(lone)):
            root = lone
        else:
            break
    return root


def _split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in _visible_children(root):
        if child.is_dir():
            for split, names in SPLIT_NAMES.items():
                if child.name.lower() in names and split not in found:
                    found[split] = child
    return found


def resolve_source(source: str | Path, *, max_zip_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Path, str]:
    """Turn a folder, a zip or a sample name into a local folder; also return the layout hint."""
    text = str(source)
    if text in SAMPLES and not Path(text).exists():
        return materialize_sample(text), "sample"
    path = Path(text).expanduser()
    if not path.exists():
        names = ", ".join(SAMPLES)
        raise DatasetError(
            f"'{text}' is not a folder, a .zip file, a .csv/.tsv/.jsonl file or a built-in sample "
            f"({names}). Check the path."
        )
    if path.is_file():
        if is_table(path):
            return path, "table"
        if path.suffix.lower() != ".zip":
            raise DatasetError(
                f"{display_name(path)} is a file but not a .zip, .csv, .tsv or .jsonl: give a folder "
                "or one of those."
            )
        return _unwrap(extract_zip(path, _extraction_root(path), max_zip_bytes)), "upload"
    return _unwrap(path), "folder"


def table_file(source: str | Path) -> Path | None:
    """The CSV/TSV/JSONL file behind ``source`` (the file itself, or the one a zip or a folder
    holds), for the Data page's column pickers; None for anything else."""
    if str(source) in SAMPLES and not Path(str(source)).exists():
        return None
    root, kind = resolve_source(source)
    return root if kind == "table" else table_in(root)


def modality_of(source: str | Path) -> str:
    """``text`` or ``image``: what ``scan_dataset`` will find in ``source`` (a sample, a table
    file, a folder or a zip of either)."""
    if str(source) in SAMPLES and not Path(str(source)).exists():
        return SAMPLES[str(source)].modality
    root, kind = resolve_source(source)
    return "text" if kind == "table" or holds_text(root) else "image"


def _candidate_files(class_dir: Path) -> list[Path]:
    """Every non-junk file below ``class_dir``; junk folders (``__MACOSX``) are skipped whole."""
    return sorted(
        p
        for p in class_dir.rglob("*")
        if p.is_file() and not any(_is_junk(part) for part in p.relative_to(class_dir).parts)
    )


@dataclass(frozen=True)
class _Look:
    """What the wizard's guess needs from one image; seen while it is decoded anyway."""

    grey: bool
    small: bool


def _look(img: Image.Image) -> _Look:
    """Grey when at most 1% of 32x32 sampled pixels have colour (JPEG noise leaves a few)."""
    probe = np.asarray(img.resize((32, 32), Image.Resampling.NEAREST), dtype=np.int16)
    coloured = np.count_nonzero(probe.max(axis=2) - probe.min(axis=2) > GREY_SPREAD)
    return _Look(
        grey=coloured <= probe.shape[0] * probe.shape[1] // 100, small=min(img.size) < SMALL_IMAGE_PX
    )


def _check_file(path: Path) -> str | _Look:
    """Why ``path`` can't be used, or how it looks."""
    try:
        return _look(load_rgb(path, draft_size=SMALL_IMAGE_PX))
    except ImageProblem as exc:
        return str(exc)


def _collect_split(split_dir: Path) -> dict[str, list[Path]]:
    return {c.name: _candidate_files(c) for c in _visible_children(split_dir) if c.is_dir()}


def held_out(n: int, val_fraction: float) -> int:
    """Validation images taken from a class of ``n``: ``val_fraction``, at least one, none when
    there is a single image (the camera capture's "enough photos" uses the same rule)."""
    return max(1, round(n * val_fraction)) if n >= 2 else 0


def _stratified_split(
    per_class: dict[str, list[Path]], val_fraction: float, seed: int | str
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Per class: sort, shuffle with ``seed``, hold out ``val_fraction`` (at least one image)."""
    train: dict[str, list[Path]] = {}
    val: dict[str, list[Path]] = {}
    for name, files in per_class.items():
        files = sorted(files)
        random.Random(f"{seed}:{name}").shuffle(files)
        n_val = held_out(len(files), val_fraction)
        val[name], train[name] = files[:n_val], files[n_val:]
    return train, val


def scan_dataset(
    source: str | Path,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_zip_bytes: int = DEFAULT_MAX_BYTES,
    progress: ProgressFn | None = None,
    workers: int = 4,
    test_fraction: float = 0.0,
    text_column: str | None = None,
    label_column: str | None = None,
) -> Dataset:
    """Scan ``source`` and return the usable images (or texts, ``text_data``) per split, with a
    profile. ``text_column``/``label_column`` pick a table's columns (else they are guessed).

    Every candidate file is decoded (at reduced size for JPEGs), so corrupt and truncated files
    are found now rather than in the middle of training.

    Raises:
        DatasetError: fewer than two usable classes, an empty class, an unsafe archive...
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    if not 0.0 <= test_fraction < 1.0 - val_fraction:
        raise DatasetError(
            f"test_fraction must be at least 0 and leave images to train on, got {test_fraction}."
        )
    root, kind = resolve_source(source, max_zip_bytes=max_zip_bytes)
    if kind == "table" or holds_text(root):
        return scan_texts(
            str(source),
            root,
            kind,
            text_column=text_column,
            label_column=label_column,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
    # Name an upload as the user knows it, never the internal folder it was unpacked to.
    where = display_name(source) if kind == "upload" else str(root)
    splits = _split_dirs(root)
    if splits:
        if "train" not in splits:
            raise DatasetError(f"{where} has {', '.join(splits)} folders but no train/ folder.")
        raw = {name: _collect_split(d) for name, d in splits.items()}
        layout = "split"
    else:
        raw = {"train": _collect_split(root)}
        layout = "sample" if kind == "sample" else "folders"
    classes = sorted(raw["train"])
    if not classes:
        raise DatasetError(
            f"No class folders found in {where}. Put each class's images in its own folder "
            "(e.g. cats/ and dogs/), or use train/ and val/ folders that each hold class folders."
        )

    # Decode every candidate once, in parallel: Pillow releases the GIL while decoding.
    all_files = [f for per in raw.values() for files in per.values() for f in files]
    problems: dict[Path, str] = {}
    looks: list[_Look] = []
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, checked in zip(all_files, pool.map(_check_file, all_files), strict=True):
            if isinstance(checked, str):
                problems[path] = checked
            else:
                looks.append(checked)
            done += 1
            if progress and (done % 25 == 0 or done == len(all_files)):
                progress(done, len(all_files))
    usable = {
        split: {c: [f for f in files if f not in problems] for c, files in per.items()}
        for split, per in raw.items()
    }
    skipped = [SkippedFile(str(p.relative_to(root)), r) for p, r in sorted(problems.items())]
    warnings: list[str] = []
    for split, per in usable.items():
        for extra in sorted(set(per) - set(classes)):
            warnings.append(f"{split}/{extra} has no matching train/{extra} folder; it is ignored.")

    if layout != "split" or "val" not in usable:
        usable["train"], usable["val"] = _stratified_split(usable["train"], val_fraction, seed)
    held_test = bool(test_fraction) and not any(usable.get("test", {}).values())
    if held_test:  # after validation, from what is left: the validation split stays the same
        usable["train"], usable["test"] = _stratified_split(usable["train"], test_fraction, f"{seed}:test")
    _validate_classes(classes, usable, skipped)

    counts = {
        s: {c: len(usable[s].get(c, [])) for c in classes} for s in ("train", "val", "test") if s in usable
    }
    warnings += balance_warnings(classes, counts)
    profile = DatasetProfile(
        source=str(source),
        root=str(root),
        layout=layout,
        classes=classes,
        counts=counts,
        skipped=skipped,
        warnings=warnings,
        val_fraction=val_fraction if layout != "split" or "val" not in raw else None,
        test_fraction=test_fraction if held_test else None,
        seed=seed,
        suggested_image_size=SAMPLES[str(source)].image_size if kind == "sample" else None,
        grey_fraction=sum(look.grey for look in looks) / len(looks),
        small_fraction=sum(look.small for look in looks) / len(looks),
    )
    index = {c: i for i, c in enumerate(classes)}
    items = {s: [(str(f), index[c]) for c in classes for f in per.get(c, [])] for s, per in usable.items()}
    return Dataset(profile=profile, items=items)


def _validate_classes(
    classes: list[str], usable: dict[str, dict[str, list[Path]]], skipped: list[SkippedFile]
) -> None:
    empty = [c for c in classes if not usable["train"].get(c) and not usable.get("val", {}).get(c)]
    if empty:
        n_bad = sum(1 for s in skipped if Path(s.path).parts[-2:-1] and Path(s.path).parts[-2] in empty)
        raise DatasetError(
            f"Class folder(s) {', '.join(empty)} contain no usable image"
            + (f" ({n_bad} file(s) skipped, see the skipped list)" if n_bad else "")
            + ". Add images or remove the folder."
        )
    if len(classes) < 2:
        only = classes[0] if classes else "none"
        raise DatasetError(
            f"Found only one class ({only}). A classifier needs at least two: add another folder "
            "of images, e.g. a second category or a 'not_" + only + "' folder."
        )
    if not any(usable.get("val", {}).values()):
        raise DatasetError("There are no validation images. Add images to val/, or at least two per class.")
    no_train = [c for c in classes if not usable["train"].get(c)]
    if no_train:
        raise DatasetError(
            f"Class(es) {', '.join(no_train)} have no training images (all went to validation or test). "
            "Add at least two images per class."
        )


def balance_warnings(
    classes: list[str], counts: dict[str, dict[str, int]], noun: str = "images"
) -> list[str]:
    out: list[str] = []
    totals = {c: sum(counts[s][c] for s in counts) for c in classes}
    train = counts["train"]
    largest, smallest = max(train.values()), min(train.values())
    if smallest and largest / smallest > IMBALANCE_RATIO:
        big = max(train, key=train.__getitem__)
        small = min(train, key=train.__getitem__)
        out.append(
            f"Classes are imbalanced: '{big}' has {largest} training {noun}, '{small}' only "
            f"{smallest} ({largest / smallest:.1f}x). Training uses class weights to compensate; "
            f"more {noun} of the small class help most."
        )
    tiny = [c for c in classes if totals[c] < TINY_CLASS]
    if tiny:
        out.append(
            f"Very small class(es): {', '.join(f'{c} ({totals[c]})' for c in tiny)}. With under "
            f"{TINY_CLASS} {noun} a class is hard to learn and its accuracy is noisy; add more."
        )
    for c in classes:
        if counts.get("val", {}).get(c, 0) == 0:
            out.append(f"Class '{c}' has no validation {noun}, so its accuracy can't be measured.")
    return out


def thumbnails(
    dataset: Dataset, per_class: int = 6, size: int = 96
) -> dict[str, list[tuple[str, Image.Image]]]:
    """A few training images per class, small, for the data page's grid."""
    out: dict[str, list[tuple[str, Image.Image]]] = {c: [] for c in dataset.classes}
    for path, label in dataset.items["train"]:
        bucket = out[dataset.classes[label]]
        if len(bucket) < per_class:
            img = thumbnail(path, size)
            bucket.append((Path(path).name, img))
    return out
