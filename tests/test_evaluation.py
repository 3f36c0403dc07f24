from __future__ import annotations

import numpy as np
import pytest

from tl_core.evaluation import confusion, misclassified, most_confused, per_class_report, predictions_frame

CLASSES = ["cat", "dog", "fox"]
ITEMS = [("a.png", 0), ("b.png", 0), ("c.png", 1), ("d.png", 1), ("e.png", 2), ("f.png", 2)]
PROBS = np.array(
    [
        [0.9, 0.05, 0.05],  # cat ok
        [0.2, 0.7, 0.1],  # cat -> dog (0.7)
        [0.1, 0.8, 0.1],  # dog ok
        [0.05, 0.05, 0.9],  # dog -> fox (0.9)
        [0.1, 0.1, 0.8],  # fox ok
        [0.1, 0.2, 0.7],  # fox ok
    ]
)


@pytest.fixture
def frame():
    return predictions_frame(ITEMS, PROBS, CLASSES)


def test_predictions_frame(frame) -> None:
    assert list(frame["predicted"]) == ["cat", "dog", "dog", "fox", "fox", "fox"]
    assert frame["correct"].sum() == 4
    assert frame.loc[3, "confidence"] == pytest.approx(0.9)


def test_confusion_rows_are_truth(frame) -> None:
    assert confusion(frame, CLASSES).tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]


def test_per_class_report(frame) -> None:
    report = per_class_report(frame, CLASSES).set_index("class")
    assert report.loc["cat", "precision"] == 1.0 and report.loc["cat", "recall"] == 0.5
    assert report.loc["fox", "precision"] == pytest.approx(2 / 3) and report.loc["fox", "recall"] == 1.0
    assert report.loc["macro avg", "support"] == 6


def test_mistakes_most_confident_first(frame) -> None:
    wrong = misclassified(frame)
    assert list(wrong["path"]) == ["d.png", "b.png"]
    assert most_confused(frame) == [("cat", "dog", 1), ("dog", "fox", 1)] or most_confused(frame) == [
        ("dog", "fox", 1),
        ("cat", "dog", 1),
    ]


def test_cell_lists_the_images_behind_a_confusion_cell(frame) -> None:
    from tl_core.evaluation import cell

    assert list(cell(frame, "dog", "fox")["path"]) == ["d.png"]
    assert list(cell(frame, "fox", "fox")["path"]) == ["e.png", "f.png"]
    assert cell(frame, "fox", "cat").empty
