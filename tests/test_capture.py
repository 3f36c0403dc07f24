"""Camera capture sets (tl_core.capture): names that can't escape the folder, photos stored
once and atomically, and an "enough to train" rule that agrees with the dataset scanner; then
the Data page's camera source under AppTest (the browser test drives the real camera)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import COLORS, tiny_config
from tl_core.capture import (
    CAPTURE_DIR,
    MAX_PHOTO_BYTES,
    CaptureSet,
    check_class_name,
    min_photos,
    summarize,
)
from tl_core.data import scan_dataset
from tl_core.errors import DatasetError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def photo(seed: int, fmt: str = "JPEG", color: tuple[int, int, int] = COLORS["red"]) -> bytes:
    """A webcam-like frame: a colour plus noise, so every seed gives different bytes."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color)[None, None, :] + rng.normal(0, 25, (24, 32, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def blank_frame() -> bytes:
    """What a click gets before the camera's picture arrives: a black frame."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 24)).save(buf, format="JPEG")
    return buf.getvalue()


def filled(root: Path, counts: dict[str, int]) -> CaptureSet:
    cs = CaptureSet(root)
    seed = 0
    for cls, n in counts.items():
        cs.add_class(cls)
        for _ in range(n):
            cs.add_photo(cls, photo(seed, color=COLORS["red"] if seed % 2 else COLORS["blue"]))
            seed += 1
    return cs


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- names -------------------------------------------------------------------------------------------
def test_class_names_are_cleaned() -> None:
    assert check_class_name("  thumbs   up ") == "thumbs up"
    assert check_class_name("chat_noir-2") == "chat_noir-2"
    assert check_class_name("été") == "été"  # any script's letters


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "Type a name"),
        ("   ", "Type a name"),
        ("../escape", "can't be a class name"),
        ("a/b", "can't be a class name"),
        ("a\\b", "can't be a class name"),
        (".hidden", "can't be a class name"),
        ("cat.jpg", "can't be a class name"),
        ("-dash-first", "can't be a class name"),
        ("train", "scanner treats specially"),
        ("Validation", "scanner treats specially"),
        ("__MACOSX", "scanner treats specially"),
        ("x" * 41, "at most 40"),
        ("CAT", "already a class called"),
    ],
)
def test_bad_class_names_are_refused_with_a_reason(name: str, why: str) -> None:
    with pytest.raises(DatasetError, match=why):
        check_class_name(name, ["cat"])


def test_classes_are_created_renamed_and_deleted(tmp_path: Path) -> None:
    cs = CaptureSet.in_uploads(tmp_path)
    assert cs.root == tmp_path / CAPTURE_DIR and cs.classes() == []
    assert cs.add_class(" thumbs  up") == "thumbs up"
    cs.add_class("fist")
    assert cs.classes() == ["fist", "thumbs up"]  # sorted, like the scanner's labels
    with pytest.raises(DatasetError, match="already"):
        cs.add_class("Fist")
    with pytest.raises(DatasetError, match="already"):
        cs.rename_class("fist", "THUMBS UP")
    cs.add_photo("fist", photo(1))
    assert cs.rename_class("fist", "open hand") == "open hand"
    assert cs.counts() == {"open hand": 1, "thumbs up": 0}  # the photo moved with its class
    assert cs.rename_class("open hand", "open hand") == "open hand"  # unchanged is fine
    assert cs.delete_class("open hand") == 1
    assert cs.classes() == ["thumbs up"]
    with pytest.raises(DatasetError, match="no class called"):
        cs.rename_class("open hand", "x")


def test_a_crafted_class_never_reaches_a_path(tmp_path: Path) -> None:
    cs = filled(tmp_path / "set", {"cat": 1})
    (tmp_path / "outside").mkdir()
    for bad in ("..", "../outside", "/tmp", "cat/../.."):
        with pytest.raises(DatasetError, match="no class called"):
            cs.add_photo(bad, photo(2))
        with pytest.raises(DatasetError):
            cs.delete_class(bad)
    assert (tmp_path / "outside").is_dir() and files(tmp_path / "outside") == []


# -- photos ------------------------------------------------------------------------------------------
def test_photos_are_kept_as_taken_and_stored_once(tmp_path: Path) -> None:
    cs = filled(tmp_path, {"cat": 0})
    jpeg, png = photo(1), photo(2, "PNG")
    first, added = cs.add_photo("cat", jpeg)
    again, added_again = cs.add_photo("cat", jpeg)  # the same frame submitted twice
    assert (added, added_again) == (True, False)
    assert first == again and first.name.endswith(".jpg")
    assert Path(first.path).read_bytes() == jpeg  # no re-encoding of a JPEG
    assert cs.add_photo("cat", png)[0].name.endswith(".png")
    bmp, _ = cs.add_photo("cat", photo(3, "BMP"))  # other formats are stored as PNG
    assert bmp.name.endswith(".png") and Image.open(bmp.path).format == "PNG"
    assert cs.counts() == {"cat": 3}
    assert cs.photos("cat")[0].name == bmp.name  # newest first


def test_one_picture_never_gets_two_labels(tmp_path: Path) -> None:
    cs = filled(tmp_path, {"cat": 0, "dog": 0})
    cs.add_photo("cat", photo(1))
    with pytest.raises(DatasetError, match="already in 'cat'"):
        cs.add_photo("dog", photo(1))
    assert cs.counts() == {"cat": 1, "dog": 0}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty file"),
        (b"not an image at all", "not an image"),
        (photo(4)[:200], "corrupt or truncated"),
        (b"\xff" * (MAX_PHOTO_BYTES + 1), "over the 20 MB limit"),
        (blank_frame(), "blank"),
    ],
)
def test_bad_photos_are_refused_and_leave_nothing(tmp_path: Path, data: bytes, why: str) -> None:
    cs = filled(tmp_path, {"cat": 0})
    with pytest.raises(DatasetError, match=why):
        cs.add_photo("cat", data)
    assert files(tmp_path) == []  # no half-written file, no temp file


def test_deleting_a_photo(tmp_path: Path) -> None:
    cs = filled(tmp_path, {"cat": 2})
    gone = cs.photos("cat")[0]
    assert cs.delete_photo("cat", gone.name) is True
    assert cs.delete_photo("cat", gone.name) is False  # a second click finds it gone
    assert [p.name for p in cs.photos("cat")] != [gone.name] and cs.counts() == {"cat": 1}
    for bad in ("../../etc/passwd", "x.jpg", "", "0123456789abcdef.exe"):
        with pytest.raises(DatasetError, match="not a photo"):
            cs.delete_photo("cat", bad)


def test_thumbnails_are_small(tmp_path: Path) -> None:
    cs = filled(tmp_path, {"cat": 2})
    thumbs = cs.thumbnails("cat", size=16)
    assert len(thumbs) == 2 and all(max(img.size) <= 16 for _, img in thumbs)


# -- enough to train? --------------------------------------------------------------------------------
def test_summary_says_what_is_missing() -> None:
    assert "at least two classes" in summarize({}).problems[0]
    assert "Add a second class" in summarize({"cat": 5}).problems[0]
    short = summarize({"cat": 1, "dog": 0, "owl": 3})
    assert not short.ready
    assert "cat needs 1 more, dog needs 2 more" in short.problems[0]
    ok = summarize({"cat": 2, "dog": 12})
    assert ok.ready and ok.total == 14
    assert "cat: 2" in ok.hints[0] and "dog" not in ok.hints[0]  # only small classes are named
    assert ok.to_dict()["ready"] is True


def test_min_photos_follows_the_validation_fraction() -> None:
    assert min_photos(0.2) == 2
    assert min_photos(0.8) == 3  # round(2 * 0.8) = 2 would leave nothing to train on


@pytest.mark.parametrize(
    ("counts", "val_fraction"),
    [
        ({"cat": 2, "dog": 2}, 0.2),
        ({"cat": 1, "dog": 3}, 0.2),
        ({"cat": 2, "dog": 2}, 0.8),
        ({"cat": 3, "dog": 3}, 0.8),
        ({"cat": 5}, 0.2),
        ({"cat": 2, "dog": 0}, 0.2),
    ],
)
def test_ready_agrees_with_the_scanner(tmp_path: Path, counts: dict[str, int], val_fraction: float) -> None:
    """ "Ready" means the scanner takes the folder as it is, with a validation image per class."""
    cs = filled(tmp_path / "set", counts)
    ready = cs.summary(val_fraction).ready
    try:
        ds = scan_dataset(cs.root, val_fraction=val_fraction)
    except DatasetError:
        scanned_ok = False
    else:
        p = ds.profile
        scanned_ok = all(p.counts["val"][c] and p.counts["train"][c] for c in p.classes)
        assert p.classes == cs.classes() and p.n_train + p.n_val == sum(counts.values())
    assert ready == scanned_ok


def test_a_capture_set_trains_like_any_folder(tmp_path: Path) -> None:
    """Downstream sees ordinary data: a tiny model trains on it, labels in class order."""
    from tl_core.jobs import JobManager
    from tl_core.runs import Run

    cs = filled(tmp_path / "set", {"thumbs up": 4, "fist": 4})
    manager = JobManager(tmp_path / "runs")
    snap = manager.wait(manager.submit(tiny_config(cs.root, epochs=1)), timeout=60)
    assert snap.status == "completed", snap.error
    assert json.loads(Run(snap.run_dir).labels_path.read_text()) == ["fist", "thumbs up"]


# -- the Data page's camera source (AppTest: no real camera; the e2e test has one) -----------------------
@pytest.fixture
def data_page(studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    from streamlit.testing.v1 import AppTest

    import ui

    for var in ("TL_STUDIO_WORKSHOP", "TL_STUDIO_ALLOW_PATHS"):
        monkeypatch.delenv(var, raising=False)

    def open_page() -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.session_state["data_choice"] = "Capture with the camera"
        at.run()
        at.switch_page("pages/data.py")
        at.run()
        assert not at.exception, at.exception
        return at

    yield open_page
    ui._manager.clear()


def test_data_page_names_classes_and_uses_the_set(data_page, studio_home: Path) -> None:
    at = data_page()
    assert any("at least two classes" in i.value for i in at.info)
    name_box = next(t for t in at.text_input if t.label == "New class name")
    name_box.input("cat")
    next(b for b in at.button if b.label == "Add class").click().run()
    assert not at.exception, at.exception
    assert any("Add a second class" in i.value for i in at.info)
    name_box = next(t for t in at.text_input if t.label == "New class name")
    name_box.input("cat")
    next(b for b in at.button if b.label == "Add class").click().run()
    assert any("already a class called 'cat'" in e.value for e in at.error)  # shown, not raised

    cs = CaptureSet.in_uploads(studio_home / "uploads")
    cs.add_class("dog")
    for i in range(3):  # photos taken in another tab (or before a refresh) are on disk
        cs.add_photo("cat", photo(10 + i))
        cs.add_photo("dog", photo(20 + i, color=COLORS["blue"]))
    at.run()
    assert at.radio(key="cap_class").options == ["cat", "dog"]
    assert any(m.value == "**cat**: 3 photos" for m in at.markdown)
    next(b for b in at.button if b.label == "Use these 6 photos").click().run()
    assert not at.exception, at.exception
    assert at.session_state["data_source"] == str(cs.root)
    assert any(s.value.startswith("**camera photos**: 2 classes, 6 usable images") for s in at.success)

    assert not any(b.label.startswith("Use these") for b in at.button)  # in use: no button
    at.text_input(key="cap_rename_dog").input("wolf")
    at.button(key="cap_do_rename_dog").click().run()
    assert not at.exception, at.exception
    assert cs.classes() == ["cat", "wolf"] and at.radio(key="cap_class").options == ["cat", "wolf"]
    assert any(m.value == "**wolf**" for m in at.markdown)  # the scan's examples: rescanned

    # Deleting down to one photo of a class: the set is no longer the data, and says why.
    deletes = [b for b in at.button if (b.key or "").startswith("cap_del_cat_")]
    deletes[0].click().run()
    deletes = [b for b in at.button if (b.key or "").startswith("cap_del_cat_")]
    deletes[0].click().run()
    assert not at.exception, at.exception
    assert cs.counts() == {"cat": 1, "wolf": 3}
    assert "data_source" not in at.session_state
    assert any("cat needs 1 more" in i.value for i in at.info)

    # Deleting the class being photographed: the camera moves on to one that exists.
    assert at.radio(key="cap_class").value == "cat"
    at.button(key="cap_drop_cat").click().run()
    assert not at.exception, at.exception
    assert cs.classes() == ["wolf"] and at.radio(key="cap_class").value == "wolf"
    assert any("Add a second class" in i.value for i in at.info)
