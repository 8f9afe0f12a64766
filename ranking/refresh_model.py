"""A light classifier trained on the project's human labels, for tasks without logprobs.

When the LLM server returns no logprobs (or a task has no pre-annotation yet) there is no
label distribution to measure uncertainty on. TF-IDF + logistic regression on the verified
labels gives one cheaply, and gets better as humans label the top of the queue.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

MIN_LABELS = 4


class RefreshModel:
    """``fit`` on (text, label) pairs, ``predict_proba`` over ``labels`` (columns in that order)."""

    def __init__(self, labels: Sequence[str], seed: int = 0) -> None:
        self.labels = list(labels)
        self.seed = seed
        self.pipeline: Pipeline | None = None
        self.classes_: list[str] = []

    def fit(self, texts: Sequence[str], targets: Sequence[str]) -> RefreshModel:
        pairs = [(t, y) for t, y in zip(texts, targets) if y in self.labels]
        if len(pairs) < MIN_LABELS or len({y for _, y in pairs}) < 2:
            self.pipeline = None  # too little signal: no model rather than a misleading one
            return self
        self.pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=1),
            LogisticRegression(max_iter=500, C=4.0, random_state=self.seed),
        ).fit([t for t, _ in pairs], [y for _, y in pairs])
        self.classes_ = list(self.pipeline.classes_)
        return self

    @property
    def fitted(self) -> bool:
        return self.pipeline is not None

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities over ``self.labels``; labels never seen in training get 0."""
        out = np.zeros((len(texts), len(self.labels)))
        if self.pipeline is None or not len(texts):
            return out
        probs = self.pipeline.predict_proba(list(texts))
        for j, cls in enumerate(self.classes_):
            out[:, self.labels.index(cls)] = probs[:, j]
        return out
