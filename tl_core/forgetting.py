"""The forgetting meter: catastrophic forgetting, made visible.

Fine-tuning rewrites a pretrained backbone for the user's classes; what it knew about ImageNet
fades. To show how much, the meter keeps the weights' original 1000-class ImageNet classifier
aside and reads the backbone's pooled features through it, before and after training, on a
probe set: a dozen everyday photos shipped with the package plus up to 100 of the user's
validation images. The share of probe images whose ImageNet top-1 class is unchanged is the
"ImageNet knowledge kept". The trained model itself is never touched.

The probe photos are scikit-image's sample photos (public domain or CC0), written once into
``probe_photos/`` by ``write_sample_photos`` (320 px, ~360 KB in all), so the app needs no
scikit-image at run time and a scikit-image release can't change them.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .backbones import BackboneInfo, imagenet_classifier
from .config import TrainConfig
from .frozen_prefix import Suffix
from .fsutil import write_atomic
from .images import ImageProblem, load_rgb, thumbnail
from .modes import eval_mode
from .runs import Run
from .training import MeasuringCallback, Trainer

REPORT_FILE = "forgetting.json"
ERROR_LOG = "forgetting-error.log"
MAX_USER_IMAGES = 100
"""Validation images added to the probe. With the 12 photos, one pass of Lite0 at 224 px costs
~10 CPU-seconds (about 5 s on 2 idle cores); a fine-tune makes two or three passes."""
BATCH_SIZE = 32
PHOTOS_DIR = Path(__file__).with_name("probe_photos")
SAMPLE = "sample photo"
YOURS = "your image"

KEPT_HELP = (
    "Catastrophic forgetting: fine-tuning rewrites the backbone's weights for your classes, and "
    "what they learned from ImageNet's 1000 everyday classes fades. The original ImageNet "
    "classifier was kept aside; this is the share of probe images (sample photos and some of "
    "your validation images) whose ImageNet top-1 class, read through it, is the same after "
    "training as before (fine-tuned weights, pretrained batch-norm statistics). Feature "
    "extraction keeps 100% because the backbone never changes; a high backbone learning rate "
    "destroys it."
)
AS_SAVED_GAP = 0.1
"""Below ``kept`` by this much, the batch-norm statistics get their own sentence."""


@dataclass(frozen=True)
class SamplePhoto:
    name: str
    skimage: str
    """The ``skimage.data`` function it was written from."""
    credit: str


SAMPLE_PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto(name="cat", skimage="chelsea", credit="Stefan van der Walt, CC0"),
    SamplePhoto(name="coffee", skimage="coffee", credit="Rachel Michetti, CC0"),
    SamplePhoto(name="astronaut", skimage="astronaut", credit="NASA, public domain"),
    SamplePhoto(name="rocket", skimage="rocket", credit="SpaceX, public domain"),
    SamplePhoto(name="cameraman", skimage="camera", credit="Lav Varshney, CC0"),
    SamplePhoto(name="clock", skimage="clock", credit="Stefan van der Walt, public domain"),
    SamplePhoto(name="coins", skimage="coins", credit="Brooklyn Museum, no known restrictions"),
    SamplePhoto(name="hubble_deep_field", skimage="hubble_deep_field", credit="NASA, public domain"),
    SamplePhoto(name="retina", skimage="retina", credit="Mikael Häggström, CC0"),
    SamplePhoto(name="brick_wall", skimage="brick", credit="CC0Textures, CC0"),
    SamplePhoto(name="gravel", skimage="gravel", credit="CC0Textures, CC0"),
    SamplePhoto(name="tissue_stain", skimage="immunohistochemistry", credit="CMMI, no known restrictions"),
)


# ---- the report (read by the Results page and the LR-preset comparison) ----------------------


@dataclass
class ProbeRow:
    image: str
    """Name shown to the user: a sample photo's name or a validation file's ``class/file``."""
    source: str
    """``sample photo`` or ``your image``."""
    before: str
    """ImageNet top-1 class name before fine-tuning (e.g. "tabby")."""
    before_p: float
    after: str
    after_p: float

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass
class ForgettingReport:
    kept: float
    """Fraction 0..1 of probe images whose ImageNet top-1 is unchanged (``rows``' measure: the
    fine-tuned weights, with the pretrained batch-norm statistics; see ``ForgettingMeter``)."""
    n_probe: int
    by_construction: bool
    """Feature extraction: the backbone never changed, so 100% without measuring."""
    rows: list[ProbeRow]
    kept_as_saved: float | None = None
    """The same share for the model exactly as saved, with the batch-norm statistics that
    fine-tuning re-estimated on the user's images; ``None`` where it equals ``kept``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForgettingReport:
        rows = [ProbeRow(**r) for r in data.get("rows", [])]
        return cls(
            kept=float(data["kept"]),
            n_probe=int(data["n_probe"]),
            by_construction=bool(data["by_construction"]),
            rows=rows,
            kept_as_saved=None if data.get("kept_as_saved") is None else float(data["kept_as_saved"]),
        )


