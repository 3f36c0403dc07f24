"""Find, check and split a user's texts: the text half of ``data.scan_dataset``.

Accepted: a CSV, TSV or JSONL file with a text and a label column (guessed when not given), a
folder of class folders holding one ``.txt`` file per example (or ``train/`` and ``val/`` of
them), a ``.zip`` of either, or a built-in text sample. Items are ``(text, label index)``
pairs, so training, splitting and results share the image path's ``Dataset``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DatasetError

if TYPE_CHECKING:
    from .data import Dataset

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
ENCODINGS = ("utf-8", "cp1252", "latin-1")
"""Tried in order; latin-1 decodes any bytes, so it is the last resort (and said so)."""
TEXT_HINTS = ("text", "review", "message", "content", "body", "sentence", "comment", "title", "article")
LABEL_HINTS = ("label", "class", "category", "target", "topic", "sentiment", "stars", "rating", "y")
SPLIT_COLUMN = "split"
SPLIT_VALUES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "dev": "val", "test": "test", "testing": "test"}  # fmt: skip
MAX_TABLE_BYTES = 500 * 1024**2


@dataclass
class Table:
    """A parsed CSV/TSV/JSONL file: rows of strings, and how its bytes were decoded."""

    columns: list[str]
    rows: list[dict[str, str]]
    encoding: str
    first_line: list[int]
    """The file line each row starts on (1-based), for messages."""


def decode(raw: bytes, name: str) -> tuple[str, str]:
    """``raw`` as text with the first encoding that fits, and that encoding's name."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="strict"), "utf-8 (with BOM)"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # what Excel's "Unicode text" saves
        try:
            return raw.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{name} starts as UTF-16 but isn't: save it as UTF-8.") from exc
    for encoding in ENCODINGS:
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise DatasetError(f"{name} could not be decoded as text.")  # unreachable: latin-1 takes all


def is_table(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TABLE_SUFFIXES


def read_table(path: Path) -> Table:
    """Parse ``path`` (by its suffix). Quoting errors and bad JSON lines name the line."""
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise DatasetError(f"{path.name} is over {MAX_TABLE_BYTES // 1024**2} MB: split it or sample it.")
    text, encoding = decode(path.read_bytes(), path.name)
    if path.suffix.lower() == ".jsonl":
        return _read_jsonl(text, encoding, path.name)
    return _read_delimited(text, "\t" if path.suffix.lower() == ".tsv" else ",", encoding, path.name)


def _read_delimited(text: str, delimiter: str, encoding: str, name: str) -> Table:
    first = text.split("\n", 1)[0]
    if delimiter == "," and first.count(";") > first.count(","):
        delimiter = ";"  # what Excel writes where the decimal mark is a comma
    csv.field_size_limit(MAX_TABLE_BYTES)  # the default 128 KB would refuse a long article
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[dict[str, str]] = []
    starts: list[int] = []
    try:
        header = next(reader, None)
        if not header:
            raise DatasetError(f"{name} is empty: it needs a header row and one row per example.")
        columns = [h.strip() or f"column {i + 1}" for i, h in enumerate(header)]
        if len(set(columns)) < len(columns):
            dup = [c for c, n in Counter(columns).items() if n > 1]
            raise DatasetError(f"{name}: column name(s) {', '.join(dup)} appear twice in the header.")
        line = reader.line_num + 1
        for values in reader:
            if values and any(v.strip() for v in values):
                if len(values) != len(columns):
                    raise DatasetError(
                        f"{name}, line {line}: {len(values)} fields where the header has "
                        f"{len(columns)}. A text with a {'tab' if delimiter == chr(9) else 'comma'} "
                        "in it must be in double quotes."
                    )
                rows.append(dict(zip(columns, values, strict=True)))
                starts.append(line)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise DatasetError(
            f"{name}, line {reader.line_num}: {exc}. Check the quotes on that line: a quote inside "
            'a quoted text must be doubled ("").'
        ) from exc
    return Table(columns, rows, encoding, starts)


def _read_jsonl(text: str, encoding: str, name: str) -> Table:
    rows: list[dict[str, str]] = []
    starts: list[int] = []
    columns: dict[str, None] = {}
    for i, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit in a JSON string
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}, line {i}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f'{name}, line {i}: each line must be one JSON object, like {{"text": ...}}.')
        row = {str(k): "" if v is None else str(v) for k, v in obj.items()}
        columns.update(dict.fromkeys(row))
        rows.append(row)
        starts.append(i)
    if not rows:
        raise DatasetError(f"{name} is empty: it needs one JSON object per line.")
    return Table(list(columns), rows, encoding, starts)


