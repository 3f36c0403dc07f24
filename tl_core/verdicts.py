"""Verdicts: what an experiment's finished runs measured, said in a few sentences.

Written only from the runs' own numbers (best accuracy, when it was reached, what ended each run,
the forgetting meter), so a verdict stays true whatever the numbers turn out to be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .best_epoch import kept_record
from .run_table import Curve, curve
from .runs import ACTIVE, RunStatus
from .ui_text import TIME_LIMIT

CLOSE = 0.02
"""Accuracies within 2 points are "about the same": a validation set of a few hundred images
moves by that much between seeds."""
LR_FACTOR = 100
"""The forgetting preset's "too high" learning rate, as a multiple of the recommended one."""
FEATURE_EXTRACTION, FINE_TUNE_TOP, FROM_SCRATCH = "feature extraction", "fine-tune top", "from scratch"
RECOMMENDED_LR, HIGH_LR = "recommended LR", f"{LR_FACTOR}× LR"


# -- what the finished runs measured -----------------------------------------------------------
@dataclass
class ExperimentRun:
    """One run of an experiment, live (from a job snapshot) or from its folder."""

    label: str
    run_id: str
    status: str
    history: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    """The ``TrainResult`` summary once finished (wall time, device, why it stopped)."""
    stage: str = ""
    error: str | None = None
    queue_position: int | None = None
    started_at: float | None = None
    lr: float | None = None
    kept: float | None = None
    """Forgetting experiments: fraction of probe images whose ImageNet answer was kept."""
    kept_detail: str = ""

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    @property
    def trained(self) -> bool:
        return bool(self.history)

    @property
    def stop_reason(self) -> str:
        """``completed``, ``early-stopped``, ``time-limit``, ``stopped``, or the run's status."""
        if self.stage == TIME_LIMIT:
            return RunStatus.TIME_LIMIT
        return (self.result or {}).get("status") or self.status

    @property
    def cut(self) -> bool:
        return self.stop_reason == RunStatus.TIME_LIMIT

    def curve(self) -> Curve:
        return curve(self.label, self.history, self.result)

    @property
    def best_acc(self) -> float:
        return float(kept_record(self.history, self.result)["val_acc"])

    @property
    def best_epoch(self) -> int:
        return int(kept_record(self.history, self.result)["epoch"])

    @property
    def seconds_to_best(self) -> float:
        c = self.curve()
        return c.seconds[c.epochs.index(self.best_epoch)]

    @property
    def train_s(self) -> float:
        return self.curve().seconds[-1]

    def seconds_to_reach(self, accuracy: float) -> float | None:
        """Training seconds until validation accuracy first reached ``accuracy``."""
        c = self.curve()
        return next((s for s, a in zip(c.seconds, c.val_acc, strict=True) if a >= accuracy), None)


def pct(x: float) -> str:
    return f"{x:.1%}"


def _points(x: float) -> str:
    return f"{abs(x) * 100:.1f} points"


