"""The learning-rate range test (Leslie Smith's, as fastai's ``lr_find`` runs it) and the rules
that turn its curve into a suggestion.

One batch per step, the LR grows exponentially from ``START_LR`` to ``END_LR`` on the job's
throwaway model; the smoothed training loss shows where learning starts (the loss begins to
fall) and where it breaks (the loss shoots up). The rules are pure functions over the curve, so
tests check them on hand-made curves. A small implementation rather than torch-lr-finder 0.2.2:
its ``range_test`` takes no Stop, no progress hook, no cached-feature batches, and sets every
parameter group to one LR, losing the backbone's lower ratios.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import TrainConfig
from .freezing import HEAD, LayerGroup
from .runs import Run, RunStatus

if TYPE_CHECKING:
    import torch

    from .jobs import JobStatus
    from .runner import Prepared

START_LR = 1e-7
END_LR = 10.0
MAX_STEPS = 100
MIN_STEPS = 30
PASSES = 5
"""At most this many passes over a small train set: beyond that the falling loss shows the model
memorising its few images, not the LR working."""
DIVERGE_FACTOR = 4.0
"""The test ends once the running (EMA) loss is this many times its best (fastai's rule)."""
MIN_DROP = 0.05
"""A curve whose smoothed loss never falls 5% below where it started has no LR to suggest."""
MIN_POINTS = 10
"""Fewer points than this (after the trimmed ends) is not a curve to read."""
MIN_VALLEY = 5
"""The valley rule needs a descending stretch of at least this many steps."""
VALLEY_POSITION = 2 / 3
"""Where along the valley (in log LR) the suggestion sits: far enough down to learn fast."""
SMOOTH_FRACTION = 0.1
"""The centred moving average spans this fraction of the curve's points."""
MAX_LR = 0.5
"""The largest LR the freeze map accepts; a suggestion above it is capped."""
LR_FIND_FILE = "lr_find.json"
STAGE = "LR range test"


# -- the curve and its suggestion -------------------------------------------------------------------
def format_lr(lr: float) -> str:
    """``0.0003`` -> ``"3e-4"``: one significant digit, as LRs are chosen and spoken."""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def round_lr(lr: float) -> float:
    """The value ``format_lr`` shows, so the button applies exactly what it says."""
    return float(f"{lr:.0e}")


def lr_schedule(steps: int, start: float = START_LR, end: float = END_LR) -> list[float]:
    """``steps`` LRs, evenly spaced on a log axis from ``start`` to ``end``."""
    if steps < 2:
        return [start][:steps]
    ratio = (end / start) ** (1 / (steps - 1))
    return [start * ratio**i for i in range(steps)]


def plan_steps(batches_per_pass: int) -> int:
    """100 steps (fastai's default), fewer when the train set is so small that 100 batches
    would cycle it more than ``PASSES`` times, never fewer than ``MIN_STEPS``."""
    return max(MIN_STEPS, min(MAX_STEPS, PASSES * max(batches_per_pass, 1)))


def ema_factor(steps: int) -> float:
    """The stop rule's EMA factor: fastai's 0.98 at 100 steps, less for shorter tests, so its
    memory spans the same stretch of LRs."""
    return min(0.98, max(0.9, 1 - 2 / max(steps, 1)))


def smooth(losses: Sequence[float]) -> list[float]:
    """A centred moving average of the log-loss over ~10% of the points (Savitzky-Golay, linear).

    Centred rather than fastai's running EMA: an EMA lags the LR by its memory (measured on
    digits: its curve bottomed out at 2e-1 where the batches' loss did at 2e-2), which drags a
    suggestion upwards and draws a curve that doesn't follow its own dots. Log scale, so the
    blow-up at the end doesn't drown the points before it.
    """
    import numpy as np
    from scipy.signal import savgol_filter

    n = len(losses)
    if n < 3:
        return list(losses)
    window = min(max(5, int(n * SMOOTH_FRACTION) | 1), n if n % 2 else n - 1)
    values = np.log(np.maximum(np.asarray(losses, dtype=float), 1e-12))
    return [float(v) for v in np.exp(savgol_filter(values, window, 1, mode="nearest"))]


@dataclass
class Curve:
    """What the range test measured: one point per step."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    """Each batch's training loss, at that step's LR."""
    smoothed: list[float] = field(default_factory=list)
    """``smooth(losses)``: what the chart draws and the rules read."""
    ended: str = "end of range"
    """``end of range``, ``diverged`` (the loss blew up: the usual end) or ``stopped``."""


@dataclass
class Suggestion:
    lr: float | None
    """The head LR to train with; None when the curve offers none."""
    rule: str
    """``valley``, ``steepest`` or ``""`` (no suggestion)."""
    reason: str
    """Why this rule chose this LR, written for the learner."""
    index: int | None = None
    """The suggestion's point on the curve."""
    span: tuple[int, int] | None = None
    """Where the valley starts and ends on the curve (the valley rule only)."""


def valley(losses: Sequence[float]) -> tuple[int, int] | None:
    """The descent: from the last point still near the starting level (within 10% of the whole
    fall) to the first point near the bottom (90% of the fall). Read this way a noisy plateau
    before it can't stretch it, which fastai's longest descending subsequence lets happen
    (on a noisy least-squares test it began 3 decades before the real fall). None if the curve
    never falls."""
    bottom = min(range(len(losses)), key=losses.__getitem__)
    if bottom == 0:
        return None
    top = statistics.median(losses[: max(3, bottom // 4)])
    fall = top - losses[bottom]
    if fall <= 0:
        return None
    above = [i for i in range(bottom) if losses[i] >= top - 0.1 * fall]
    first = above[-1] + 1 if above else 0
    last = next(i for i in range(first, bottom + 1) if losses[i] <= top - 0.9 * fall)
    return first, last


def steepest(lrs: Sequence[float], losses: Sequence[float]) -> int | None:
    """The point where the loss falls fastest per decade of LR; None if it never falls."""
    slopes = [
        (losses[i + 1] - losses[i]) / (math.log10(lrs[i + 1]) - math.log10(lrs[i]))
        for i in range(len(losses) - 1)
    ]
    if not slopes or min(slopes) >= 0:
        return None
    return min(range(len(slopes)), key=slopes.__getitem__)


def suggest(lrs: Sequence[float], smoothed: Sequence[float]) -> Suggestion:
    """The valley rule, steepest descent when the valley is too short to read, none when the
    loss never goes down. As fastai does, the first 10% of the points and the last few (the
    blow-up) are left out."""
    n = len(smoothed)
    lo, hi = n // 10, n - min(5, n // 10)
    if hi - lo < MIN_POINTS:
        return Suggestion(
            None,
            "",
            f"The test ended after {n} steps, too few to read a curve from: the loss blew up "
            "almost at once. Check the data, or lower the batch size, and test again.",
        )
    xs, ys = list(lrs[lo:hi]), list(smoothed[lo:hi])
    drop = (ys[0] - min(ys)) / ys[0] if ys[0] > 0 else 0.0
    if drop < MIN_DROP:
        return Suggestion(
            None,
            "",
            f"The loss never clearly went down (at best {drop:.0%} below where it started), so no "
            "learning rate stands out. With very few training images the test has too little to "
            "learn from: keep the current LR, or add images and test again.",
        )
    found = valley(ys)
    if found is not None and found[1] - found[0] + 1 >= MIN_VALLEY:
        first, last = found
        i = first + round(VALLEY_POSITION * (last - first))
        lr = min(xs[i], MAX_LR)
        reason = (
            f"Valley: the loss falls from near its starting level at {format_lr(xs[first])} to near "
            f"its lowest at {format_lr(xs[last])}. {format_lr(lr)} lies two thirds of the way down: "
            "the model learns fast there, yet stays clear of the LRs where the loss turns back up."
        )
        return Suggestion(lr, "valley", reason + _capped(xs[i]), lo + i, (lo + first, lo + last))
    i = steepest(xs, ys)
    if i is None:  # unreachable after the drop check; kept so the rule can't return a rise
        return Suggestion(None, "", "The loss never went down during the test.")
    lr = min(xs[i], MAX_LR)
    steps = found[1] - found[0] + 1 if found else 0
    return Suggestion(
        lr,
        "steepest",
        f"Steepest descent: the loss dropped too abruptly for the valley rule (its whole fall took "
        f"{steps} step(s)), so the suggestion is where it falls fastest, at {format_lr(lr)}."
        + _capped(xs[i]),
        lo + i,
    )


def _capped(lr: float) -> str:
    if lr <= MAX_LR:
        return ""
    return (
        f" The curve pointed at {format_lr(lr)}, above {format_lr(MAX_LR)}, the largest LR the freeze "
        "map takes: the loss was still falling at LRs that rarely suit a whole training run."
    )


# -- the test itself --------------------------------------------------------------------------------
def range_test(
    step: Callable[[float], float],
    lrs: Sequence[float],
    *,
    stop: threading.Event | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Curve:
    """Run ``step(lr)`` (one batch at that head LR; returns its loss) for each LR in turn, until
    the loss blows up or ``stop`` is set (checked before every batch).

    "Blows up" is fastai's rule: a running average of the loss (an EMA with Adam's bias
    correction) passes ``DIVERGE_FACTOR`` times its best, or a loss is NaN. The running average
    only decides when to stop; the curve's ``smoothed`` is the centred ``smooth``.
    """
    beta = ema_factor(len(lrs))
    curve = Curve()
    avg, best = 0.0, math.inf
    for i, lr in enumerate(lrs):
        if stop is not None and stop.is_set():
            curve.ended = "stopped"
            break
        loss = step(lr)
        if not math.isfinite(loss):
            curve.ended = "diverged"
            break
        curve.lrs.append(lr)
        curve.losses.append(loss)
        if on_step is not None:
            on_step(i + 1, len(lrs))
        avg = beta * avg + (1 - beta) * loss
        running = avg / (1 - beta ** (i + 1))
        best = min(best, running)
        if running > DIVERGE_FACTOR * best:
            curve.ended = "diverged"
            break
    curve.smoothed = smooth(curve.losses)
    return curve


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[Any, Any]],
    loss_of: Callable[[Any, Any], torch.Tensor],
    scaler: Any = None,
) -> Callable[[float], float]:
    """A ``range_test`` step: every param group moves at ``lr`` times its ``lr_ratio`` (1 when
    unset), so a fine-tune's backbone groups keep their lower LRs relative to the head."""
    import torch

    def step(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_ratio", 1.0)
        x, y = next(batches)
        loss = loss_of(x, y)
        if not torch.isfinite(loss):
            return math.nan
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss.item()

    return step


def _cycle(loader: Any) -> Iterator[Any]:
    """Batches forever, reshuffled each pass (``itertools.cycle`` would replay the first pass
    and keep every batch in memory)."""
    while True:
        yield from loader


def _feature_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> Iterator[Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(y), generator=generator).to(y.device)
        for idx in order.split(batch_size):
            yield x[idx], y[idx]


# -- the job ------------------------------------------------------------------------------------------
@dataclass
class LRFindResult:
    """A finished (or stopped) range test: the job's result and the run folder's ``lr_find.json``."""

    status: str
    """``completed`` or ``stopped``."""
    curve: Curve
    suggestion: Suggestion
    steps_planned: int
    strategy: str
    lr_ratios: dict[str, float]
    """Each trainable group's LR as a fraction of the head's, as the test moved them."""
    tested_lr: float
    """The head LR of the config that was tested (the one a suggestion would replace)."""
    feature_cache: bool
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRFindResult:
        suggestion = dict(data["suggestion"])
        if suggestion.get("span") is not None:
            suggestion["span"] = tuple(suggestion["span"])
        return cls(**(data | {"curve": Curve(**data["curve"]), "suggestion": Suggestion(**suggestion)}))


def save_result(run: Run, result: LRFindResult) -> None:
    run.write_json(LR_FIND_FILE, result.to_dict())


def load_result(run_dir: str | Path) -> LRFindResult | None:
    """The run's saved test, or None if it has none (stopped before it began, or failed)."""
    data = Run(run_dir).read_json(LR_FIND_FILE)
    if not data:
        return None
    try:
        return LRFindResult.from_dict(data)
    except (KeyError, TypeError):
        return None


class _Report:
    """Progress and Stop between the job and the test: a few updates a second, not one per batch."""

    def __init__(self, reporter: Any, units_total: float):
        self.reporter = reporter
        self.units_total = units_total
        self.started = time.perf_counter()
        self.last = 0.0

    def at(self, units_done: float, force: bool = False, **fields: Any) -> None:
        """``units_done`` of the job's work (backbone batches) are done."""
        now = time.perf_counter()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        p = min(units_done / self.units_total, 1.0)
        elapsed = now - self.started
        eta = elapsed * (1 - p) / p if p >= 0.05 else None
        self.reporter.update(progress=p, eta_s=eta, **fields)


def run_lr_finder(prep: Prepared, reporter: Any, run: Run, time_limit_s: float | None = None) -> LRFindResult:
    """The job kind ``lr-find``: a range test on the job's config and trainable groups, saved to
    the run folder. Feature extraction tests the head on cached pooled features (seconds);
    other strategies test the whole model, each trainable group at its ratio of the head LR."""
    import torch

    from .backbones import classifier_name
    from .errors import TrainingFailed
    from .freezing import frozen_bn_modules, layer_groups, optimizer_param_groups, set_trainable
    from .paths import cache_root
    from .strategies import plan_phases
    from .training import Callback, Trainer
    from .training.inputs import HEAD_BATCH_COST

    cfg, model, device = prep.cfg.resolved(), prep.model, prep.device
    groups = layer_groups(model)
    phase = plan_phases(cfg, groups)[-1]
    base_lr = phase.lrs[HEAD]
    n_batches = math.ceil(len(prep.dataset.items["train"]) / cfg.batch_size)
    steps = plan_steps(n_batches)
    cached = cfg.uses_feature_cache
    report = _Report(reporter, n_batches + steps * HEAD_BATCH_COST if cached else steps)

    # The room's time limit applies as to training: past it, the test ends like a Stop.
    deadline = time.monotonic() + time_limit_s if time_limit_s else math.inf
    stop = threading.Event()

    def should_stop() -> bool:
        if reporter.stop.is_set() or time.monotonic() > deadline:
            stop.set()
        return stop.is_set()

    class Progress(Callback):
        def on_stage(self, trainer: Trainer, stage: str, done: int, total: int) -> None:
            # Loaded from the cache, features count as all their batches done.
            report.at(trainer.units_done, done == total, stage=stage, stage_done=done, stage_total=total)
            if should_stop():
                trainer.request_stop(RunStatus.STOPPED)

    trainer = Trainer(
        model,
        groups,
        cfg,
        prep.dataset,
        prep.info.data_config,
        device,
        [Progress()],
        feature_cache_dir=cache_root() / "features" if prep.info.weights != "none" else None,
        weights_id=prep.info.weights_detail,
    )
    model.to(device.device)
    if device.channels_last:
        model.to(memory_format=torch.channels_last)
    started = time.perf_counter()
    scaler = None
    if cached:
        set_trainable(model, groups, [HEAD])
        features = trainer.extract_features("train")  # None: stopped while caching (see below)
        head = model.get_submodule(classifier_name(model))
        head.train()
        optimizer = torch.optim.AdamW(head.parameters(), lr=base_lr, weight_decay=cfg.weight_decay)
        batches = _feature_batches(*features, cfg.batch_size, cfg.seed) if features else iter(())

        def loss_of(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return trainer.criterion(head(xb), yb)

    else:
        set_trainable(model, groups, phase.trainable, cfg.train_bn)
        model.train()
        for m in [] if cfg.train_bn else frozen_bn_modules(model, groups, phase.trainable):
            m.eval()
        optimizer = torch.optim.AdamW(optimizer_param_groups(model, groups, phase.lrs, cfg.weight_decay))
        for pg in optimizer.param_groups:
            pg["lr_ratio"] = pg["lr"] / base_lr
        batches = _cycle(trainer.loader("train", training=True))
        scaler = torch.amp.GradScaler(enabled=device.amp_dtype == torch.float16)

        def loss_of(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            xb, yb = trainer.to_device(xb), yb.to(device.device, non_blocking=True)
            with trainer.autocast():
                logits = model(xb)
            return trainer.criterion(logits.float(), yb)

    def on_step(done: int, total: int) -> None:
        units = n_batches + done * HEAD_BATCH_COST if cached else done
        report.at(units, done == 1, stage=STAGE, stage_done=done, stage_total=total)
        should_stop()  # checked before the next batch

    if trainer.should_stop:  # stopped while caching features
        curve = Curve(ended="stopped")
    else:
        reporter.update(stage=STAGE, stage_done=0, stage_total=steps)
        try:
            curve = range_test(
                optimizer_step(optimizer, batches, loss_of, scaler),
                lr_schedule(steps),
                stop=stop,
                on_step=on_step,
            )
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise TrainingFailed(trainer.oom_message("GPU")) from exc
    status = RunStatus.STOPPED if curve.ended == "stopped" else RunStatus.COMPLETED
    if status == RunStatus.COMPLETED:
        suggestion = suggest(curve.lrs, curve.smoothed)
    else:
        suggestion = Suggestion(
            None,
            "",
            f"Stopped after {len(curve.lrs)} of {steps} steps: run the test to its end for a suggestion.",
        )
    result = LRFindResult(
        status=status,
        curve=curve,
        suggestion=suggestion,
        steps_planned=steps,
        strategy=cfg.strategy,
        lr_ratios={name: lr / base_lr for name, lr in phase.lrs.items()},
        tested_lr=base_lr,
        feature_cache=cached,
        wall_s=time.perf_counter() - started,
    )
    save_result(run, result)
    return result


# -- what the UI needs ------------------------------------------------------------------------------
def head_lr(cfg: TrainConfig, groups: list[LayerGroup]) -> float:
    """The head LR the main phase of ``cfg`` trains with (a freeze-map override included)."""
    from .strategies import plan_phases

    return plan_phases(cfg.resolved(), groups)[-1].lrs[HEAD]


def apply_suggestion(cfg: TrainConfig, lr: float, groups: list[LayerGroup]) -> TrainConfig:
    """The freeze map's ``cfg`` with head LR ``lr``, every group's LR scaled by the same factor
    so the ratios the test used still hold. Only LRs the user typed (those that differ from the
    freeze map's defaults) stay as ``group_lrs``: a later change of strategy is not pinned to
    this one's numbers."""
    from .freezing import group_learning_rates

    factor = lr / head_lr(cfg, groups)
    names = [g.name for g in groups]
    defaults = group_learning_rates(groups, names, lr, cfg.backbone_lr_scale, cfg.lr_decay)
    typed = {
        name: value * factor
        for name, value in cfg.group_lrs.items()
        if name != HEAD and not math.isclose(value * factor, defaults.get(name, 0.0), rel_tol=0.01)
    }
    return replace(cfg, lr=lr, group_lrs=typed)


def trainable_changed(result: LRFindResult, cfg: TrainConfig, groups: list[LayerGroup]) -> bool:
    """Whether ``cfg`` trains other groups than the test moved: the suggestion may not fit it."""
    from .strategies import plan_phases

    return set(plan_phases(cfg.resolved(), groups)[-1].lrs) != set(result.lr_ratios)


def progress_text(snap: JobStatus) -> str:
    """The LR test's progress caption: caching features, or the step it is on."""
    if snap.status == RunStatus.QUEUED:
        where = f"number {snap.queue_position} in the queue" if snap.queue_position else "in the queue"
        return f"Waiting for the machine ({where}); the test starts automatically."
    if snap.stage == STAGE and snap.stage_total:
        return f"{snap.status}: testing learning rates, step {snap.stage_done} of {snap.stage_total}"
    stage = snap.stage or "starting"
    if snap.stage_total and stage.startswith(("caching", "scanning")):
        stage += f" {snap.stage_done}/{snap.stage_total}"
    return f"{snap.status}: {stage}"