def save_report(run: Run, report: ForgettingReport) -> None:
    run.write_json(REPORT_FILE, report.to_dict())


def load_report(run: Run) -> ForgettingReport | None:
    """The run's forgetting report; ``None`` if it has none (or it is unreadable)."""
    data = run.read_json(REPORT_FILE)
    if not isinstance(data, dict):
        return None
    try:
        return ForgettingReport.from_dict(data)
    except (KeyError, TypeError, ValueError):
        return None


def missing_reason(run: Run) -> str:
    """Why a run has no report, in the user's terms."""
    if (run.dir / ERROR_LOG).exists():
        return (
            f"The forgetting meter failed on this run (details in {ERROR_LOG} in the run folder). "
            "The trained model is not affected."
        )
    info = run.backbone()
    weights = info.weights if info else None
    if run.summary().strategy == "from-scratch" or weights == "none":
        return (
            "This run started from random weights: it had no ImageNet knowledge to keep or forget, "
            "so there is nothing to measure."
        )
    if weights == "file":
        return (
            "This run's starting weights file has no 1000-class ImageNet classifier, so there is "
            "nothing to compare its predictions with."
        )
    return (
        "No forgetting measurement for this run: it was trained before the forgetting meter "
        "existed, or it stopped before its first epoch."
    )


def summary(report: ForgettingReport) -> str:
    """One or two sentences that say what the number means for this run."""
    if report.by_construction:
        return (
            "Feature extraction trained only the new head: the backbone is exactly the pretrained "
            "one, so it keeps all of its ImageNet knowledge by construction (not measured)."
        )
    same = sum(not r.changed for r in report.rows)
    photos = sum(r.source == SAMPLE for r in report.rows)
    count = (
        f"{same} of {report.n_probe} probe images ({photos} sample photos, "
        f"{report.n_probe - photos} of your validation images) keep their ImageNet top-1 class."
    )
    if report.kept >= 0.9:
        verdict = "The backbone still sees everyday photos much as it did before."
    elif report.kept >= 0.5:
        verdict = "Fine-tuning has shifted part of what the backbone knew about everyday photos."
    else:
        verdict = (
            "Catastrophic forgetting: most of what the backbone knew about everyday photos is gone. "
            "If validation accuracy suffered too, lower the backbone learning rate or freeze more layers."
        )
    text = f"{count} {verdict}"
    if report.kept_as_saved is not None and report.kept - report.kept_as_saved >= AS_SAVED_GAP:
        text += (
            f"\n\nAs saved, the model keeps only {report.kept_as_saved:.0%}: the layers that trained "
            "also re-measured their batch-norm statistics on your images. That is adaptation to "
            "your data, not forgotten weights: put the pretrained statistics back and "
            f"{report.kept:.0%} returns."
        )
    return text


def report_frame(report: ForgettingReport, run: Run | None = None, thumb_px: int = 64) -> Any:
    """The per-image table, changed rows first; with ``run``, an ``image`` column of thumbnails."""
    import pandas as pd

    paths = probe_paths(run) if run is not None else {}
    rows = sorted(report.rows, key=lambda r: not r.changed)  # stable: photos stay before yours
    return pd.DataFrame(
        {
            "image": [_data_uri(paths.get((r.source, r.image)), thumb_px) for r in rows],
            "name": [r.image for r in rows],
            "from": [r.source for r in rows],
            "before": [f"{r.before} ({r.before_p:.0%})" for r in rows],
            "after": [f"{r.after} ({r.after_p:.0%})" for r in rows],
            "class": ["changed" if r.changed else "kept" for r in rows],
        }
    )


