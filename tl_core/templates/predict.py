"""Classify images with this exported model. Needs only torch, timm and pillow.

python predict.py photo1.jpg photo2.png [--top-k 3]
"""

import argparse
import json
from pathlib import Path

import timm
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file
from timm.data import create_transform

HERE = Path(__file__).resolve().parent


def load():
    backbone = json.loads((HERE / "backbone.json").read_text())
    labels = json.loads((HERE / "labels.json").read_text())
    pre = json.loads((HERE / "preprocessing.json").read_text())
    model = timm.create_model(
        backbone["name"], pretrained=False, num_classes=len(labels), **backbone["model_kwargs"]
    )
    model.load_state_dict(load_file(str(HERE / "model.safetensors")))
    model.eval()
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    transform = create_transform(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items() if k in keys}
    )
    return model, labels, transform


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--top-k", type=int, default=3)
    args = ap.parse_args()
    model, labels, transform = load()
    for path in args.images:
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        with torch.no_grad():
            probs = model(transform(img)[None]).softmax(-1)[0]
        top = probs.topk(min(args.top_k, len(labels)))
        print(
            path
            + ": "
            + ", ".join(f"{labels[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        )


if __name__ == "__main__":
    main()
