"""The decision wizard's rules for texts, after the BERT fine-tuning recipe.

Same ladder, same questions as for images (``advisor``), with text's own guidance: little data
means the encoder's pooled embeddings (feature extraction) or its top layers; fine-tuning the
whole encoder uses learning rates of 2e-5 to 5e-5 for 2-4 epochs with a warm-up, because larger
steps wipe out what pre-training taught (the BERT paper's grid). Rules are data, so a test pins
every cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .strategies import list_strategies

if TYPE_CHECKING:
    from .advisor import Recommendation, Rule, WizardAnswers

TEXT_SIMILARITY: dict[str, str] = {
    "very-similar": "Everyday written English: news, reviews, messages, support tickets",
    "moderate": "Specialised writing: legal, medical, scientific, finance jargon",
    "different": "Another register: social-media slang, code-mixed text, transcripts",
    "very-different": "Not prose at all: code, logs, product IDs, another language",
}
TEXT_TASKS: dict[str, str] = {
    "simple": "Simple: a few clearly different classes (e.g. sport vs politics, spam or not)",
    "standard": "Standard: several classes that a reader tells apart at a glance",
    "fine-grained": "Fine-grained: subtle differences (sarcasm, intent, nuanced sentiment)",
}
TOP_LR, DEEP_LR = 5e-5, 2e-5
"""The recipe's range: the top encoder layer at 5e-5, the deepest trained one at 2e-5."""
FINE_TUNE_HEAD_LR = 1e-4
"""The head, warmed up on frozen features first, then moving with the layers under it."""
FINE_TUNE_EPOCHS = 3
"""The recipe's 2-4 epochs: a pretrained encoder adapts fast and overfits soon after."""
CPU_TEXTS_CAP = 2_000
"""On a CPU, with more training texts than this, no more than the top layers: every epoch runs
the whole encoder over every text."""


def _rules() -> tuple[list[tuple[float, Rule]], dict[str, Rule], dict[str, Rule]]:
    from .advisor import Rule

    size = [
        (
            500,
            Rule(
                "under 500",
                0,
                "Under 500 texts per class: train a head on the encoder's pooled embeddings. Fine-tuning a transformer on this little data overfits within an epoch.",
            ),
        ),  # fmt: skip
        (
            2_000,
            Rule(
                "500-2,000",
                1,
                "500-2,000 texts per class: enough to fine-tune the top encoder layers, gently, after warming up the head.",
            ),
        ),  # fmt: skip
        (
            10_000,
            Rule(
                "2,000-10,000",
                2,
                "2,000-10,000 texts per class: enough to fine-tune the top half of the encoder.",
            ),
        ),  # fmt: skip
        (
            float("inf"),
            Rule(
                "over 10,000",
                3,
                "Over 10,000 texts per class: fine-tune the whole encoder, as the BERT recipe does.",
            ),
        ),  # fmt: skip
    ]
    domain = {
        "very-similar": Rule(
            "very-similar",
            0,
            "Everyday English is what the encoder read in pre-training: its embeddings already separate topics and tone.",
        ),  # fmt: skip
        "moderate": Rule(
            "moderate",
            1,
            "Specialised jargon: the encoder knows the language but not the field's meanings, so its top layers should adapt.",
        ),  # fmt: skip
        "different": Rule(
            "different", 2, "A register unlike its pre-training text: more layers need to adapt."
        ),  # fmt: skip
        "very-different": Rule(
            "very-different",
            3,
            "Not prose: the encoder's notion of words barely applies, so everything must adapt.",
        ),  # fmt: skip
    }
    task = {
        "simple": Rule(
            "simple",
            -1,
            "A few clearly different classes (topics, spam or not) lean towards feature extraction: the words give them away.",
        ),  # fmt: skip
        "standard": Rule("standard", 0, "A standard task: no adjustment."),
        "fine-grained": Rule(
            "fine-grained",
            1,
            "Subtle differences (sarcasm, intent, nuanced sentiment) need adapted layers: lean one step towards fine-tuning.",
        ),  # fmt: skip
    }
    return size, domain, task


def recommend_text(a: WizardAnswers) -> Recommendation:
    """``advisor.recommend`` for texts: the stronger of the size and domain pulls, the task's
    nudge, then caps for little data and for a CPU; the recipe's learning rates and epochs."""
    from .advisor import LADDER, Recommendation

    size_rules, domain_rules, task_rules = _rules()
    if a.similarity not in domain_rules or a.task not in task_rules:
        raise ValueError(f"unknown answer: similarity={a.similarity!r}, task={a.task!r}")
    size = next(rule for bound, rule in size_rules if a.images_per_class < bound)
    domain, task = domain_rules[a.similarity], task_rules[a.task]
    why = [size.why, domain.why] + ([task.why] if task.rung else [])
    rung = min(max(max(size.rung, domain.rung) + task.rung, 0), 3)
    if a.images_per_class < 500 and rung > 1:
        rung = 1
        why.append(
            f"Capped at the {LADDER[1][0]}: your answers pull deeper, but with under 500 texts per "
            "class only the top layer can adapt without memorising the training texts."
        )
    if not a.has_gpu and a.images_per_class * a.n_classes > CPU_TEXTS_CAP and rung > 1:
        rung = 1
        why.append(
            f"No GPU detected: with {a.images_per_class * a.n_classes:,} texts, fine-tuning deeper "
            "would take too long on a CPU, so only the top layers train."
        )
    spec = list_strategies()[rung]
    if spec.frozen_backbone:
        head_lr, epochs = spec.lr, spec.epochs
        why.append(
            f"The encoder runs once over every text and its pooled embeddings are cached, so "
            f"{epochs} epochs of head training take seconds, at a head's LR ({head_lr:.0e})."
        )
    else:
        head_lr, epochs = FINE_TUNE_HEAD_LR, FINE_TUNE_EPOCHS
        why.append(
            f"Learning rates from the BERT recipe: top layer {TOP_LR:.0e}, deeper layers down to "
            f"{DEEP_LR:.0e}, for {epochs} epochs with a warm-up. Larger steps erase what "
            "pre-training taught the encoder (catastrophic forgetting)."
        )
        why.append(
            "The head trains first on frozen embeddings, so its random start doesn't jolt the encoder."
        )
    why.append("Texts are not augmented: there is no flip or crop that keeps a sentence's meaning.")
    why.append("Early stopping watches the validation loss and restores the best weights.")
    return Recommendation(
        rung=rung,
        strategy=spec.name,
        unfreeze_fraction=spec.unfreeze_fraction,
        head_lr=head_lr,
        top_lr=TOP_LR,
        deep_lr=DEEP_LR,
        epochs=epochs,
        augment="none",
        batch_size=32,
        why=why,
    )