def _dur(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def budget_text(seconds: float) -> str:
    """``30`` -> ``"30 s"``, ``120`` -> ``"2 min"``."""
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"


def _climbing(r: ExperimentRun) -> bool:
    """Its last epoch was its best, and better than its first: the budget ended a rise."""
    return (
        len(r.history) >= 2
        and r.best_epoch == r.history[-1]["epoch"]
        and r.best_acc > r.history[0]["val_acc"]
    )


def _ending(r: ExperimentRun, budget_s: float) -> str:
    n = len(r.history)
    epochs = f"{n} epoch{'s' if n != 1 else ''}"
    reason = r.stop_reason
    if reason == RunStatus.TIME_LIMIT:
        still = " while still improving" if _climbing(r) else ""
        return f"The {budget_text(budget_s)} budget cut it after {epochs}{still}."
    if reason == RunStatus.EARLY_STOPPED:
        return f"Early stopping ended it after {epochs}: validation loss had stopped improving."
    if reason == RunStatus.COMPLETED:
        return f"It finished all {epochs} in {_dur(r.train_s)}."
    if reason == RunStatus.INTERRUPTED:
        return f"It was interrupted (the server stopped) after {epochs}."
    return f"It was stopped by hand after {epochs}."


def describe_run(r: ExperimentRun, budget_s: float, name: str | None = None) -> str:
    """One or two sentences: best accuracy, when it was reached, and what ended the run."""
    name = name or r.label[:1].upper() + r.label[1:]
    if r.status == RunStatus.FAILED:
        return f"{name} failed: {r.error or 'no reason was given'}"
    if not r.trained:
        if r.cut:
            return f"{name} did not finish a single epoch within the {budget_text(budget_s)} budget."
        return f"{name} ended before its first epoch ({r.status})."
    return (
        f"{name} reached **{pct(r.best_acc)}** after {_dur(r.seconds_to_best)} of training "
        f"(epoch {r.best_epoch}). {_ending(r, budget_s)}"
    )


def _by_label(runs: Sequence[ExperimentRun]) -> dict[str, ExperimentRun]:
    return {r.label: r for r in runs}


def pretraining_verdict(runs: Sequence[ExperimentRun], budget_s: float, n_classes: int) -> str:
    """Each run's measured best, chance level, and what that says about pretraining on this data."""
    by = _by_label(runs)
    scratch = by.get(FROM_SCRATCH)
    pretrained = [r for r in runs if r.label != FROM_SCRATCH]
    parts = [describe_run(r, budget_s) for r in pretrained]
    if scratch is not None:
        parts.append(describe_run(scratch, budget_s, "From scratch (the same network, random weights)"))
    chance = 1 / n_classes if n_classes else None
    if chance is not None:
        parts.append(f"Guessing would score {pct(chance)} ({n_classes} classes).")
    trained = [r for r in pretrained if r.trained]
    if scratch is None or not scratch.trained:
        parts.append(
            "From scratch has no epoch to compare with: give it a longer budget."
            if trained
            else "No run finished an epoch, so there is nothing to compare yet: try a longer budget."
        )
        return " ".join(parts)
    if not trained:
        parts.append("No pretrained run finished an epoch, so there is nothing to compare yet.")
        return " ".join(parts)
    best = max(trained, key=lambda r: r.best_acc)
    gap = best.best_acc - scratch.best_acc
    if chance is not None and scratch.best_acc < chance + 0.1:
        parts.append(f"From scratch stayed close to guessing ({pct(scratch.best_acc)}).")
    if gap >= CLOSE:
        text = f"**Pretraining helped:** {best.label} beat from scratch by {_points(gap)}"
        caught = best.seconds_to_reach(scratch.best_acc)
        if caught is not None and caught < scratch.seconds_to_best:
            text += (
                f", and it passed from scratch's best ({pct(scratch.best_acc)}) after {_dur(caught)} "
                f"of training, where from scratch needed {_dur(scratch.seconds_to_best)}"
            )
        text += "."
        if scratch.cut and _climbing(scratch):
            text += (
                " From scratch might climb further with more time, but it starts from nothing, "
                "while the pretrained backbone already knows edges, textures and shapes."
            )
    elif gap > -CLOSE:
        text = (
            f"**About even:** from scratch came within {_points(gap)} of {best.label}, so on this data "
            "pretraining adds little accuracy"
        )
        if best.seconds_to_best < scratch.seconds_to_best:
            text += (
                f"; it still got there sooner ({_dur(best.seconds_to_best)} against "
                f"{_dur(scratch.seconds_to_best)})"
            )
        text += "."
    else:
        text = (
            f"**From scratch won** on this data, by {_points(gap)} over {best.label}. That happens "
            "when the images look little like the photos the backbone was pretrained on, or when the "
            "task is simple enough to learn from nothing within the budget."
        )
    parts.append(text)
    return " ".join(parts)


def forgetting_verdict(runs: Sequence[ExperimentRun], budget_s: float, n_classes: int) -> str:
    """Accuracy and "ImageNet knowledge kept" of the same run at the recommended LR and at 100x."""
    by = _by_label(runs)
    low, high = by.get(RECOMMENDED_LR), by.get(HIGH_LR)
    parts = []
    for r, name in ((low, "At the recommended learning rate"), (high, f"At {LR_FACTOR}× that")):
        if r is None:
            continue
        lr = f" (head LR {r.lr:g})" if r.lr else ""
        if r.status == RunStatus.FAILED:
            parts.append(f"{name}{lr} the run failed: {r.error or 'no reason was given'}")
            continue
        if not r.trained:
            parts.append(f"{name}{lr} the run finished no epoch within the {budget_text(budget_s)} budget.")
            continue
        text = f"{name}{lr}, fine-tune top reached **{pct(r.best_acc)}** validation accuracy"
        if r.kept is not None:
            detail = f" ({r.kept_detail})" if r.kept_detail else ""
            text += f" and kept **{r.kept:.0%}** of its ImageNet knowledge{detail}"
        parts.append(text + ".")
    if low is None or high is None or not (low.trained and high.trained):
        return " ".join(parts)
    if low.kept is not None and high.kept is not None:
        lost = low.kept - high.kept
        if lost >= 0.1:
            parts.append(
                f"**The high learning rate made it forget:** it kept {_points(lost)} less of what "
                "pretraining taught. That is catastrophic forgetting, and why pretrained layers are "
                "fine-tuned with small learning rates."
            )
        elif lost <= -0.1:
            parts.append(
                f"Here the high learning rate did not cost ImageNet knowledge: it kept {_points(lost)} "
                "more than the recommended one."
            )
        else:
            parts.append(
                f"Both kept about as much ImageNet knowledge ({low.kept:.0%} and {high.kept:.0%}): within "
                "this budget the high learning rate did not overwrite more of it."
            )
    else:
        parts.append(
            "ImageNet knowledge kept was not measured for these runs: it needs pretrained weights that "
            "include an ImageNet classifier."
        )
    gap = low.best_acc - high.best_acc
    if gap >= CLOSE:
        parts.append(f"The high learning rate also cost {_points(gap)} of accuracy on your data.")
    elif gap <= -CLOSE:
        parts.append(
            f"On your data, though, the high learning rate scored {_points(gap)} higher: forgetting "
            "ImageNet did not hurt this task."
        )
    else:
        parts.append("Accuracy on your data was about the same.")
    return " ".join(parts)


BASELINE_TIE = 0.01
"""Within a point of each other, the two are a tie: validation accuracy is that noisy."""


def baseline_verdict(model_acc: float, baseline_acc: float, backbone: str) -> tuple[str, str]:
    """(``info``/``success``, text): the transformer against TF-IDF + logistic regression on the
    same split, said honestly whichever wins (seed 002's "when not to transfer")."""
    versus = f"{backbone} {pct(model_acc)} against TF-IDF + logistic regression {pct(baseline_acc)}"
    if model_acc - baseline_acc >= BASELINE_TIE:
        return "success", (
            f"Transfer learning pays here: {versus}, {_points(model_acc - baseline_acc)} better. The "
            "encoder brings what word counts can't see: meaning, paraphrase, word order."
        )
    if baseline_acc - model_acc >= BASELINE_TIE:
        lead = f"{_points(baseline_acc - model_acc)} better"
    else:
        lead = "as good"
    return "info", (
        f"The classical baseline is {lead}: {versus}. On texts whose class shows in their keywords "
        "(topics, spam), counting words is enough, trains in seconds and explains itself. A "
        "transformer pays when meaning isn't in the keywords (sarcasm, paraphrase, intent) or with "
        "very few examples; fine-tuning its top layers may close the gap."
    )
