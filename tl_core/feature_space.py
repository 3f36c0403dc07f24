"""The feature space: where the backbone puts each validation image, before and after training.

``FeatureSnapshots`` (a training callback) saves the backbone's pooled features of the
validation images twice: when training starts (the pretrained features, or random ones for a
from-scratch run, which is a lesson in itself) and when it ends, with the best weights back.
Feature extraction never changes the backbone, so there one snapshot is both, taken from the
trainer's cached features at no cost. The Results page shows each as a 2-D PCA, coloured by
class: when the classes already form separate clouds before training, a new head on frozen
features is all it takes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .fsutil import write_atomic
from .runs import Run
from .training import MeasuringCallback, Trainer

FEATURES_FILE = "features.safetensors"
ERROR_LOG = "features-error.log"
MAX_POINTS = 500
"""Validation images in a snapshot, spread evenly over the split (it is ordered by class, so every
class keeps its share): plenty for a scatter, and 1.3 MB a snapshot for Lite0's 1280 features
in float16 (digits' 359 validation images: 0.9 MB)."""
BATCH_SIZE = 32
_FLOAT16_MAX = 65_000.0


@dataclass
class Snapshots:
    """A run's saved feature snapshots; rows follow ``paths``."""

    before: np.ndarray
    after: np.ndarray
    labels: np.ndarray
    """Class index of each row."""
    paths: list[str]
    classes: list[str]
    start: str
    """What training started from: ``pretrained`` or ``random`` (from scratch)."""
    unchanged: bool
    """The backbone never trained (feature extraction): ``before`` is ``after``."""


# ---- the file --------------------------------------------------------------------------------------


def save_snapshots(run: Run, snaps: Snapshots) -> None:
    """One safetensors file, written atomically; float16 halves it and PCA can't tell."""
    from safetensors.numpy import save

    def half(a: np.ndarray) -> np.ndarray:
        return np.clip(np.nan_to_num(a), -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)

    tensors = {"after": half(snaps.after), "labels": snaps.labels.astype(np.int64)}
    if not snaps.unchanged:
        tensors["before"] = half(snaps.before)
    meta = {
        "paths": json.dumps(snaps.paths),
        "classes": json.dumps(snaps.classes),
        "start": snaps.start,
        "unchanged": "1" if snaps.unchanged else "0",
    }
    write_atomic(run.dir / FEATURES_FILE, save(tensors, metadata=meta))


def load_snapshots(run: Run) -> Snapshots | None:
    """The run's snapshots; ``None`` when it has none or the file is unreadable."""
    from safetensors import safe_open

    path = run.dir / FEATURES_FILE
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            after = fh.get_tensor("after").astype(np.float32)
            unchanged = meta.get("unchanged") == "1"
            before = after if unchanged else fh.get_tensor("before").astype(np.float32)
            return Snapshots(
                before=before,
                after=after,
                labels=fh.get_tensor("labels"),
                paths=list(json.loads(meta["paths"])),
                classes=list(json.loads(meta["classes"])),
                start=meta.get("start", "pretrained"),
                unchanged=unchanged,
            )
    except Exception:  # a damaged or foreign file: the page says there is no snapshot
        return None


def missing_reason(run: Run) -> str:
    """Why a run has no snapshots, in the user's terms."""
    if (run.dir / ERROR_LOG).exists():
        return (
            f"Saving the feature space failed for this run (details in {ERROR_LOG} in the run "
            "folder). The trained model is not affected."
        )
    return (
        "No feature snapshots for this run: it was trained before the feature space view existed, "
        "or it stopped before training started."
    )


# ---- the picture -----------------------------------------------------------------------------------


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Each image's features scaled to length 1: the picture and the neighbours compare what
    the features point at, not how strongly. Fine-tuning re-measures batch-norm statistics,
    which gives every feature unit spread on the new images, and then lengths swamp Euclidean
    distances: on digits (fine-tune-top, 3 epochs at 64 px) same-class nearest neighbours fell
    from 71% to 42% by distance but rose from 74% to 78% by direction, while a linear probe
    stayed at 85%."""
    x = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def pca_frame(
    features: np.ndarray, labels: np.ndarray, classes: Sequence[str], paths: Sequence[str]
) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Each image's position on the two main directions of ``features`` (scikit-learn's PCA),
    and the share of the variance each direction shows.

    Each snapshot gets its own PCA rather than sharing the "after" one: fine-tuning changed the
    backbone, so the two snapshots are different spaces, and the "after" directions mean nothing
    in the random features a from-scratch run starts with. Its own two main directions are the
    most faithful flat picture of each space, and the explained variance says how much of it
    the picture holds.
    """
    from sklearn.decomposition import PCA

    x = unit_rows(features)
    n_components = min(2, x.shape[1]) if len(x) >= 2 else 0
    xy, ratio = np.zeros((len(x), 0)), [0.0, 0.0]
    if n_components:
        pca = PCA(n_components=n_components, random_state=0)
        xy = pca.fit_transform(x)
        ratio = [*np.nan_to_num(pca.explained_variance_ratio_).tolist(), 0.0]
    xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))  # one image or one feature: flat, not a crash
    frame = pd.DataFrame(
        {
            "x": xy[:, 0],
            "y": xy[:, 1],
            "class": [classes[int(i)] for i in labels],
            "file": [f"{Path(p).parent.name}/{Path(p).name}" for p in paths],
            "path": list(paths),
        }
    )
    return frame, (float(ratio[0]), float(ratio[1]))


