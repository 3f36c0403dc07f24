"""``Trainer``: runs a config's phases on a model, firing callbacks; knows nothing of UIs or files."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from .. import best_epoch, device_augment
from ..config import TrainConfig
from ..data import Dataset
from ..devices import DeviceSetup
from ..errors import TrainingFailed
from ..freezing import LayerGroup, report
from ..runs import RunStatus
from ..strategies import Phase, plan_phases
from ..text_models import is_text
from . import inputs as make_inputs
from .callbacks import Callback
from .feature_cache import FeatureCache
from .loop import NAN_CHECK_STEPS, Inputs, train_phase
from .recipe import class_weights, default_workers
from .records import EpochRecord, TrainResult


class Trainer:
    """Runs ``cfg``'s phases on ``model``. Create one per run.

    The inputs are chosen once (``inputs.choose``): cached pooled features when only the head
    trains, the frozen prefix's cached maps when the bottom never trains and nothing is
    augmented, else images. Then every epoch is the same loop over them.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: list[LayerGroup],
        cfg: TrainConfig,
        dataset: Dataset,
        data_config: dict[str, Any],
        device: DeviceSetup,
        callbacks: Sequence[Callback] = (),
        feature_cache_dir: Path | None = None,
        weights_id: str = "",
    ):
        """Args:
        feature_cache_dir: keep cached features and maps here across runs, so trying another
            LR on the same data and backbone skips the expensive forward passes.
        weights_id: identifies the pretrained weights in the cache key.
        """
        self.cfg = cfg.resolved()
        self.cache = FeatureCache(feature_cache_dir)
        self.weights_id = weights_id
        self.model, self.groups, self.dataset = model, groups, dataset
        self.data_config, self.device = data_config, device
        self.callbacks = list(callbacks)
        self.phases = plan_phases(self.cfg, groups)
        self.should_stop, self.stop_reason, self.phase_ended = False, RunStatus.COMPLETED, False
        self.epoch, self.phase = 0, None
        self.units_done, self.units_total = 0.0, 1.0
        self.history: list[EpochRecord] = []
        self.measuring, self.measuring_s = False, 0.0
        """Set by measuring callbacks while they run; their time is not training time."""
        self.check_every = NAN_CHECK_STEPS if device.device == "cuda" else 1
        self.reuse_frozen_prefix = True
        """Run the never-trained bottom of the network once (``frozen_prefix``); tests turn it off
        to compare with the full path."""
        self.fold_batchnorm = True
        """Fold batch norms into convolutions for the passes over never-trained layers."""
        self.sample: torch.Tensor | None = None
        """Two training images on the device, to check shortcuts on (``inputs.sample``)."""
        self.augment_on_device: bool | None = None
        """Pack decoded images on the device and augment there; None: on a GPU only."""
        self.keep_decoded = True
        """Decode each image once when training on images for more than an epoch (if they fit)."""
        self.decoded: dict[str, Any] = {}
        """``image_dataset.decode_all``'s arrays per split, when kept."""
        self.inputs: Inputs | None = None
        self.pixel_stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self.text_batches: Any = None
        """Texts: the tokenizing collate (``text_models.TextBatches``), made once."""
        labels = [label for _, label in dataset.items["train"]]
        weights = class_weights(labels, len(dataset.classes), self.cfg.class_weights)
        self.criterion = nn.CrossEntropyLoss(
            weight=weights.to(device.device) if weights is not None else None,
            label_smoothing=self.cfg.label_smoothing,
        )

    # -- control, used by callbacks ---------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        self.should_stop, self.stop_reason = True, reason

    def end_phase_early(self) -> None:
        """Early stopping: move on to the next phase, or finish if this was the last."""
        self.phase_ended = True
        if self.phase is self.phases[-1]:
            self.request_stop(RunStatus.EARLY_STOPPED)

    @property
    def progress(self) -> float:
        return min(self.units_done / self.units_total, 1.0)

    @property
    def epochs_total(self) -> int:
        return sum(p.epochs for p in self.phases)

    def fire(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # -- data -------------------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return self.cfg.workers if self.cfg.workers is not None else default_workers(self.device.device)

    def loader(self, split: str, training: bool) -> DataLoader:
        if is_text(self.data_config):
            return make_inputs.text_loader(self, split, training)
        return make_inputs.image_loader(self, split, training)

    def to_device(self, x: Any) -> Any:
        """A loader's batch on the device, as the network takes it: uint8 pixels from data
        workers (``inputs.image_loader``) are normalised here."""
        if isinstance(x, Mapping):  # a tokenized text batch
            return {k: v.to(self.device.device, non_blocking=True) for k, v in x.items()}
        x = x.to(self.device.device, non_blocking=True)
        if x.dtype == torch.uint8:
            if self.pixel_stats is None:
                self.pixel_stats = device_augment.mean_std(self.data_config, x.device)
            x = device_augment.normalize(x, self.data_config, self.pixel_stats)
        return (
            x.contiguous(memory_format=torch.channels_last)
            if self.device.channels_last and x.ndim == 4
            else x
        )

    def autocast(self, enabled: bool = True) -> Any:
        if self.device.amp_dtype is None or not enabled:
            return torch.autocast(self.device.device, enabled=False)
        return torch.autocast(self.device.device, dtype=self.device.amp_dtype)

    def extract_features(self, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Pooled pre-logit features of ``split`` (what the classifier sees), on the device; None
        if the user stopped."""
        return make_inputs.features(self, split)

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        start = time.perf_counter()
        self.model.to(self.device.device)
        if self.device.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.fire("on_fit_start")
        try:
            self.inputs = make_inputs.choose(self)
            if self.inputs is not None and not self.should_stop:
                # One scaler for the run: float16 gradients need scaling, bfloat16 don't.
                fp16 = self.device.amp_dtype == torch.float16 and self.inputs.autocast
                scaler = torch.amp.GradScaler(enabled=fp16)
                self.fire("on_train_start")
                for phase in self._phases():
                    train_phase(self, phase, self.inputs, scaler)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise TrainingFailed(self.oom_message("GPU")) from exc
        except (MemoryError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "can't allocate memory" not in str(exc):
                raise
            raise TrainingFailed(self.oom_message("RAM")) from exc
        result = self._result(time.perf_counter() - start)
        self.fire("on_fit_end", result)
        return result

    def oom_message(self, where: str) -> str:
        smaller = max(1, self.cfg.batch_size // 2)
        return (
            f"Ran out of {where} memory at batch size {self.cfg.batch_size}. Try batch size "
            f"{smaller}, a smaller image size, or a smaller backbone."
        )

    def _phases(self) -> Iterator[Phase]:
        """Phases in order, honouring stop and early-stop requests."""
        for phase in self.phases:
            if self.should_stop:
                return
            self.phase, self.phase_ended = phase, False
            self.fire("on_phase_start", phase)
            yield phase

    # -- after training ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, split: str = "val") -> torch.Tensor:
        """Class probabilities for ``split`` (in ``dataset.items`` order), on the CPU; from the
        cached features or maps when the run trained on them, so evaluation costs ~nothing."""
        self.model.eval()
        inputs = self.inputs
        if inputs is not None and split in inputs.cached:
            net, batches = inputs.net, make_inputs.tensor_loader(self, *inputs.cached[split], shuffle=False)
            autocast = inputs.autocast
        else:  # the whole network on images, as validation runs it
            net, batches, autocast = self.model, self.loader(split, training=False), True
        out = []
        for x, _ in batches:
            with self.autocast(autocast):
                out.append(net(self.to_device(x)).float().softmax(-1).cpu())
        return torch.cat(out)

    def pooled_features(self, split: str, rows: Sequence[int]) -> torch.Tensor | None:
        """Pooled features of ``rows`` of ``split`` from the cached inputs, as the model is now;
        None when the run has none for ``split`` (a full pass is then needed)."""
        return make_inputs.pooled_features(self, split, rows)

    def _result(self, wall_s: float) -> TrainResult:
        best = min(self.history, key=lambda r: best_epoch.key(r.val_loss, r.val_acc), default=None)
        params = report(self.model, self.groups)
        trainable = max((r.trainable_params for r in self.history), default=sum(p.trainable for p in params))
        status = self.stop_reason
        if status == RunStatus.EARLY_STOPPED and len(self.history) >= self.epochs_total:
            status = RunStatus.COMPLETED  # patience ran out on the very last epoch: nothing was cut
        return TrainResult(
            status=status,
            best_val_acc=best.val_acc if best else 0.0,
            best_val_loss=best.val_loss if best else math.nan,
            best_epoch=best.epoch if best else 0,
            epochs_run=len(self.history),
            wall_s=wall_s,
            trainable_params=trainable,
            total_params=sum(p.total for p in params),
            device=self.device.label,
            feature_cache=self.cfg.uses_feature_cache,
            history=list(self.history),
            inputs=self.inputs.kind if self.inputs else "images",
        )
