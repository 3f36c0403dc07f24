from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import make_class_folders, write_image
from tl_core.archive import save_upload
from tl_core.data import scan_dataset
from tl_core.errors import DatasetError
from tl_core.paths import uploads_root


def test_class_folders_are_split_stratified_and_deterministic(color_folders: Path) -> None:
    a = scan_dataset(color_folders, val_fraction=0.25, seed=3)
    b = scan_dataset(color_folders, val_fraction=0.25, seed=3)
    c = scan_dataset(color_folders, val_fraction=0.25, seed=4)
    assert a.profile.layout == "folders"
    assert a.classes == ["blue", "green", "red"]
    assert a.profile.counts["train"] == {"blue": 9, "green": 9, "red": 9}
    assert a.profile.counts["val"] == {"blue": 3, "green": 3, "red": 3}
    assert a.items == b.items
    assert a.items["val"] != c.items["val"]
    train_paths = {p for p, _ in a.items["train"]}
    assert not train_paths & {p for p, _ in a.items["val"]}


def test_given_split_is_used_as_is(split_folders: Path) -> None:
    ds = scan_dataset(split_folders)
    assert ds.profile.layout == "split"
    assert ds.profile.n_train == 16 and ds.profile.n_val == 6 and ds.profile.n_test == 4
    assert all("/val/" in p for p, _ in ds.items["val"])
    assert ds.profile.val_fraction is None


def test_bad_files_are_skipped_with_reasons_and_junk_ignored(color_folders: Path) -> None:
    (color_folders / "red" / "empty.png").write_bytes(b"")
    (color_folders / "red" / "notes.txt").write_text("hello")
    (color_folders / "green" / ".DS_Store").write_bytes(b"\0\0")
    (color_folders / "green" / "._green_000.png").write_bytes(b"resource fork")
    write_image(color_folders / "__MACOSX" / "red" / "x.png", (0, 0, 0), 0)
    write_image(color_folders / "blue" / ".hidden" / "x.png", (0, 0, 0), 0)
    good = (color_folders / "blue" / "blue_000.png").read_bytes()
    (color_folders / "blue" / "cut.png").write_bytes(good[: len(good) // 3])
    ds = scan_dataset(color_folders)
    reasons = {s.path: s.reason for s in ds.profile.skipped}
    assert set(reasons) == {"red/empty.png", "red/notes.txt", "blue/cut.png"}
    assert "empty" in reasons["red/empty.png"]
    assert "not an image" in reasons["red/notes.txt"]
    assert "truncated" in reasons["blue/cut.png"]
    assert ds.classes == ["blue", "green", "red"]  # __MACOSX is not a class
    assert ds.profile.n_train + ds.profile.n_val == 36


def test_single_class_is_a_clear_error(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "one", {"red": 5})
    with pytest.raises(DatasetError, match="only one class.*at least two"):
        scan_dataset(tmp_path / "one")


def test_class_without_usable_images_is_an_error(color_folders: Path) -> None:
    shutil.rmtree(color_folders / "blue")
    (color_folders / "blue").mkdir()
    (color_folders / "blue" / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="blue.*no usable image.*1 file"):
        scan_dataset(color_folders)


def test_no_class_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "flat" / "a.png", (1, 2, 3), 0)
    write_image(tmp_path / "flat" / "b.png", (1, 2, 3), 1)
    with pytest.raises(DatasetError, match="No class folders"):
        scan_dataset(tmp_path / "flat")


def test_missing_path_and_non_zip_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder, a .zip"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "data.xlsx").write_text("a,b")
    with pytest.raises(DatasetError, match="not a .zip, .csv, .tsv or .jsonl"):
        scan_dataset(tmp_path / "data.xlsx")


def test_imbalance_and_tiny_class_warnings(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "imb", {"red": 40, "green": 6})
    warnings = " ".join(scan_dataset(tmp_path / "imb").profile.warnings)
    assert "imbalanced" in warnings and "'red'" in warnings
    assert "Very small class" in warnings and "green (6)" in warnings


def test_balanced_data_has_no_warnings(color_folders: Path) -> None:
    assert scan_dataset(color_folders).profile.warnings == []


def test_zip_nested_one_level(tmp_path: Path, studio_home: Path, split_folders: Path) -> None:
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in split_folders.rglob("*.*"):
            zf.write(f, Path("my_dataset") / f.relative_to(split_folders))
        zf.writestr("__MACOSX/my_dataset/._junk", b"x")
    ds = scan_dataset(archive)
    assert ds.profile.layout == "split"
    assert ds.profile.n_train == 16
    assert Path(ds.profile.root).is_relative_to(studio_home / "uploads")


def test_digits_sample(studio_home: Path) -> None:
    ds = scan_dataset("digits")
    p = ds.profile
    assert p.layout == "sample" and p.classes == [str(i) for i in range(10)]
    assert p.n_train + p.n_val == 1797 and p.skipped == []
    assert p.suggested_image_size == 128
    d = p.to_dict()
    assert d["n_train"] == p.n_train and d["classes"] == p.classes


def test_errors_about_an_upload_name_the_users_zip(tmp_path: Path, studio_home: Path) -> None:
    archive = tmp_path / "built.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes.txt", b"no class folders here")
    stored = save_upload("slip.zip", archive.read_bytes(), uploads_root())
    with pytest.raises(DatasetError, match=r"No class folders found in slip\.zip\.") as exc:
        scan_dataset(stored)
    assert stored.name not in str(exc.value) and "uploads" not in str(exc.value)
