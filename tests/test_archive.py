from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from tl_core.archive import extract_zip
from tl_core.errors import DatasetError


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../evil.txt", "'..'"),
        ("cats/../../evil.txt", "'..'"),
        ("/etc/evil.txt", "absolute path"),
        ("C:/evil.txt", "drive-letter"),
    ],
)
def test_path_tricks_refuse_the_whole_archive(tmp_path: Path, member: str, why: str) -> None:
    archive = _zip(tmp_path / "trick.zip", {"cats/a.png": b"x", member: b"owned"})
    dest = tmp_path / "out"
    with pytest.raises(DatasetError, match=why):
        extract_zip(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not dest.exists() or not any(dest.rglob("*"))  # nothing at all was written


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("cats/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        extract_zip(archive, tmp_path / "out")


def test_oversized_archive_refused_before_writing(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/zeros.bin", b"\0" * 5_000_000)  # compresses to ~5 kB
    assert archive.stat().st_size < 100_000
    dest = tmp_path / "out"
    with pytest.raises(DatasetError, match="limit"):
        extract_zip(archive, dest, max_bytes=1_000_000)
    assert not dest.exists() or not any(dest.rglob("*"))


def test_not_a_zip(tmp_path: Path) -> None:
    bad = tmp_path / "data.zip"
    bad.write_bytes(b"PK but not really")
    with pytest.raises(DatasetError, match="not a readable zip"):
        extract_zip(bad, tmp_path / "out")


def test_good_archive_extracts_once_into_a_fresh_folder(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "pets.zip", {"pets/cats/a.png": b"1", "pets/dogs/b.png": b"2"})
    first = extract_zip(archive, tmp_path / "out")
    assert (first / "pets" / "cats" / "a.png").read_bytes() == b"1"
    assert first.parent == tmp_path / "out"
    assert extract_zip(archive, tmp_path / "out") == first  # same content, same folder
    assert [p.name for p in (tmp_path / "out").iterdir()] == [first.name]  # no temp leftovers
