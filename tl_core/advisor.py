"""The decision wizard's rules: data size, domain similarity, task and compute -> a strategy.

The rules are data (``SIZE_RULES``, ``DOMAIN_RULES``, ``TASK_RULES``), each with the reason the
user sees, so the UI can show *why* and a test can pin down every cell. They encode common
transfer-learning guidance: little data -> freeze more (overfitting); a domain far from
everyday photos -> unfreeze more (ImageNet's top-level features fit it less). The ladder, and
each rung's LR and epochs, come from the strategy registry (``strategies.STRATEGIES``).

The wizard starts from answers it can stand behind: a built-in sample carries its own, and for
anything else ``wizard_defaults`` guesses from the scan and says that it guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .data import SMALL_IMAGE_PX
from .samples import SAMPLES
from .strategies import STRATEGIES, StrategySpec, list_strategies
from .text_advice import TEXT_SIMILARITY, TEXT_TASKS, recommend_text

if TYPE_CHECKING:
    from .data import DatasetProfile

_RUNGS: list[StrategySpec] = list_strategies()
"""The ladder is the strategy registry in rung order: one rung per strategy."""
LADDER: list[tuple[str, str]] = [(s.ladder, s.ladder_hint) for s in _RUNGS]
LADDER_FRACTION: list[float] = [s.unfreeze_fraction for s in _RUNGS]
LADDER_STRATEGY: list[str] = [s.name for s in _RUNGS]
TOP_LR = 1e-4
"""The wizard's LR for the backbone group nearest the head: pretrained layers need small steps."""
DEEP_LR = 1e-5
"""...and for the deepest group it unfreezes."""

SIMILARITY: dict[str, str] = {
    "very-similar": "Everyday photos: pets, objects, food, vehicles",
    "moderate": "Specialised photos: medical or industrial photos, plants up close",
    "different": "Unusual viewpoints or imaging: satellite, microscopy, scanned handwriting",
    "very-different": "Not photos at all: spectrograms, charts, sensor signals",
}
TASKS: dict[str, str] = {
    "simple": "Simple: a few clearly different classes (e.g. cat vs dog)",
    "standard": "Standard: several classes that a person tells apart at a glance",
    "fine-grained": "Fine-grained: subtle differences (bird species, defect types)",
}


def similarity_choices(modality: str) -> dict[str, str]:
    """The domain question's answers, worded for images or for texts (same keys, same rules' rungs)."""
    return TEXT_SIMILARITY if modality == "text" else SIMILARITY


def task_choices(modality: str) -> dict[str, str]:
    return TEXT_TASKS if modality == "text" else TASKS


@dataclass(frozen=True)
class Rule:
    level: str
    rung: int
    why: str


# Images per class: (upper bound exclusive, rule). Guidance: <500 feature extraction only;
# 500-2k extract then fine-tune the top; 2k-10k the top ~25-50%; >10k (most) all layers.
SIZE_RULES: list[tuple[float, Rule]] = [
    (
        500,
        Rule(
            "under 500",
            0,
            "Under 500 images per class: train only a new head. Unfreezing layers this early would let the model memorise the training images (overfitting).",
        ),
    ),
    (
        2_000,
        Rule(
            "500-2,000",
            1,
            "500-2,000 images per class: enough to warm up the head and then fine-tune the top layers gently.",
        ),
    ),
    (
        10_000,
        Rule(
            "2,000-10,000",
            2,
            "2,000-10,000 images per class: enough to fine-tune the top quarter to half of the network.",
        ),
    ),
    (
        float("inf"),
        Rule(
            "over 10,000", 3, "Over 10,000 images per class: enough data to fine-tune all (or most) layers."
        ),
    ),
]
DOMAIN_RULES: dict[str, Rule] = {
    "very-similar": Rule(
        "very-similar",
        0,
        "Everyday photos are what the backbone learned from: its features fit them as they are, so feature extraction works well.",
    ),
    "moderate": Rule(
        "moderate",
        1,
        "Specialised photos: the low-level features transfer, but fine-tuning the top layers adapts the high-level ones.",
    ),
    "different": Rule(
        "different",
        2,
        "Images unlike everyday photos: more layers need to adapt, so unfreeze deeper.",
    ),
    "very-different": Rule(
        "very-different",
        3,
        "Images that are not photos: fine-tune all layers (or, with lots of data, consider training from scratch).",
    ),
}
TASK_RULES: dict[str, Rule] = {
    "simple": Rule(
        "simple", -1, "A simple task with clearly different classes leans towards feature extraction."
    ),
    "standard": Rule("standard", 0, "A standard task: no adjustment."),
    "fine-grained": Rule(
        "fine-grained",
        1,
        "Subtle differences between classes need adapted features: lean one step towards fine-tuning.",
    ),
}
SMALL_DATA_CAP = 1
"""With under 500 images per class, never go past "top 20%", however different the domain."""
CPU_IMAGES_CAP = 2_000
"""On a CPU, with more training images than this, don't go past "top 20%": epochs get too slow."""


