"""A run's model card (``MODEL_CARD.md``), written only from the run's own files.

Every figure on the card (counts, metrics, learning rates) is read from what the run recorded,
and its limitations are generated from those figures, so the card can't drift from the model it
ships with and never claims what the run didn't measure.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .archive import display_name
from .config import TrainConfig
from .data import SMALL_IMAGE_PX, TINY_CLASS, DatasetProfile
from .errors import TLError
from .evaluation import load_predictions, per_class_report
from .paths import studio_home
from .runs import Run, RunStatus
from .strategies import Phase
from .ui_text import NO_TEST_SPLIT

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"val": "validation", "test": "test"}
LOW_RECALL_GAP = 0.10
"""A class whose recall is this far under the split's accuracy is called out: the headline
figure hides that the model misses it more often than the rest."""
MAX_LISTED = 10
"""Skipped files listed one by one; the rest are counted, so a messy folder can't flood the card."""


@dataclass
class _Facts:
    """What the card is written from, read once from the run folder."""

    run: Run
    cfg: TrainConfig
    profile: DatasetProfile
    backbone: dict[str, Any]
    status: dict[str, Any]
    classes: list[str]
    reports: dict[str, pd.DataFrame]
    """split -> ``per_class_report`` (val, and test when the run had one)."""
    phases: list[Phase]
    config_file: str = "config.json"

    @property
    def result(self) -> dict[str, Any]:
        return self.status.get("result") or {}

    @property
    def title(self) -> str:
        return self.cfg.data_label or display_name(self.cfg.data) or self.cfg.data

    @property
    def data_path(self) -> str | None:
        """The data path to print; None for an upload (see ``_private``)."""
        return None if _private(self.cfg.data) else self.cfg.data

    @property
    def weights(self) -> str:
        detail = str(self.backbone.get("weights_detail", "?"))
        path = detail.removeprefix("file:")
        if detail.startswith("bundled:"):
            package = detail.removeprefix("bundled:").replace("_", "-")
            what = "Pretrained weights" if self.text else "ImageNet weights"
            return f"{what} from the `{package}` package (works offline)"
        if detail.startswith("hub:"):
            what = "Pretrained weights" if self.text else "ImageNet weights"
            return f"{what} from the Hugging Face Hub (`{detail.removeprefix('hub:')}`)"
        return f"file:{display_name(path)}" if path != detail and _private(path) else detail

    @property
    def text(self) -> bool:
        return self.profile.modality == "text"

    @property
    def things(self) -> str:
        return "texts" if self.text else "images"

    @property
    def scored(self) -> str:
        """The split whose figures speak for new images: test when there is one."""
        return "test" if "test" in self.reports else "val"


def _private(text: str) -> bool:
    """A path inside the studio's own folders: an upload's path names a private workspace (its
    key, in a workshop) and means nothing on another machine, so the card leaves it out."""
    path = Path(text).expanduser()
    return path.is_absolute() and path.resolve().is_relative_to(studio_home().resolve())


def model_card(run: Run, config_file: str = "config.json") -> str:
    """``MODEL_CARD.md`` for a finished run, as Markdown; raises ``TLError`` for a run that
    never finished an epoch (there is no model to describe).

    Args:
        config_file: the name the run's ``config.json`` ships under next to the card (a timm
            folder's own ``config.json`` is timm's).
    """
    facts = _read(run)
    facts.config_file = config_file
    sections = [
        _front_matter(facts),
        _intro(facts),
        _data(facts),
        _model(facts),
        _results(facts),
        _limitations(facts),
        _reproduce(facts),
    ]
    return "\n\n".join(sections) + "\n"


