from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from tl_core import archive as archive_mod
from tl_core.archive import RATIO_MIN_BYTES, display_name, extract_zip, save_files, save_upload
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


# --- zip bombs by ratio, size and count ------------------------------------------------------

_MiB = 1024**2


def _zeros_zip(path: Path, name: str, size: int) -> Path:
    """A zip of one deflated member of ``size`` zeros, written in chunks (about 1000:1)."""
    chunk = b"\0" * _MiB
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open(name, "w", force_zip64=size > 2**31) as fh,
    ):
        for _ in range(size // _MiB):
            fh.write(chunk)
        fh.write(b"\0" * (size % _MiB))
    return path


def _patch_central_dir(path: Path, *, compress_size: int | None = None, file_size: int | None = None) -> None:
    """Forge the size fields of a one-member, non-zip64 archive (central directory and local header)."""
    raw = bytearray(path.read_bytes())
    cd = raw.index(b"PK\x01\x02")
    if compress_size is not None:
        raw[cd + 20 : cd + 24] = struct.pack("<I", compress_size)
    if file_size is not None:
        raw[cd + 24 : cd + 28] = struct.pack("<I", file_size)
        raw[22:26] = struct.pack("<I", file_size)  # the local header, at offset 0
    path.write_bytes(bytes(raw))


def _nothing_written(dest: Path) -> bool:
    return not dest.exists() or not any(dest.rglob("*"))


def test_high_ratio_member_refused_from_headers_without_inflating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zeros_zip(tmp_path / "photos.zip", "cats/zero.bin", 1_200_000_000)
    assert archive.stat().st_size < 2_000_000  # a ~1 MB upload
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy_open(self: zipfile.ZipFile, name: object, *args: object, **kwargs: object) -> object:
        opened.append(str(name))
        return real_open(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile.ZipFile, "open", spy_open)
    dest = tmp_path / "out"
    with pytest.raises(
        DatasetError, match=r"member 'cats/zero\.bin' would inflate 1\.2 GB from 1\.\d MB"
    ) as exc:
        extract_zip(archive, dest)
    assert "which no image does" in str(exc.value)
    assert opened == []  # decided from the headers alone: not one byte inflated
    assert _nothing_written(dest)


def test_ratio_rule_spares_small_members(tmp_path: Path) -> None:
    archive = _zeros_zip(tmp_path / "flat.zip", "masks/blank.png", RATIO_MIN_BYTES)  # 1000:1, but small
    out = extract_zip(archive, tmp_path / "out")
    assert (out / "masks" / "blank.png").stat().st_size == RATIO_MIN_BYTES


def test_member_over_per_file_cap_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_mod, "MAX_MEMBER_BYTES", 64 * 1024)
    archive = _zip(tmp_path / "big.zip", {"cats/a.png": b"1", "cats/huge.tif": os.urandom(100_000)})
    dest = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"member 'cats/huge\.tif' would inflate 100\.0 kB, over the"):
        extract_zip(archive, dest)
    assert _nothing_written(dest)


def test_too_many_members_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_mod, "MAX_MEMBERS", 5)
    archive = _zip(tmp_path / "many.zip", {f"cats/{i}.png": b"x" for i in range(6)})
    with pytest.raises(DatasetError, match="holds 6 files, over the 5 limit"):
        extract_zip(archive, tmp_path / "out")


def test_forged_compressed_sizes_refused(tmp_path: Path) -> None:
    """Claiming more compressed bytes than the file holds is how overlapping-member bombs hide."""
    archive = _zip(tmp_path / "forged.zip", {"cats/a.png": b"1" * 1000})
    _patch_central_dir(archive, compress_size=10_000_000)
    with pytest.raises(DatasetError, match="forged"):
        extract_zip(archive, tmp_path / "out")


def test_header_understating_size_is_stopped_while_inflating(tmp_path: Path) -> None:
    """Declared 1 kB, inflates 64 MiB: zipfile stops at the declared size and the CRC fails."""
    archive = _zeros_zip(tmp_path / "liar.zip", "cats/a.png", 64 * _MiB)
    _patch_central_dir(archive, file_size=1000)
    dest = tmp_path / "out"
    with pytest.raises(DatasetError, match="liar.zip is damaged"):
        extract_zip(archive, dest)
    assert _nothing_written(dest)


def test_inflate_time_guard_catches_headers_that_slipped_past(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: if headers ever pass the checks, the bytes actually inflated are judged."""
    archive = _zeros_zip(tmp_path / "liar.zip", "cats/a.png", 64 * _MiB)
    monkeypatch.setattr(archive_mod, "check_zip", lambda path, max_bytes: zipfile.ZipFile(path).infolist())
    dest = tmp_path / "out"
    with pytest.raises(
        DatasetError, match=r"while unpacking, member 'cats/a\.png' inflated to over .* \(its header said"
    ):
        extract_zip(archive, dest)
    assert _nothing_written(dest)


def test_refusal_names_the_users_file_not_the_stored_one(tmp_path: Path) -> None:
    data = _zip(tmp_path / "x.zip", {"../evil.txt": b"owned"}).read_bytes()
    stored = save_upload("slip.zip", data, tmp_path / "uploads")
    prefix = stored.name.removesuffix("slip.zip")
    assert display_name(stored) == "slip.zip" and len(prefix) == 17
    with pytest.raises(DatasetError, match=r"^Refused slip\.zip: ") as exc:
        extract_zip(stored, tmp_path / "out")
    assert prefix not in str(exc.value) and "uploads" not in str(exc.value)


def test_display_name_leaves_ordinary_names_alone() -> None:
    assert display_name("/data/cats-and-dogs.zip") == "cats-and-dogs.zip"
    assert display_name(Path("deadbeef-data.zip")) == "deadbeef-data.zip"


def test_folder_upload_per_file_and_total_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_mod, "MAX_MEMBER_BYTES", 1000)
    with pytest.raises(DatasetError, match="'cats/huge.tif' is 2.0 kB, over the 1.0 kB per-file limit"):
        save_files([("cats/a.png", b"1"), ("cats/huge.tif", b"x" * 2000)], tmp_path / "uploads")
    with pytest.raises(DatasetError, match="over the .* GB limit"):
        save_files([("cats/a.png", b"x" * 600), ("cats/b.png", b"x" * 600)], tmp_path / "uploads", 1000)
    assert _nothing_written(tmp_path / "uploads")