@dataclass
class WizardAnswers:
    images_per_class: int
    n_classes: int = 2
    similarity: str = "very-similar"
    task: str = "standard"
    has_gpu: bool = False
    time_budget_min: int = 10
    tiny_images: bool = False
    """Most source images are tiny (under ``SMALL_IMAGE_PX``) and get blown up to the input size."""
    modality: str = "image"
    """``text``: the text rules (``text_advice``); ``images_per_class`` then counts texts."""


MOSTLY = 0.8
"""Share of images that must show a trait before the wizard's guess goes by it."""


@dataclass(frozen=True)
class WizardDefaults:
    """The wizard's starting answers for a dataset: a sample's own, or guesses it owns up to."""

    images_per_class: int
    n_classes: int
    similarity: str
    task: str
    guessed: bool
    """True when the answers are guesses from the files, which the user should check."""
    tiny_images: bool
    """Most images are tiny: a fact from the scan, not a guess (see ``WizardAnswers``)."""
    note: str
    """What the wizard tells the user about these answers (markdown)."""


def guess_similarity(grey_fraction: float | None, small_fraction: float | None) -> tuple[str, str]:
    """(answer, because): how photo-like the images look from what a scan can see.

    Everyday photos are colour and at least a few hundred pixels across; grey-scale or tiny
    images point to scans, icons or specialised imaging. Colour photo-sized images may still be
    anything (charts, paintings), so that answer is only a starting point.
    """
    grey = grey_fraction is not None and grey_fraction >= MOSTLY
    small = small_fraction is not None and small_fraction >= MOSTLY
    if grey and small:
        return "different", (
            f"most of your images are tiny (under {SMALL_IMAGE_PX} px) and grey-scale, like scans or "
            "icons, while everyday photos are larger and in colour"
        )
    if grey:
        return "moderate", (
            "most of your images are grey-scale, as X-rays, microscopy and document scans are, "
            "while everyday photos are in colour"
        )
    if small:
        return "moderate", (
            f"most of your images are tiny (under {SMALL_IMAGE_PX} px), far smaller than the photos "
            "the backbone learned from"
        )
    return "very-similar", (
        "your images are in colour and photo-sized; I can't see what they show, so this is only "
        "a starting point"
    )


def _short(choice: str) -> str:
    """An answer's name without its examples: "Everyday photos" for "Everyday photos: pets, ..."."""
    return choice.split(":")[0]