# -- reading the run ----------------------------------------------------------------------------
def _read(run: Run) -> _Facts:
    status = run.status()
    classes = run.labels()
    profile = run.profile()
    backbone = run.read_json(Run.BACKBONE)
    if not classes or not profile or not backbone or not status.get("epochs_run"):
        raise TLError(f"Run {run.id} has no trained model to describe yet (it never finished an epoch).")
    cfg = run.config().resolved()
    reports = {}
    for split in ("val", "test"):
        df = load_predictions(run, split)
        if df is not None:
            reports[split] = per_class_report(df, classes)
    return _Facts(
        run=run,
        cfg=cfg,
        profile=profile,
        backbone=backbone,
        status=status,
        classes=list(classes),
        reports=reports,
        phases=_phases(run, cfg),
    )


def _phases(run: Run, cfg: TrainConfig) -> list[Phase]:
    """The run's schedule, planned again from its config and the architecture's layer groups
    (the same planner training used; the groups need the model built, not its weights)."""
    from .freezing import layer_groups
    from .inference import rebuild_model
    from .strategies import plan_phases

    return plan_phases(cfg, layer_groups(rebuild_model(run, weights=False)))


# -- formatting helpers --------------------------------------------------------------------------
def _cell(value: Any) -> str:
    """A table cell: a ``|`` in a class name would otherwise split the column."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """A Markdown table; the ``numeric`` columns are aligned right."""
    align = ["---:" if i in numeric else "---" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(_cell(c) for c in line) + " |" for line in lines)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _spread(counts: Sequence[int]) -> str:
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low} to {high}"


# -- the sections ------------------------------------------------------------------------------
def _front_matter(f: _Facts) -> str:
    """Hugging Face's card metadata, so the card reads right where such cards are shown."""
    task = "text-classification" if f.text else "image-classification"
    lines = ["---", f"library_name: {'transformers' if f.text else 'timm'}", f"pipeline_tag: {task}"]
    lines.append(f"tags: [{task}, transfer-learning, tl-studio]")
    detail = str(f.backbone.get("weights_detail", ""))
    if detail.startswith("hub:"):
        repo = detail.removeprefix("hub:").split(" ")[0]
        lines.append(f"base_model: {repo if f.text else 'timm/' + repo}")
    return "\n".join([*lines, "---"])


def _intro(f: _Facts) -> str:
    return (
        f"# {f.title}: {f.cfg.backbone}, {f.cfg.strategy}\n\n"
        f"{'A text' if f.text else 'An image'} classifier for {len(f.classes)} classes ({_quoted(f.classes)}), trained "
        f"with Transfer Learning Studio (run `{f.run.id}`). Everything below "
        "was recorded by that run."
    )


def _data(f: _Facts) -> str:
    p = f.profile
    splits = [s for s in SPLITS if p.counts.get(s)]
    rows = [[c, *(p.counts[s].get(c, 0) for s in splits)] for c in f.classes]
    rows.append(["**total**", *(p.n(s) for s in splits)])
    out = [
        "## Data",
        f"Source: `{f.data_path or f.title}` ({_layout(p)}).",
        _table(["class", *splits], rows, numeric=range(1, len(splits) + 1)),
    ]
    if p.skipped:
        listed = [f"- `{s.path}`: {s.reason}" for s in p.skipped[:MAX_LISTED]]
        more = len(p.skipped) - MAX_LISTED
        listed += [f"- and {more} more"] if more > 0 else []
        out.append(f"{len(p.skipped)} file(s) skipped by the scan, not used anywhere:\n" + "\n".join(listed))
    else:
        out.append("No files were skipped by the scan.")
    if p.warnings:
        out.append("The scan warned:\n" + "\n".join(f"- {w}" for w in p.warnings))
    return "\n\n".join(out)