def guess_columns(table: Table) -> tuple[str, str]:
    """(text column, label column): by name first, else the longest-on-average column for text
    and the column with the fewest distinct values (at least two) for labels."""
    cols = [c for c in table.columns if c.lower() != SPLIT_COLUMN]
    if len(cols) < 2:
        raise DatasetError(
            f"The file has {len(cols)} usable column(s) ({', '.join(cols) or 'none'}): it needs a "
            "text column and a label column."
        )

    def named(hints: Sequence[str], exclude: str | None = None) -> str | None:
        for hint in hints:
            for c in cols:
                if c != exclude and c.lower().strip() == hint:
                    return c
        return None

    sample = table.rows[:2000]
    mean_len = {c: sum(len(r.get(c, "")) for r in sample) / max(len(sample), 1) for c in cols}
    longest = max(cols, key=mean_len.__getitem__)
    hinted = [c for c in cols if c.lower().strip() in TEXT_HINTS]
    best_hinted = max(hinted, key=mean_len.__getitem__, default=None)
    text = best_hinted if best_hinted and mean_len[longest] <= 2 * mean_len[best_hinted] else longest
    distinct = {c: len({r.get(c, "") for r in sample}) for c in cols if c != text}
    label = named(LABEL_HINTS, exclude=text) or min(
        (c for c in distinct if distinct[c] >= 2), key=distinct.__getitem__, default=None
    )
    if label is None:
        raise DatasetError("No column has at least two different values to use as labels.")
    return text, label


@dataclass
class Examples:
    """What a text source holds before splitting: texts and labels, an optional given split per
    example, and what was set aside."""

    texts: list[str]
    labels: list[str]
    splits: list[str | None]
    skipped: list[tuple[str, str]]
    """(where, why) per example left out."""
    encoding: str
    columns: tuple[str, str] | None = None


def from_table(table: Table, text_column: str | None, label_column: str | None, name: str) -> Examples:
    guessed = guess_columns(table) if not (text_column and label_column) else (text_column, label_column)
    text_col, label_col = text_column or guessed[0], label_column or guessed[1]
    for role, col in (("text", text_col), ("label", label_col)):
        if col not in table.columns:
            raise DatasetError(
                f"{name} has no column '{col}' for the {role}s. Its columns: {', '.join(table.columns)}."
            )
    if text_col == label_col:
        raise DatasetError(f"The text and label columns must differ (both are '{text_col}').")
    split_col = next((c for c in table.columns if c.lower() == SPLIT_COLUMN), None)
    ex = Examples([], [], [], [], table.encoding, (text_col, label_col))
    for row, line in zip(table.rows, table.first_line, strict=True):
        text, label = row.get(text_col, ""), row.get(label_col, "").strip()
        where = f"{name}, line {line}"
        if not text.strip():
            ex.skipped.append((where, "empty text"))
            continue
        if not label:
            ex.skipped.append((where, "no label"))
            continue
        given = row.get(split_col, "").strip().lower() if split_col else ""
        split = SPLIT_VALUES.get(given)
        if given and split is None:  # blank: split here, with the rows that give none
            ex.skipped.append((where, f"split '{row.get(split_col, '')}' is not train, val or test"))
            continue
        ex.texts.append(text.strip())
        ex.labels.append(label)
        ex.splits.append(split)
    return ex


