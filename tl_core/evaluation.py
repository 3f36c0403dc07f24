"""Results of a finished run: predictions table, confusion matrix, per-class metrics.

Predictions on the validation split are computed once when training ends (with the restored
best weights) and saved in the run folder, so the Results page costs nothing to open, also
after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .runs import Run

PREDICTIONS = "predictions.json"
TEST_PREDICTIONS = "test_predictions.json"
"""The held-out test split's predictions: made once, with the best weights, after training."""
_FILES = {"val": PREDICTIONS, "test": TEST_PREDICTIONS}


def predictions_frame(
    items: Sequence[tuple[str, int]], probs: np.ndarray, classes: Sequence[str]
) -> pd.DataFrame:
    """One row per image: path, true and predicted class, confidence, per-class probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(1)
    df = pd.DataFrame(
        {
            "path": [p for p, _ in items],
            "true": [classes[label] for _, label in items],
            "predicted": [classes[i] for i in pred],
            "confidence": probs.max(1),
        }
    )
    df["correct"] = df["true"] == df["predicted"]
    df["probs"] = [row.round(5).tolist() for row in probs]
    return df


def save_predictions(run: Run, df: pd.DataFrame, split: str = "val") -> None:
    run.write_json(_FILES[split], df.to_dict(orient="records"))


def load_predictions(run: Run, split: str = "val") -> pd.DataFrame | None:
    """``split`` is ``val`` or ``test``; None when the run has none."""
    rows = run.read_json(_FILES[split])
    return pd.DataFrame(rows) if rows else None


def confusion(df: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """Rows are true classes, columns predicted (scikit-learn's convention)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(df["true"], df["predicted"], labels=list(classes))


def per_class_report(df: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (scikit-learn), plus a macro-average row."""
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(
        df["true"], df["predicted"], labels=list(classes), zero_division=0
    )
    table = pd.DataFrame({"class": list(classes), "precision": p, "recall": r, "f1": f, "support": s})
    macro = pd.DataFrame(
        [
            {
                "class": "macro avg",
                "precision": p.mean(),
                "recall": r.mean(),
                "f1": f.mean(),
                "support": s.sum(),
            }
        ]
    )
    return pd.concat([table, macro], ignore_index=True)


def misclassified(df: pd.DataFrame) -> pd.DataFrame:
    """Wrong predictions, most confident first: those are the most instructive (and often
    the mislabelled images)."""
    wrong = df[~df["correct"]]
    return wrong.sort_values("confidence", ascending=False).reset_index(drop=True)


def most_confused(df: pd.DataFrame, top: int = 5) -> list[tuple[str, str, int]]:
    """(true, predicted, count) pairs, like fastai's ``most_confused``."""
    wrong = df[~df["correct"]].groupby(["true", "predicted"]).size().sort_values(ascending=False)
    return [(t, p, int(n)) for (t, p), n in wrong.head(top).items()]


def cell(df: pd.DataFrame, true: str, predicted: str) -> pd.DataFrame:
    """The images behind one confusion-matrix cell, most confident first."""
    hits = df[(df["true"] == true) & (df["predicted"] == predicted)]
    return hits.sort_values("confidence", ascending=False).reset_index(drop=True)


def confident_mistakes(df: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The ``n`` wrong answers the model was surest of, for a text run: a confident mistake is
    often a mislabelled example, or one the labels can't tell apart."""
    return text_rows(misclassified(df), n)


def text_rows(df: pd.DataFrame, n: int = 20, max_chars: int = 240) -> pd.DataFrame:
    """The first ``n`` predictions of a text run as a table to read: text (shortened), true,
    predicted, confidence."""
    from .text_data import shorten

    rows = df.head(n)
    return pd.DataFrame(
        {
            "text": [shorten(t, max_chars) for t in rows["path"]],
            "true": rows["true"].tolist(),
            "predicted": rows["predicted"].tolist(),
            "confidence": rows["confidence"].tolist(),
        }
    )