def wizard_defaults(profile: DatasetProfile) -> WizardDefaults:
    """The answers the wizard starts from: a built-in sample carries its own; for anything else
    they are guesses from the scan, and the note says so."""
    per_class = max(1, round((profile.n_train + profile.n_val) / len(profile.classes)))
    n_classes = len(profile.classes)
    sample = SAMPLES.get(profile.source) if profile.layout == "sample" else None
    tiny = profile.small_fraction is not None and profile.small_fraction >= MOSTLY
    if sample is not None:
        return WizardDefaults(
            images_per_class=per_class,
            n_classes=n_classes,
            similarity=sample.similarity,
            task=sample.task,
            guessed=False,
            tiny_images=tiny,
            note=sample.answers_why,
        )
    if profile.modality == "text":
        return WizardDefaults(
            images_per_class=per_class,
            n_classes=n_classes,
            similarity="very-similar",
            task="standard",
            guessed=True,
            tiny_images=False,
            note=(
                f"I guessed **{_short(TEXT_SIMILARITY['very-similar'])}** and a **standard** task: "
                "I can't tell from the files what register your texts are in or how alike your "
                "classes read. Change them if that's wrong."
            ),
        )
    similarity, because = guess_similarity(profile.grey_fraction, profile.small_fraction)
    note = (
        f"I guessed **{_short(SIMILARITY[similarity])}** because {because} — change it if that's "
        f"wrong. For the task I picked **{_short(TASKS['standard'])}**, the middle choice: I can't "
        "tell from the files how alike your classes look."
    )
    return WizardDefaults(
        images_per_class=per_class,
        n_classes=n_classes,
        similarity=similarity,
        task="standard",
        guessed=True,
        tiny_images=tiny,
        note=note,
    )


