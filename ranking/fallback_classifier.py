"""The ranking's fallback classifier: trained on the project's human labels, for tasks without logprobs.

When the LLM server returns no logprobs (or a task has no pre-annotation yet) there is no
label distribution to measure uncertainty on. Logistic regression on the hashed text features
of the verified labels gives one cheaply (a fraction of a second for thousands of labels), and
gets better as humans label the top of the queue.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

MIN_LABELS = 4


class FallbackClassifier:
    """``fit`` on (features, label), ``predict_proba`` over ``labels`` (columns in that order)."""

    def __init__(self, labels: Sequence[str], seed: int = 0, c: float = 4.0, solver: str = "saga") -> None:
        self.labels = list(labels)
        self.seed = seed
        self.c = c  # inverse regularisation: the supervised stage's TF-IDF features want less of it
        self.solver = solver  # saga for the huge hashed space; lbfgs converges faster on a fitted vocabulary
        self.model: LogisticRegression | None = None

    def fit(self, features: sp.spmatrix, targets: Sequence[str | None]) -> FallbackClassifier:
        keep = np.array([y in self.labels for y in targets], dtype=bool)
        y = np.array([t for t in targets if t in self.labels], dtype=object)
        if keep.sum() < MIN_LABELS or len(set(y)) < 2:
            self.model = None  # too little signal: no model rather than a misleading one
            return self
        self.model = LogisticRegression(solver=self.solver, max_iter=200 if self.solver == "saga" else 1000,
                                        C=self.c, random_state=self.seed)
        self.model.fit(features[keep], y)
        return self

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def predict_proba(self, features: sp.spmatrix) -> np.ndarray:
        """Probabilities over ``self.labels``; labels never seen in training get 0."""
        out = np.zeros((features.shape[0], len(self.labels)))
        if self.model is None or not features.shape[0]:
            return out
        probs = self.model.predict_proba(features)
        for j, cls in enumerate(self.model.classes_):
            out[:, self.labels.index(cls)] = probs[:, j]
        return out