def _data_uri(path: Path | None, size: int) -> str | None:
    if path is None:
        return None
    try:
        img = thumbnail(path, size)
    except ImageProblem:
        return None
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# ---- the probe set -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeImage:
    name: str
    source: str
    path: Path


def _user_name(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def probe_images(val_items: Sequence[tuple[str, int]], max_user: int = MAX_USER_IMAGES) -> list[ProbeImage]:
    """The sample photos, then up to ``max_user`` validation images spread evenly over the
    split (it is ordered by class, so every class is represented)."""
    photos = [ProbeImage(p.name, SAMPLE, PHOTOS_DIR / f"{p.name}.jpg") for p in SAMPLE_PHOTOS]
    n = len(val_items)
    k = min(max_user, n)
    picked = [val_items[i * n // k] for i in range(k)] if k else []
    return photos + [ProbeImage(_user_name(path), YOURS, Path(path)) for path, _ in picked]


def probe_paths(run: Run) -> dict[tuple[str, str], Path]:
    """(source, name) -> file, to show thumbnails next to a report's rows."""
    return {(p.source, p.name): p.path for p in probe_images(run.split().get("val", []))}


def imagenet_label(index: int) -> str:
    """ImageNet's short class name ("tabby", "espresso"): the first of its synonyms."""
    return _imagenet_info().index_to_description(index).split(",")[0].strip()


@functools.lru_cache(maxsize=1)
def _imagenet_info() -> Any:
    from timm.data import ImageNetInfo  # ships the class names: works offline

    return ImageNetInfo()


def backbone_untouched(cfg: TrainConfig) -> bool:
    """Feature extraction with frozen batch-norm statistics never changes a backbone weight."""
    return cfg.strategy == "feature-extraction" and not cfg.train_bn


def probe_data_config(data_config: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """The run's preprocessing at the pretrained model's own input size: a run may train at
    64 px, but ImageNet predictions are only sensible at the resolution the weights learned.
    Models with a fixed input size (ViTs) keep the size they were built for."""
    cfg = dict(data_config)
    pretrained = getattr(model, "pretrained_cfg", None) or {}
    if not pretrained.get("fixed_input_size") and pretrained.get("input_size"):
        cfg["input_size"] = tuple(pretrained["input_size"])
    return cfg


# ---- measuring ---------------------------------------------------------------------------------------


Top1 = dict[str, tuple[int, float]]
"""Probe image name -> (ImageNet class index, probability)."""


@dataclass
class Probe:
    """The probe images, decoded and preprocessed once for every pass over them."""

    images: list[ProbeImage]
    """The readable ones, in order."""
    inputs: torch.Tensor
    """Preprocessed, on the CPU in float16 (34 MB for 112 images at 224 px), so later passes
    skip decoding and resizing."""
    maps: torch.Tensor | None = None
    """The frozen prefix's output for ``inputs`` (``with_prefix_maps``), when the run trains
    only the top of the network: later passes run just the top."""

    @property
    def starts(self) -> range:
        return range(0, len(self.images), BATCH_SIZE)

    def batch(self, start: int, device: str, channels_last: bool) -> torch.Tensor:
        """The inputs from ``start``, as float32 on ``device``."""
        x = self.inputs[start : start + BATCH_SIZE].to(device).float()
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def with_prefix_maps(
    probe: Probe, prefix: nn.Module, device: str = "cpu", channels_last: bool = False
) -> Probe:
    """``probe`` with the frozen ``prefix`` run once over its images (in eval mode)."""
    with eval_mode(prefix):
        maps = [prefix(probe.batch(start, device, channels_last)) for start in probe.starts]
    return Probe(probe.images, probe.inputs, torch.cat(maps) if maps else None)


def load_probe(images: Sequence[ProbeImage], data_config: dict[str, Any]) -> Probe:
    """Decode ``images`` with ``data_config``'s eval transform; unreadable ones are left out."""
    from .preprocessing import eval_transform

    transform = eval_transform(data_config)
    size = int(data_config["input_size"][-1])
    kept, tensors = [], []
    for image in images:
        try:
            tensors.append(transform(load_rgb(image.path, draft_size=size)).half())
        except ImageProblem:
            continue  # deleted or changed since the scan: leave it out of the probe
        kept.append(image)
    inputs = torch.stack(tensors) if tensors else torch.empty(0, *data_config["input_size"])
    return Probe(images=kept, inputs=inputs)


@torch.no_grad()
def imagenet_top1(
    model: nn.Module,
    head: tuple[torch.Tensor, torch.Tensor],
    probe: Probe,
    device: str = "cpu",
    channels_last: bool = False,
    on_batch: Callable[[int, int], bool] | None = None,
    suffix: Suffix | None = None,
) -> Top1 | None:
    """ImageNet top-1 of each probe image: the backbone's pooled pre-logit features through the
    original classifier ``head``, in eval mode (the model's training mode is restored after).
    With ``suffix`` and ``probe.maps``, only the top of the network runs, on the maps.

    ``on_batch(done, total)`` returning ``True`` cancels (``None`` is returned).
    """
    weight, bias = (t.to(device) for t in head)
    out: Top1 = {}
    total = len(probe.starts)
    with eval_mode(model):
        for done, start in enumerate(probe.starts, 1):
            if suffix is not None and probe.maps is not None:
                features = suffix.pooled(probe.maps[start : start + BATCH_SIZE])
            else:
                x = probe.batch(start, device, channels_last)
                features = model.forward_head(model.forward_features(x), pre_logits=True)
            p, idx = nn.functional.linear(features.float(), weight, bias).softmax(-1).max(-1)
            names = [im.name for im in probe.images[start : start + BATCH_SIZE]]
            out |= {n: (int(i), float(q)) for n, i, q in zip(names, idx.tolist(), p.tolist(), strict=True)}
            if on_batch is not None and on_batch(done, total):
                return None
    return out


def compare(
    images: Sequence[ProbeImage], before: Top1, after: Top1, as_saved: Top1 | None = None
) -> ForgettingReport:
    """The report over the images measured both times (and ``as_saved``, when given)."""
    rows = [
        ProbeRow(
            image=im.name,
            source=im.source,
            before=imagenet_label(before[im.name][0]),
            before_p=before[im.name][1],
            after=imagenet_label(after[im.name][0]),
            after_p=after[im.name][1],
        )
        for im in images
        if im.name in before and im.name in after and (as_saved is None or im.name in as_saved)
    ]

    def share(top1: Top1) -> float:
        # By name, as the table shows them: "crane" (the bird, the machine) counts as kept.
        same = sum(r.before == imagenet_label(top1[r.image][0]) for r in rows)
        return same / max(len(rows), 1)

    return ForgettingReport(
        kept=share(after),
        n_probe=len(rows),
        by_construction=False,
        rows=rows,
        kept_as_saved=share(as_saved) if as_saved is not None else None,
    )


def by_construction() -> ForgettingReport:
    return ForgettingReport(kept=1.0, n_probe=0, by_construction=True, rows=[])


def batchnorm_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every batch-norm layer's running mean and variance, by buffer name."""
    return {
        f"{name}.{buf}": getattr(m, buf).detach().clone()
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for buf in ("running_mean", "running_var")
    }


@contextlib.contextmanager
def swapped_buffers(model: nn.Module, values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily give ``model`` these buffer values; its own are put back exactly after."""
    buffers = dict(model.named_buffers())
    saved = {k: buffers[k].detach().clone() for k in values}
    try:
        with torch.no_grad():
            for k, v in values.items():
                buffers[k].copy_(v)
        yield
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                buffers[k].copy_(v)


# ---- the callback ------------------------------------------------------------------------------------


class ForgettingMeter(MeasuringCallback):
    """Measures the probe's ImageNet top-1 at fit start and again at fit end, then writes
    ``forgetting.json``. Put it after ``BestWeights``, so "after" is the model that is saved.

    "After" uses the fine-tuned weights with the *pretrained* batch-norm running statistics:
    the unfrozen layers re-estimate those on the user's images during training, and on digits
    that alone flips every ImageNet prediction (fine-tune-top at the recommended LR: 0% kept as
    saved, 96% with the pretrained statistics put back; at 100x the LR: 0% and 1%). That is
    adaptation to a new domain, not forgotten weights, and it would hide what the learning rate
    did. The model exactly as saved is measured too (``kept_as_saved``) when its statistics changed.

    A failure here never fails the run: its traceback goes to ``forgetting-error.log`` and the
    run simply has no report.
    """

    error_log = ERROR_LOG

    def __init__(self, run: Run, info: BackboneInfo) -> None:
        super().__init__(run.dir)
        self.run = run
        self.backbone = info.name
        # BackboneInfo keeps a file's path in its detail: turn it back into the source it loaded.
        self.weights_source = info.weights_detail if info.weights == "file" else info.weights
        self.head: tuple[torch.Tensor, torch.Tensor] | None = None
        self.probe: Probe | None = None
        self.before: Top1 | None = None
        self.statistics: dict[str, torch.Tensor] = {}
        self.untouched = False
        self.suffix: Suffix | None = None

    def reset(self) -> None:
        self.head = self.before = self.probe = None
        self.untouched = False

    def end_after_stop(self) -> bool:
        return self.untouched  # "kept 100%, by construction" measures nothing

    def start(self, trainer: Trainer) -> None:
        if self.weights_source == "none":
            return
        self.head = imagenet_classifier(trainer.model, self.backbone, self.weights_source)
        if self.head is None:
            return
        if backbone_untouched(trainer.cfg):
            self.untouched = True  # nothing can change: skip both passes
            return
        images = probe_images(trainer.dataset.items["val"])
        self.probe = load_probe(images, probe_data_config(trainer.data_config, trainer.model))
        inputs = trainer.inputs
        if inputs is not None and inputs.prefix is not None and isinstance(inputs.net, Suffix):
            self.suffix = inputs.net  # the bottom never changes: run it once
            self.probe = with_prefix_maps(
                self.probe, inputs.prefix(), trainer.device.device, trainer.device.channels_last
            )
        self.statistics = batchnorm_statistics(trainer.model)
        self.before = self._measure(trainer, "before training", cancellable=True)

    def end(self, trainer: Trainer) -> None:
        if self.untouched:
            save_report(self.run, by_construction())
        elif self.probe is not None and self.before is not None:
            now = batchnorm_statistics(trainer.model)
            same_stats = all(torch.equal(now[k], v) for k, v in self.statistics.items())
            as_saved = None if same_stats else self._measure(trainer, "after training, as saved")
            with swapped_buffers(trainer.model, self.statistics):
                after = self._measure(trainer, "after training")
            assert after is not None  # not cancellable
            save_report(self.run, compare(self.probe.images, self.before, after, as_saved))

    def _measure(self, trainer: Trainer, when: str, cancellable: bool = False) -> Top1 | None:
        assert self.head is not None and self.probe is not None
        on_batch = self.progress(trainer, f"measuring ImageNet predictions ({when})", cancellable)
        return imagenet_top1(
            trainer.model,
            self.head,
            self.probe,
            trainer.device.device,
            trainer.device.channels_last,
            on_batch,
            self.suffix,
        )


# ---- for maintainers ---------------------------------------------------------------------------------


def write_sample_photos(folder: Path = PHOTOS_DIR, short_side: int = 320) -> list[Path]:
    """Write ``SAMPLE_PHOTOS`` from scikit-image (a test extra) as small JPEGs; run once.

    320 px on the short side covers every catalog backbone's resize before its centre crop
    (260 px / 0.875 for Lite2).
    """
    import numpy as np
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for photo in SAMPLE_PHOTOS:
        img = Image.fromarray(np.asarray(getattr(data, photo.skimage)()))
        scale = short_side / min(img.size)
        if scale < 1:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=88, optimize=True)
        path = folder / f"{photo.name}.jpg"
        write_atomic(path, buf.getvalue())
        written.append(path)
    return written