@dataclass
class Recommendation:
    rung: int
    strategy: str
    unfreeze_fraction: float
    head_lr: float
    top_lr: float
    deep_lr: float
    epochs: int
    augment: str
    batch_size: int
    why: list[str] = field(default_factory=list)

    @property
    def rung_name(self) -> str:
        return LADDER[self.rung][0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def unfreeze_groups(self, body_groups: list[str]) -> list[str]:
        """The top ``unfreeze_fraction`` of ``body_groups`` (ordered stem first), at least one."""
        if self.unfreeze_fraction <= 0:
            return []
        n = max(1, round(len(body_groups) * self.unfreeze_fraction))
        return body_groups[len(body_groups) - n :]


def size_rule(images_per_class: int) -> Rule:
    return next(rule for bound, rule in SIZE_RULES if images_per_class < bound)


def recommend(a: WizardAnswers) -> Recommendation:
    """Combine the rules: take the stronger of the data-size and domain pulls, adjust for the
    task, then cap by data size and compute. Every step appends its reason."""
    if a.modality == "text":
        return recommend_text(a)
    if a.similarity not in DOMAIN_RULES or a.task not in TASK_RULES:
        raise ValueError(f"unknown answer: similarity={a.similarity!r}, task={a.task!r}")
    size, domain, task = size_rule(a.images_per_class), DOMAIN_RULES[a.similarity], TASK_RULES[a.task]
    why = [size.why, domain.why]
    rung = max(size.rung, domain.rung)
    if task.rung:
        why.append(task.why)
    rung = min(max(rung + task.rung, 0), 3)
    if a.images_per_class < 500 and rung > SMALL_DATA_CAP:
        rung = SMALL_DATA_CAP
        why.append(
            f"Capped at the {LADDER[SMALL_DATA_CAP][0]}: your answers pull towards unfreezing deeper, "
            "but with under 500 images per class that would overfit, so only the top layers adapt."
        )
    elif a.images_per_class < 500 and rung == 1 and a.similarity in ("very-similar", "moderate"):
        rung = 0
        why.append("With under 500 images per class and photo-like images, stay with feature extraction.")
    if not a.has_gpu and a.images_per_class * a.n_classes > CPU_IMAGES_CAP and rung > 1:
        rung = 1
        why.append(
            f"No GPU detected: with {a.images_per_class * a.n_classes:,} images, deeper fine-tuning would take too long on a CPU, so only the top layers train."
        )
    if a.similarity == "very-different" and a.images_per_class >= 10_000 and a.has_gpu:
        rung = 4
        why.append(
            "Lots of data, a GPU and non-photo images: training from scratch can beat ImageNet features."
        )

    spec = _RUNGS[rung]
    epochs = spec.epochs
    if not a.has_gpu and rung > 0:
        epochs = max(3, min(epochs, a.time_budget_min // 2))
    if spec.frozen_backbone:
        augment = "light" if a.has_gpu and a.images_per_class < 500 else "none"
        why.append(
            f"Features are computed once and cached, so {epochs} epochs of head training take seconds; "
            f"a head on fixed features tolerates a higher LR ({spec.lr:.0e})."
            if augment == "none"
            else "With a GPU, light augmentation is affordable and helps small data generalise."
        )
    else:
        augment = "strong" if a.images_per_class < 500 else "light"
        if a.tiny_images:
            augment = "none"
        if spec.pretrained:
            why.append(
                f"Learning rates: head {spec.lr:.0e}, top layers {TOP_LR:.0e}, deeper layers {DEEP_LR:.0e}. "
                "Pretrained layers need small steps, or they forget what they learned."
            )
            why.append(
                "The head is warmed up before anything is unfrozen, so its random start doesn't disturb pretrained layers."
            )
        else:
            why.append(
                f"Every layer starts from random weights and trains at {spec.lr:.0e}: there is nothing pretrained to protect."
            )
        why.append(
            f"No augmentation: your images are tiny (under {SMALL_IMAGE_PX} px), so a random crop cuts "
            "away most of what they show and a flip can change the class (a mirrored 2 is no digit). "
            "Training sees them as they are; early stopping guards against memorising."
            if a.tiny_images
            else f"Augmentation '{augment}': training the backbone sees each image many times, so vary them to avoid memorising."
        )
    why.append("Early stopping watches the validation loss and restores the best weights.")
    return Recommendation(
        rung=rung,
        strategy=spec.name,
        unfreeze_fraction=spec.unfreeze_fraction,
        head_lr=spec.lr,
        top_lr=TOP_LR,
        deep_lr=DEEP_LR,
        epochs=epochs,
        augment=augment,
        batch_size=64 if a.has_gpu else 32,
        why=why,
    )


def apply_recommendation(rec: Recommendation, base: Any, body_groups: list[str]) -> Any:
    """A ``TrainConfig`` like ``base`` with the recommendation's choices filled in.

    The per-group decay is set so the deepest unfrozen group lands at ``deep_lr``.
    """
    from dataclasses import replace

    spec = STRATEGIES[rec.strategy]
    unfreeze = rec.unfreeze_groups(body_groups)
    n = len(unfreeze)
    decay = (rec.deep_lr / rec.top_lr) ** (1 / (n - 1)) if n > 1 else base.lr_decay
    return replace(
        base,
        strategy=rec.strategy,
        lr=rec.head_lr,
        backbone_lr_scale=rec.top_lr / rec.head_lr,
        lr_decay=decay,
        unfreeze=unfreeze if spec.takes_unfreeze else None,
        epochs=rec.epochs,
        augment=rec.augment,
        batch_size=rec.batch_size,
        weights=base.weights if spec.pretrained else "none",
    )


def recommend_backbone(specs: list[Any], offline_ready: dict[str, bool], has_gpu: bool) -> tuple[str, str]:
    """(name, why). Prefer what works right now without a download; on a CPU the cheapest
    good model (accuracy per compute), on a GPU the most accurate one."""
    ready = [s for s in specs if offline_ready.get(s.name)] or specs
    if has_gpu:
        best = max(ready, key=lambda s: s.top1)
        return (
            best.name,
            f"{best.name} is the most accurate backbone available here ({best.top1}% ImageNet top-1), and a GPU makes its size affordable.",
        )
    best = max(ready, key=lambda s: s.top1 - 10 * s.gmacs)
    return (
        best.name,
        f"{best.name} gives the best accuracy per unit of compute among the backbones available offline: on a CPU every epoch counts.",
    )
