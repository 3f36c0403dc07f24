"""``tl-studio bench``: the seed tutorials' plain PyTorch loop and the engine, on the same data
and backbone, in one process, so a speed claim is one command anyone can rerun.

The tutorial recipe is what the PyTorch and Keras transfer-learning tutorials teach: torchvision
transforms, a ``DataLoader`` over the images, and a full forward pass every epoch. Feature
extraction freezes everything but the new head; fine-tune-top also unfreezes the top two layer
groups, with AdamW at 1e-5 for them and 1e-3 for the head. Both sides get the same split, the
same pretrained weights, the same image size and the same number of epochs, and no
augmentation.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("feature-extraction", "fine-tune-top")
TUTORIAL_LRS = {"backbone": 1e-5, "head": 1e-3}


@dataclass
class Measure:
    """One recipe's run: times, accuracy and memory."""

    recipe: str
    """``tutorial``, ``engine`` (its caches cold: the first run on this data) or ``engine-warm``
    (the same run again: cached features or maps are read from disk)."""
    strategy: str
    wall_s: float
    """From building the model to the last epoch's evaluation (the engine: its whole job)."""
    epoch_s: list[float]
    best_val_acc: float
    peak_rss_mb: float


@dataclass
class BenchResult:
    data: str
    backbone: str
    image_size: int
    epochs: int
    n_train: int
    n_val: int
    measures: list[Measure] = field(default_factory=list)

    def speedup(self, strategy: str, recipe: str = "engine") -> float | None:
        """The tutorial's wall time over ``recipe``'s, for ``strategy``."""
        by = {m.recipe: m for m in self.measures if m.strategy == strategy}
        if {"tutorial", recipe} <= set(by) and by[recipe].wall_s > 0:
            return by["tutorial"].wall_s / by[recipe].wall_s
        return None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        strategies = dict.fromkeys(m.strategy for m in self.measures)
        out["speedup"] = {s: self.speedup(s) for s in strategies}
        out["speedup_warm"] = {s: self.speedup(s, "engine-warm") for s in strategies}
        return out


@contextmanager
def scratch_home() -> Iterator[None]:
    """A temporary ``TL_STUDIO_HOME`` for the block, put back afterwards."""
    import os

    previous = os.environ.get("TL_STUDIO_HOME")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TL_STUDIO_HOME"] = tmp
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("TL_STUDIO_HOME", None)
            else:
                os.environ["TL_STUDIO_HOME"] = previous