def neighbour_agreement(features: np.ndarray, labels: np.ndarray) -> float | None:
    """Share of images whose most similar other image (by direction, in the full feature space)
    has the same class: near 1 when the classes already form separate clouds; ``None`` for
    fewer than two images."""
    if len(features) < 2:
        return None
    from sklearn.neighbors import NearestNeighbors

    x = unit_rows(features)
    _, idx = NearestNeighbors(n_neighbors=2).fit(x).kneighbors(x)
    labels = np.asarray(labels)
    # The nearest is the image itself unless a duplicate sits at distance 0; take the other one.
    other = np.where(idx[:, 0] == np.arange(len(x)), idx[:, 1], idx[:, 0])
    return float((labels[other] == labels).mean())


@dataclass
class View:
    """One picture of the feature space: its title and the features it shows."""

    title: str
    features: np.ndarray


def views(snaps: Snapshots) -> list[View]:
    """What to draw: one picture when the backbone never changed, else before and after."""
    if snaps.unchanged:
        kind = "Random" if snaps.start == "random" else "Pretrained"
        return [View(f"{kind} features (the backbone stays frozen)", snaps.after)]
    if snaps.start == "random":
        return [View("Before training: random weights", snaps.before), View("After training", snaps.after)]
    return [
        View("Before training: pretrained features", snaps.before),
        View("After fine-tuning", snaps.after),
    ]


GOOD_AGREEMENT = 0.8
"""Nearest neighbours of the same class this often: the clouds are clearly apart."""
CHANGE = 0.03
"""A change in agreement smaller than this is noise on a few hundred images."""


def reading(snaps: Snapshots, agreement: Sequence[float | None]) -> str:
    """What the pictures say, in a sentence or two; ``agreement`` follows ``views(snaps)``."""
    first = agreement[0]
    if first is None:
        return "Too few validation images to compare neighbours."
    same = f"the most similar other image is of the same class for {first:.0%} of images"
    kind = "random" if snaps.start == "random" else "pretrained"
    if snaps.unchanged:
        if first >= GOOD_AGREEMENT:
            return (
                f"Before any training, {same}: the {kind} features already separate your classes, "
                "which is why a new head on frozen features works."
            )
        return (
            f"Before any training, {same}: the {kind} features separate your classes only partly, "
            "and a frozen backbone can't improve them. Fine-tuning some layers may help."
        )
    last = agreement[-1]
    after = f"{last:.0%} after training" if last is not None else "unknown after training"
    if snaps.start == "random":
        if first >= GOOD_AGREEMENT:
            return (
                f"Even with random weights, {same}: your classes differ in something as plain as "
                f"colour or brightness; {after}."
            )
        return (
            f"Random weights group little yet ({first:.0%} same-class neighbours); training had to "
            f"build every feature from your images: {after}. Pretrained features start where "
            "this run had to arrive."
        )
    return f"Before training, {same}; {after}. {_verdict((last or 0.0) - first)}"


def _verdict(change: float) -> str:
    if change > CHANGE:
        return "Fine-tuning moved the backbone's features towards your classes."
    if change < -CHANGE:
        return (
            "Fine-tuning loosened how tightly the features group your classes; the trained head "
            "may still tell them apart, so judge by the validation accuracy above."
        )
    return "Fine-tuning changed the grouping little: the pretrained features did most of the work."


# ---- measuring ---------------------------------------------------------------------------------------


