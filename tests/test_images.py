from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.images import ImageProblem, load_rgb


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "I", "F", "1"])
def test_every_mode_loads_as_rgb(tmp_path: Path, mode: str) -> None:
    img = Image.fromarray(np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)).convert(
        mode if mode not in ("I;16",) else "I"
    )
    if mode == "I;16":
        img = Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16))
    ext = {"CMYK": "jpg", "F": "tiff", "I": "tiff", "1": "bmp"}.get(mode, "png")
    path = tmp_path / f"img.{ext}"
    img.save(path)
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.size == (64, 48)


def test_sixteen_bit_keeps_contrast(tmp_path: Path) -> None:
    arr = np.zeros((10, 10), dtype=np.uint16)
    arr[:, 5:] = 60000
    Image.fromarray(arr).save(tmp_path / "deep.png")
    out = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert out[0, 0, 0] == 0 and out[0, 9, 0] == 255


def test_transparency_becomes_white(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (20, 40)


def test_draft_decodes_big_jpeg_small(tmp_path: Path) -> None:
    Image.new("RGB", (2000, 1600), (10, 200, 10)).save(tmp_path / "big.jpg")
    out = load_rgb(tmp_path / "big.jpg", draft_size=224)
    assert 224 <= min(out.size) < 1600


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"this is a text file, not a picture", "not an image"),
    ],
)
def test_unusable_files_have_reasons(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageProblem, match=reason):
        load_rgb(path)


def test_truncated_jpeg_is_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(
        tmp_path / "full.jpg", quality=95
    )
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageProblem, match="truncated"):
        load_rgb(tmp_path / "cut.jpg")


def test_absurd_dimensions_are_refused(tmp_path: Path) -> None:
    Image.new("L", (5000, 10)).save(tmp_path / "strip.png")
    with pytest.raises(ImageProblem, match="absurd dimensions"):
        load_rgb(tmp_path / "strip.png")


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")  # 81 MP, a few kB on disk
    with pytest.raises(ImageProblem, match="too large"):
        load_rgb(tmp_path / "bomb.png")