@contextmanager
def peak_rss() -> Iterator[list[float]]:
    """Samples this process's resident memory every 50 ms; the list holds the peak in MB."""
    import psutil

    proc, peak, done = psutil.Process(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
            done.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def tutorial(
    strategy: str,
    items: dict[str, list[tuple[str, int]]],
    n_classes: int,
    backbone: str,
    weights: str,
    image_size: int,
    epochs: int,
    batch_size: int,
    catalog_only: bool = True,
) -> Measure:
    """The tutorial loop (module docstring), timed."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from .backbones import create_backbone
    from .freezing import HEAD, layer_groups, set_trainable, top_groups

    class Files(torch.utils.data.Dataset):
        def __init__(self, rows: Sequence[tuple[str, int]], tf: Any):
            self.rows, self.tf = rows, tf

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> tuple[Any, int]:
            path, label = self.rows[i]
            return self.tf(Image.open(path).convert("RGB")), label

    with peak_rss() as peak:
        start = time.perf_counter()
        torch.manual_seed(0)
        model, info = create_backbone(backbone, n_classes, weights, image_size, catalog_only=catalog_only)
        cfg = info.data_config
        tf = transforms.Compose(
            [
                transforms.Resize(int(image_size / cfg.get("crop_pct", 0.875))),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(cfg["mean"], cfg["std"]),
            ]
        )
        train = torch.utils.data.DataLoader(Files(items["train"], tf), batch_size, shuffle=True)
        val = torch.utils.data.DataLoader(Files(items["val"], tf), batch_size)
        groups = layer_groups(model)
        unfrozen = top_groups(groups, 2) if strategy == "fine-tune-top" else []
        set_trainable(model, groups, [HEAD, *unfrozen])
        head = [model.get_parameter(n) for g in groups if g.name == HEAD for n in g.params]
        body = [model.get_parameter(n) for g in groups if g.name in unfrozen for n in g.params]
        groups_lr = [{"params": head, "lr": TUTORIAL_LRS["head"]}]
        if body:
            groups_lr.append({"params": body, "lr": TUTORIAL_LRS["backbone"]})
        optimizer = torch.optim.AdamW(groups_lr)
        criterion = torch.nn.CrossEntropyLoss()
        epoch_s, best = [], 0.0
        for _ in range(epochs):
            t0 = time.perf_counter()
            model.train()
            for x, y in train:
                loss = criterion(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in val:
                    correct += (model(x).argmax(1) == y).sum().item()
            best = max(best, correct / len(items["val"]))
            epoch_s.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
    return Measure("tutorial", strategy, wall, epoch_s, best, peak[0])


def engine(
    strategy: str,
    data: str,
    backbone: str,
    weights: str,
    image_size: int,
    epochs: int,
    batch_size: int,
    runs_dir: Path,
    catalog_only: bool = True,
    recipe: str = "engine",
) -> Measure:
    """The same run through the engine's ``JobManager``, in this process."""
    from .api import train
    from .jobs import JobManager

    manager = JobManager(runs_dir)
    try:
        with peak_rss() as peak:
            start = time.perf_counter()
            status = train(
                data,
                manager,
                strategy=strategy,
                backbone=backbone,
                weights=weights,
                image_size=image_size,
                epochs=epochs,
                batch_size=batch_size,
                augment="none",
                patience=epochs + 1,  # never ends early: the same epochs as the tutorial
                unfreeze_top=2,
                catalog_only=catalog_only,
            )
            wall = time.perf_counter() - start
    finally:
        manager.shutdown()
    history = status.history
    return Measure(
        recipe,
        strategy,
        wall,
        [float(h["seconds"]) for h in history],
        max(float(h["val_acc"]) for h in history),
        peak[0],
    )


def run_bench(
    data: str,
    backbone: str = "efficientnet_lite0",
    weights: str = "auto",
    image_size: int = 224,
    epochs: int = 2,
    batch_size: int = 32,
    strategies: Sequence[str] = STRATEGIES,
    catalog_only: bool = True,
) -> BenchResult:
    """Each strategy with the tutorial loop, then with the engine twice, all in a scratch studio
    home: the engine's caches start cold, then warm, and all train on the same copy of a sample
    or zip."""
    from .data import scan_dataset
    from .paths import runs_root

    with scratch_home():
        dataset = scan_dataset(data, seed=0)
        result = BenchResult(
            data, backbone, image_size, epochs, len(dataset.items["train"]), len(dataset.items["val"])
        )
        for strategy in strategies:
            result.measures.append(
                tutorial(
                    strategy,
                    dataset.items,
                    len(dataset.classes),
                    backbone,
                    weights,
                    image_size,
                    epochs,
                    batch_size,
                    catalog_only,
                )
            )
            for recipe in ("engine", "engine-warm"):
                result.measures.append(
                    engine(
                        strategy,
                        data,
                        backbone,
                        weights,
                        image_size,
                        epochs,
                        batch_size,
                        runs_root(),
                        catalog_only,
                        recipe,
                    )
                )
    return result


def report(result: BenchResult) -> str:
    """The table the CLI prints."""
    lines = [
        f"{result.data}: {result.n_train} train / {result.n_val} val, {result.backbone} at "
        f"{result.image_size} px, {result.epochs} epoch(s)",
        f"{'strategy':<20}{'recipe':<12}{'wall s':>8}{'s/epoch':>9}{'best val':>10}{'peak RSS MB':>13}",
    ]
    for m in result.measures:
        per_epoch = sum(m.epoch_s) / max(len(m.epoch_s), 1)
        lines.append(
            f"{m.strategy:<20}{m.recipe:<12}{m.wall_s:>8.1f}{per_epoch:>9.2f}{m.best_val_acc:>10.3f}"
            f"{m.peak_rss_mb:>13.0f}"
        )
    for strategy in dict.fromkeys(m.strategy for m in result.measures):
        cold, warm = result.speedup(strategy), result.speedup(strategy, "engine-warm")
        if cold is not None:
            again = f"; run again on the same data, {warm:.1f}x" if warm is not None else ""
            lines.append(
                f"{strategy}: the engine is {cold:.1f}x the tutorial loop (wall time, cold caches{again})"
            )
    return "\n".join(lines)