def spread(n: int, k: int = MAX_POINTS) -> list[int]:
    """At most ``k`` of the indices ``0..n-1``, evenly spaced, in order."""
    k = min(k, n)
    return [i * n // k for i in range(k)]


def pooled_features(
    model: Any,
    items: Sequence[tuple[str, int]],
    data_config: dict[str, Any],
    device: str = "cpu",
    channels_last: bool = False,
    on_batch: Callable[[int, int], bool] | None = None,
) -> tuple[np.ndarray, list[int]] | None:
    """The pooled pre-logit features (what the head sees) of ``items``, in eval mode (the
    model's mode is restored after), and the indices of the items that could be read.
    ``on_batch(done, total)`` returning ``True`` cancels (``None`` is returned)."""
    import torch

    from .images import ImageProblem, load_rgb
    from .modes import eval_mode
    from .preprocessing import eval_transform

    transform = eval_transform(data_config)
    size = int(data_config["input_size"][-1])
    feats: list[np.ndarray] = []
    kept: list[int] = []
    starts = range(0, len(items), BATCH_SIZE)
    with eval_mode(model), torch.no_grad():
        for done, start in enumerate(starts, 1):
            tensors = []
            for i in range(start, min(start + BATCH_SIZE, len(items))):
                try:
                    tensors.append(transform(load_rgb(items[i][0], draft_size=size)))
                except ImageProblem:
                    continue  # changed since the scan: leave it out of the picture
                kept.append(i)
            if tensors:
                x = torch.stack(tensors).to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                f = model.forward_head(model.forward_features(x), pre_logits=True)
                feats.append(f.float().cpu().numpy())
            if on_batch is not None and on_batch(done, len(starts)):
                return None
    dim = feats[0].shape[1] if feats else 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), kept


def backbone_fixed(trainer: Trainer) -> bool:
    """Only the head ever trains and batch-norm statistics stay frozen: the backbone's features
    at the end are exactly those at the start. Read from the planned phases, so it holds for
    any strategy that plans so."""
    from .freezing import HEAD

    return not trainer.cfg.train_bn and all(p.trainable == [HEAD] for p in trainer.phases)


class FeatureSnapshots(MeasuringCallback):
    """Saves ``features.safetensors``: pooled validation features at fit start and at fit end.
    Put it after ``BestWeights``, so "after" is the model that is saved.

    A failure here never fails the run: its traceback goes to ``features-error.log`` and the
    run simply has no feature-space view.
    """

    error_log = ERROR_LOG

    def __init__(
        self, run: Run, recorded_val: Sequence[tuple[str, int]] | None = None, max_points: int = MAX_POINTS
    ) -> None:
        super().__init__(run.dir)
        self.run = run
        self.recorded_val = recorded_val
        """The validation items as the app names them (on a Ray node, not where they are read)."""
        self.max_points = max_points
        self.rows: list[int] = []
        """The picked images' rows in the validation split."""
        self.items: list[tuple[str, int]] = []
        self.before: tuple[np.ndarray, list[int]] | None = None
        self.fixed = False

    def reset(self) -> None:
        self.before = None

    def _recorded_path(self, i: int) -> str:
        if self.recorded_val is None:
            return self.items[i][0]
        return self.recorded_val[self.rows[i]][0]

    def start(self, trainer: Trainer) -> None:
        val = trainer.dataset.items["val"]
        self.rows = spread(len(val), self.max_points)
        self.items = [tuple(val[i]) for i in self.rows]
        self.fixed = backbone_fixed(trainer)
        if not self.fixed:  # else the end's features are the start's: measure once
            self.before = self._measure(trainer, "before", cancellable=True)

    def end(self, trainer: Trainer) -> None:
        after = self._measure(trainer, "after", cancellable=False)
        before = after if self.fixed else self.before
        if after is None or before is None:
            return
        # Both passes read the same files; keep the images that both could read.
        common = sorted(set(before[1]) & set(after[1]))
        pick_b = {i: row for row, i in enumerate(before[1])}
        pick_a = {i: row for row, i in enumerate(after[1])}
        save_snapshots(
            self.run,
            Snapshots(
                before=before[0][[pick_b[i] for i in common]],
                after=after[0][[pick_a[i] for i in common]],
                labels=np.array([self.items[i][1] for i in common], dtype=np.int64),
                paths=[self._recorded_path(i) for i in common],
                classes=list(trainer.dataset.classes),
                start="random" if trainer.cfg.weights == "none" else "pretrained",
                unchanged=self.fixed,
            ),
        )

    def _cached(self, trainer: Trainer) -> tuple[np.ndarray, list[int]] | None:
        """From the run's cached features or maps: no pass over the images."""
        feats = trainer.pooled_features("val", self.rows)
        if feats is None:
            return None
        return feats.float().cpu().numpy(), list(range(len(self.items)))

    def _measure(self, trainer: Trainer, when: str, cancellable: bool) -> tuple[np.ndarray, list[int]] | None:
        cached = self._cached(trainer)
        if cached is not None:
            return cached
        on_batch = self.progress(trainer, f"reading validation features ({when} training)", cancellable)
        return pooled_features(
            trainer.model,
            self.items,
            trainer.data_config,
            trainer.device.device,
            trainer.device.channels_last,
            on_batch,
        )