def _layout(p: DatasetProfile) -> str:
    if p.layout == "split":
        return "its own " + "/, ".join(s for s in SPLITS if p.counts.get(s)) + "/ folders"
    held = [f"{p.val_fraction:.0%} of each class for validation"] if p.val_fraction else []
    held += [f"{p.test_fraction:.0%} of the rest for testing"] if p.test_fraction else []
    seed = f", seed {p.seed}" if p.seed is not None else ""
    if p.layout == "table" and not p.val_fraction:
        return "a table with its own split column"
    what = {"sample": "a built-in sample", "table": "a table"}.get(p.layout, "class folders")
    return f"{what}, split here: {' and '.join(held) or 'as stored'}{seed}"


def _model(f: _Facts) -> str:
    from .backbones import BACKBONES
    from .strategies import STRATEGIES

    spec = BACKBONES.get(f.cfg.backbone)
    about = f" ({spec.family}, {spec.top1}% ImageNet top-1)" if spec else ""
    data_config = f.backbone.get("data_config") or {}
    size = data_config.get("input_size", [None, f.cfg.image_size])[-1]
    library, given = "timm", f"{size}x{size} px, with the preprocessing in `preprocessing.json`"
    if f.text:
        library = "Hugging Face transformers"
        given = (
            f"texts cut at {data_config.get('max_length')} word pieces by the encoder's own tokenizer, "
            f"{data_config.get('pooling')}-pooled (see `preprocessing.json`)"
        )
    phase_rows = [
        [p.name, p.epochs, ", ".join(f"{group} {lr:g}" for group, lr in p.lrs.items())] for p in f.phases
    ]
    stop = {
        RunStatus.EARLY_STOPPED: " (early stopping ended it)",
        RunStatus.STOPPED: " (stopped by hand)",
        RunStatus.TIME_LIMIT: " (the time limit cut it)",
    }
    run_epochs = f.status.get("epochs_run", 0)
    planned = sum(p.epochs for p in f.phases)
    return "\n\n".join(
        [
            "## Model",
            f"- Backbone: `{f.cfg.backbone}` from {library}{about}\n"
            f"- Starting weights: {f.weights}\n"
            f"- Input: {given}\n"
            f"- Strategy: `{f.cfg.strategy}`: {STRATEGIES[f.cfg.strategy].summary}",
            "Phases (groups not listed stay frozen):",
            _table(["phase", "epochs", "trainable groups and learning rates"], phase_rows, numeric=[1]),
            f"Ran {run_epochs} of {planned} planned epoch(s){stop.get(f.result.get('status', ''), '')}; "
            f"the weights are those of epoch {f.result.get('best_epoch', '?')}, the one kept (the lowest validation loss).",
        ]
    )


def _results(f: _Facts) -> str:
    out = []
    val_acc = f.status.get("best_val_acc")
    if val_acc is not None:
        out.append(
            f"- Validation accuracy: **{_pct(val_acc)}** on {f.profile.n_val} {f.things} "
            f"(epoch {f.result.get('best_epoch', '?')}; this split chose the epoch)"
        )
    test_acc = f.status.get("test_acc")
    if test_acc is not None:
        out.append(
            f"- Test accuracy: **{_pct(test_acc)}** on {f.profile.n_test} held-out {f.things}, scored "
            f"once after training: they chose nothing, so this is the estimate for new {f.things}"
        )
    else:
        out.append(f"- No test split. {NO_TEST_SPLIT}")
    baseline = f.result.get("baseline_acc")
    if baseline is not None:
        out.append(
            f"- TF-IDF + logistic regression on the same split, for comparison: {_pct(baseline)} "
            "validation accuracy (a classical baseline that trains in seconds)"
        )
    text = "## Results\n\n" + "\n".join(out)
    for split, report in f.reports.items():
        rows = [
            [r["class"], f"{r['precision']:.2f}", f"{r['recall']:.2f}", f"{r['f1']:.2f}", int(r["support"])]
            for r in report.to_dict("records")
        ]
        name = SPLIT_NAMES[split]
        text += f"\n\nPer class, {name} split:\n\n" + _table(
            ["class", "precision", "recall", "f1", "support"], rows, numeric=range(1, 5)
        )
    return text


