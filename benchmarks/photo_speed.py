"""Whole-process time of `tl-studio train` vs the hand-written loop on photo-sized JPEGs.

No real two-class photo set ships with the product, so this builds a stand-in of the same
shape as the one in the issue (250 train / 150 val, 500x375 JPEGs, two classes) from
scikit-image's sample photos with random crops, flips and colour shifts. Its accuracy says
little (the classes are easy); its timings are what matter. Prints one JSON line per tool.

Usage: python benchmarks/photo_speed.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance


def build(root: Path, n_train: int = 125, n_val: int = 75, seed: int = 0) -> None:
    from skimage import data

    sources = {"cat": data.chelsea(), "coffee": data.coffee()}
    rng = np.random.default_rng(seed)
    for cls, arr in sources.items():
        base = Image.fromarray(arr).convert("RGB").resize((1000, 750))
        for split, n in (("train", n_train), ("val", n_val)):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w = int(rng.integers(500, 1000))
                h = int(w * 0.75)
                x, y = int(rng.integers(0, 1000 - w + 1)), int(rng.integers(0, 750 - h + 1))
                img = base.crop((x, y, x + w, y + h)).resize((500, 375))
                if rng.random() < 0.5:
                    img = img.transpose(Image.FLIP_LEFT_RIGHT)
                img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.5, 1.5)))
                img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.7, 1.3)))
                img.save(folder / f"{cls}_{i:03d}.jpg", quality=90)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - t0, out.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=Path, help="build the data set here and keep it")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="photo-bench-"))
    if not (root / "train").exists():
        build(root)
    env = os.environ | {"TL_STUDIO_HOME": tempfile.mkdtemp(prefix="tl-bench-home-"), "HF_HUB_OFFLINE": "1"}
    here = Path(__file__).resolve().parent
    for name, cmd in (
        ("tl-studio", [sys.executable, "-m", "tl_core.cli", "train", str(root), "--json"]),
        ("hand-written", [sys.executable, str(here / "handwritten_baseline.py"), str(root)]),
    ):
        seconds, last = timed(cmd, env)
        result = json.loads(last)
        print(
            json.dumps({"tool": name, "process_s": round(seconds, 2), "best_val_acc": result["best_val_acc"]})
        )


if __name__ == "__main__":
    main()