def from_folders(per_split: dict[str | None, Path], root: Path) -> Examples:
    """One ``.txt`` file per example in class folders (of split folders, when given)."""
    from .data import _candidate_files, _visible_children  # the image scan's own junk rules

    ex = Examples([], [], [], [], "utf-8")
    fallbacks: Counter[str] = Counter()
    for split, folder in per_split.items():
        for class_dir in (p for p in _visible_children(folder) if p.is_dir()):
            for f in _candidate_files(class_dir):
                where = f.relative_to(root).as_posix()
                if f.suffix.lower() != ".txt":
                    ex.skipped.append((where, "not a .txt file"))
                    continue
                text, encoding = decode(f.read_bytes(), where)
                if encoding != "utf-8":
                    fallbacks[encoding] += 1
                if not text.strip():
                    ex.skipped.append((where, "empty text"))
                    continue
                ex.texts.append(text.strip())
                ex.labels.append(class_dir.name)
                ex.splits.append(split)
    if fallbacks:
        ex.encoding = "utf-8; " + ", ".join(f"{n} file(s) as {e}" for e, n in fallbacks.items())
    return ex


def holds_text(folder: Path) -> bool:
    """Whether ``folder`` (after unwrapping) is a text source: one table file, or class folders
    whose files are mostly ``.txt``."""
    from .data import _is_junk

    if table_in(folder) is not None:
        return True
    inside = (f for f in folder.rglob("*") if f.is_file() and f.parent != folder)  # not a loose notes.txt
    files = list(itertools.islice((f for f in inside if not _is_junk(f.name)), 500))
    return bool(files) and sum(f.suffix.lower() == ".txt" for f in files) > len(files) / 2


def table_in(folder: Path) -> Path | None:
    """The table file that is ``folder``'s only content, or its lone subfolder's (a zipped
    ``data/reviews.csv``). A table beside class folders (``cats/ dogs/ labels.csv``) is an image
    dataset's side file, not texts."""
    from .data import _visible_children

    if not folder.is_dir():
        return None
    children = _visible_children(folder)
    if len(children) == 1 and is_table(children[0]):
        return children[0]
    if len(children) == 1 and children[0].is_dir():
        return table_in(children[0])
    return None


