"""The classical baseline beside every text run: TF-IDF features and logistic regression.

It trains in seconds on the same split, so the learner sees what the transformer buys on their
own data; on short, keyword-driven texts it can match a frozen transformer, and Results says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Baseline:
    accuracy: float
    seconds: float
    vocabulary: int
    """Distinct words and word pairs it weighed."""


def tfidf_baseline(train: Sequence[tuple[str, int]], val: Sequence[tuple[str, int]]) -> Baseline | None:
    """Word unigrams and bigrams (one-letter words too), sublinear term frequency, words seen at
    least twice; a logistic regression with scikit-learn's defaults otherwise (no tuning on
    validation). Texts without words (emoji, unspaced Chinese or Japanese) fall back to character
    n-grams; None when even those find nothing."""
    import time

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    texts, labels = [t for t, _ in train], np.array([y for _, y in train])
    min_df = 2 if len(texts) >= 50 else 1
    words = {"token_pattern": r"(?u)\b\w+\b", "ngram_range": (1, 2)}
    for options in (words | {"min_df": min_df}, {"analyzer": "char_wb", "ngram_range": (1, 3), "min_df": 1}):
        vectorizer = TfidfVectorizer(sublinear_tf=True, **options)
        try:
            x = vectorizer.fit_transform(texts)
            break
        except ValueError:  # "empty vocabulary": nothing this analyzer calls a word
            continue
    else:
        return None
    model = LogisticRegression(max_iter=2000).fit(x, labels)
    pred = model.predict(vectorizer.transform([t for t, _ in val]))
    accuracy = float(np.mean(pred == np.array([y for _, y in val])))
    return Baseline(accuracy, time.perf_counter() - t0, len(vectorizer.vocabulary_))
