"""Turn any image file a user is likely to have into an RGB ``PIL.Image``.

One loader for scanning, training, evaluation and prediction, so that a file that scans fine
also trains fine.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000
"""Bigger than any camera photo; bigger files are refused rather than risking memory."""
MAX_ASPECT = 50.0
"""A 1x5000 strip is not a photo of anything a classifier should learn from."""

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageProblem(ValueError):
    """Why one file can't be used; the message is shown next to the file name."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Normalise every mode Pillow can open (CMYK, P, I;16, LA, RGBA...) to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels become white, as most viewers show them, not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_rgb(source: str | Path | bytes, draft_size: int | None = None) -> Image.Image:
    """Open, validate and decode a file (or uploaded bytes) as RGB with EXIF orientation applied.

    Args:
        draft_size: if set, let the JPEG decoder skip detail below this size; decoding a
            12 MP photo at 1/8 scale is ~20x faster and loses nothing at 224 px.

    Raises:
        ImageProblem: with a short reason (empty, not an image, truncated, too large...).
    """
    if isinstance(source, bytes):
        size, opened = len(source), io.BytesIO(source)
    else:
        opened = Path(source)
        try:
            size = opened.stat().st_size
        except OSError as exc:
            raise ImageProblem(f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageProblem("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as img:
                _check_dimensions(img.size)
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                img.load()
                img = ImageOps.exif_transpose(img) or img
                return _to_rgb(img)
    except ImageProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem(f"image too large (over {MAX_PIXELS // 1_000_000} megapixels)") from exc
    except UnidentifiedImageError as exc:
        raise ImageProblem("not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageProblem(f"corrupt or truncated image ({exc})") from exc


def _check_dimensions(size: tuple[int, int]) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageProblem(f"absurd dimensions {w}x{h}")
    if w * h > MAX_PIXELS:
        raise ImageProblem(f"image too large ({w}x{h}, over {MAX_PIXELS // 1_000_000} megapixels)")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise ImageProblem(f"absurd dimensions {w}x{h} (aspect ratio over {MAX_ASPECT:.0f}:1)")


def thumbnail(source: str | Path, size: int) -> Image.Image:
    """A preview at most ``size`` px; tiny images (8x8 digits) are enlarged pixel-sharp."""
    img = load_rgb(source, draft_size=size)
    img.thumbnail((size, size))
    if max(img.size) < size:
        scale = size // max(img.size)
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img