def leave_out_leaks(items: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Validation texts that training also holds, and test texts that training or validation
    hold, leave their split (a given split can leak; one made here never does). Warnings."""
    warnings = []
    seen = {text for text, _ in items.get("train", [])}
    for split, earlier in (("val", "training"), ("test", "training or validation")):
        rows = items.get(split, [])
        kept = [(t, y) for t, y in rows if t not in seen]
        if len(kept) < len(rows):
            items[split] = kept
            warnings.append(
                f"{len(rows) - len(kept)} {split} text(s) also appear in {earlier}; they were left out "
                f"of {split}, or its accuracy would reward memorising them."
            )
        seen |= {t for t, _ in kept}
    return warnings


def scan_texts(
    source: str,
    root: Path,
    kind: str,
    *,
    text_column: str | None,
    label_column: str | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> Dataset:
    """``data.scan_dataset`` for a text source already resolved to ``root`` (a table file or a
    folder): the same splits, checks and profile as for images."""
    from .archive import display_name
    from .data import _split_dirs, _stratified_split, balance_warnings

    table = root if is_table(root) else table_in(root)
    name = display_name(source) if kind != "sample" else source
    if table is not None:
        ex = from_table(read_table(table), text_column, label_column, name)
        layout = "table"
    else:
        splits = _split_dirs(root)
        ex = from_folders(dict(splits) if splits else {None: root}, root)
        layout = "split" if splits else ("sample" if kind == "sample" else "folders")
    classes = sorted(set(ex.labels))
    if not ex.texts:
        raise DatasetError(
            f"No usable texts in {name}" + (f" ({len(ex.skipped)} skipped)." if ex.skipped else ".")
        )
    if len(classes) < 2:
        raise DatasetError(
            f"Found only one label ({classes[0]}). A classifier needs at least two: add examples "
            f"of another class, e.g. 'not_{classes[0]}'."
        )
    index = {c: i for i, c in enumerate(classes)}
    given = {s for s in ex.splits if s is not None}
    if given and "train" not in given and None not in ex.splits:
        raise DatasetError(f"{name} gives {', '.join(sorted(given))} splits but no train split.")
    # Copies of a text split as one: both in training, or both held out (else validation
    # would reward memorising). Each distinct text is a unit, under its first occurrence's label.
    copies: dict[str, list[int]] = {}
    for i, text in enumerate(ex.texts):
        copies.setdefault(text, []).append(i)
    per: dict[str, dict[str, list[int]]] = {}
    for i, (label, split) in enumerate(zip(ex.labels, ex.splits, strict=True)):
        if split is not None or copies[ex.texts[i]][0] == i:
            per.setdefault(split or "train", {}).setdefault(label, []).append(i)
    if "val" not in per:
        per["train"], per["val"] = _stratified_split(per["train"], val_fraction, seed)  # type: ignore[arg-type]
    held_test = bool(test_fraction) and "test" not in per
    if held_test:
        per["train"], per["test"] = _stratified_split(per["train"], test_fraction, f"{seed}:test")  # type: ignore[arg-type]

    def members(i: int) -> list[int]:
        return [i] if ex.splits[i] is not None else copies[ex.texts[i]]

    items = {
        s: [
            (ex.texts[j], index[ex.labels[j]])
            for c in classes
            for i in sorted(rows.get(c, []))
            for j in members(i)
        ]
        for s, rows in per.items()
    }
    warnings: list[str] = []
    repeated = sum(len(v) - 1 for v in copies.values())
    if repeated:
        conflicting = sum(len({ex.labels[i] for i in v}) > 1 for v in copies.values())
        where = "given splits" if given else "the split made here"
        warnings.append(
            f"{repeated} text(s) are copies of another; in {where} no copy is held out while "
            "another trains"
            + (f" ({conflicting} text(s) carry different labels: check them)." if conflicting else ".")
        )
    warnings += leave_out_leaks(items)
    counts = {s: {c: sum(1 for _, y in items[s] if y == index[c]) for c in classes} for s in items}
    no_train = [c for c in classes if not counts["train"][c]]
    if no_train:
        raise DatasetError(
            f"Label(s) {', '.join(no_train)} have no training texts (all went to validation or test). "
            "Add at least two examples per label."
        )
    if not any(counts["val"].values()):
        raise DatasetError("There are no validation texts. Add at least two examples per label.")
    warnings += balance_warnings(classes, counts, noun="texts")
    from .data import Dataset, DatasetProfile, SkippedFile

    profile = DatasetProfile(
        source=str(source),
        root=str(root),
        layout=layout,
        classes=classes,
        counts=counts,
        skipped=[SkippedFile(where, why) for where, why in ex.skipped],
        warnings=warnings,
        val_fraction=val_fraction if "val" not in given else None,
        test_fraction=test_fraction if held_test else None,
        seed=seed,
        modality="text",
        encoding=ex.encoding,
        columns=list(ex.columns) if ex.columns else None,
    )
    return Dataset(profile=profile, items=items)


def table_columns(path: str | Path) -> tuple[list[str], str | None, str | None]:
    """A table's columns and the guessed (text, label) pair, for the Data page's pickers (None
    when no guess holds)."""
    table = read_table(Path(path))
    try:
        text, label = guess_columns(table)
    except DatasetError:
        return table.columns, None, None
    return table.columns, text, label


def text_examples(dataset: Dataset, per_class: int = 3, max_chars: int = 300) -> list[dict[str, str]]:
    """A few training texts per class, shortened, for the Data page (as thumbnails are for images)."""
    out: list[dict[str, str]] = []
    taken: Counter[int] = Counter()
    for text, label in dataset.items["train"]:
        if taken[label] < per_class:
            taken[label] += 1
            out.append({"class": dataset.classes[label], "text": shorten(text, max_chars)})
    return sorted(out, key=lambda row: row["class"])


def shorten(text: str, max_chars: int) -> str:
    """One line of at most ``max_chars`` (and an ellipsis), for a table of texts."""
    flat = " ".join(str(text).split())
    return flat[:max_chars] + ("…" if len(flat) > max_chars else "")