def _limitations(f: _Facts) -> str:
    p = f.profile
    per_class = [p.counts.get("train", {}).get(c, 0) for c in f.classes]
    scope = "these classes or this data"
    lines = [
        f"- Intended use: sorting {f.things} like the training data into {_quoted(f.classes)}. It has no "
        f'"none of these" answer: any other {f.things[:-1]} still gets one of these labels.',
        f"- Trained on {p.n_train} {f.things} ({_spread(per_class)} per class) from "
        f"`{f.title}`; not evaluated outside {scope}. Expect lower accuracy on {f.things} from other "
        + ("writers, times, topics or sources" if f.text else "cameras, places or sources")
        + ", and measure on your own before relying on it.",
    ]
    n_scored = p.n(f.scored)
    if n_scored:
        lines.append(
            f"- The {'test' if f.scored == 'test' else 'validation'} figures rest on {n_scored} {f.things}: "
            f"one {f.things[:-1]} more or less right moves the accuracy by {100 / n_scored:.1f} points."
        )
    lines += _looks(p)
    few = [f"'{c}' ({n})" for c, n in zip(f.classes, per_class, strict=True) if n < TINY_CLASS]
    if few:
        lines.append(
            f"- Few training {f.things} (under {TINY_CLASS}): {', '.join(few)}; their figures are noisy."
        )
    lines += _low_recall(f)
    if f.status.get("test_acc") is None:
        lines.append(f"- {NO_TEST_SPLIT}")
    if f.backbone.get("weights") == "none":
        lines.append("- Trained from random initialisation: no pretraining helped, so it needs more data.")
    return "## Intended use and limitations\n\n" + "\n".join(lines)


def _looks(p: DatasetProfile) -> list[str]:
    """What the images looked like, as far as the scan measured it."""
    out = []
    if p.grey_fraction is not None:
        if p.grey_fraction >= 0.5:
            out.append(
                f"- {p.grey_fraction:.0%} of the images are grey-scale: colour photos are outside what it saw."
            )
        elif p.grey_fraction > 0:
            out.append(f"- {p.grey_fraction:.0%} of the images are grey-scale, the rest in colour.")
        else:
            out.append("- All the images are in colour: grey-scale images were not seen.")
    if p.small_fraction:
        out.append(
            f"- {p.small_fraction:.0%} of the images are under {SMALL_IMAGE_PX} px on their shorter side, "
            "far below the photos backbones learned from."
        )
    return out


def _low_recall(f: _Facts) -> list[str]:
    report = f.reports.get(f.scored)
    acc = f.status.get("test_acc" if f.scored == "test" else "best_val_acc")
    if report is None or acc is None:
        return []
    classes = report[report["class"].isin(f.classes)]
    weak = classes[classes["recall"] < acc - LOW_RECALL_GAP]
    name = SPLIT_NAMES[f.scored]
    return [
        f"- '{r['class']}' is missed more often than the rest: recall {r['recall']:.2f} on the {name} "
        f"split, against {_pct(acc)} accuracy overall."
        for _, r in weak.iterrows()
    ]


def _reproduce(f: _Facts) -> str:
    config = f.config_file
    data = shlex.quote(f.data_path) if f.data_path else "DATA"
    where = "" if f.data_path else f"DATA is your copy of `{f.title}` (its folder, or the .zip). "
    return (
        "## Reproduce\n\n"
        f"```\ntl-studio train {data} --config {config}\n```\n\n"
        f"{where}"
        f"`{config}` (next to this card) holds every setting of the run, including the seed that "
        "drew the split; a flag after it overrides one (e.g. `--epochs 20`), and another data path "
        "in place of the first argument trains on a copy of the data elsewhere."
        + (
            " In a model bundle, `python train.py DATA` does the same with only torch and transformers."
            if f.text
            else " In a model bundle, `python train.py DATA_DIR` does the same with only torch and timm."
        )
    )
