"""One priority per unlabeled task: where a human adds the most value first.

    base = W_UNCERTAIN * uncertainty + W_DISAGREE * disagreement + W_ABNORMAL * abnormal
    priority = base * DIVERSITY_DECAY ** (better tasks of the same cluster ahead of it)

* uncertainty: of the pre-annotation's label distribution when the LLM gave logprobs
  (``label_probs``), else of the refresh model's (trained on the project's human labels), else
  1 - the pre-annotation's score, else 1 (no pre-annotation: nothing is known);
* disagreement: 1 when the reviewer's label differs from the pre-annotator's, or when a
  confident refresh model disagrees with the pre-annotation;
* abnormal: 1 when the review or the pre-annotation did not end ``ok``/``passed``.
Labeled tasks get 0: they need no human any more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prelabel.ranking.diversity import clusters, diversify, embed
from prelabel.ranking.refresh_model import RefreshModel
from prelabel.ranking.signals import ABNORMAL_REVIEW, TaskSignals
from prelabel.ranking.uncertainty import Measure, uncertainty

W_UNCERTAIN, W_DISAGREE, W_ABNORMAL = 0.5, 0.3, 0.2
DIVERSITY_DECAY = 0.85
CONFIDENT = 0.8


@dataclass
class Ranking:
    ids: list[int]
    priority: np.ndarray
    uncertainty: np.ndarray
    source: list[str]  # where each task's uncertainty came from


def rank(signals: Sequence[TaskSignals], labels: Sequence[str], measure: Measure = "margin",
         n_clusters: int | None = None, seed: int = 0) -> Ranking:
    n = len(signals)
    labels = list(labels)
    texts = [s.text for s in signals]
    unc = np.ones(n)
    source = ["none"] * n
    disagree = np.array([1.0 if s.disagreement else 0.0 for s in signals])
    abnormal = np.array([1.0 if (s.review_status in ABNORMAL_REVIEW or s.pre_status) else 0.0 for s in signals])

    model = RefreshModel(labels, seed).fit([s.text for s in signals if s.labeled],
                                           [s.human for s in signals if s.labeled]) if labels else None
    model_probs = model.predict_proba(texts) if model is not None and model.fitted else None
    for i, s in enumerate(signals):
        if s.label_probs and labels:
            row = np.array([[s.label_probs.get(label, 0.0) for label in labels]])
            unc[i], source[i] = uncertainty(row, measure)[0], "logprobs"
        elif model_probs is not None:
            unc[i], source[i] = uncertainty(model_probs[i:i + 1], measure)[0], "refresh_model"
            best = int(model_probs[i].argmax())
            if s.predicted is not None and model_probs[i, best] >= CONFIDENT and labels[best] != s.predicted:
                disagree[i] = 1.0
        elif s.score is not None:
            unc[i], source[i] = 1.0 - s.score, "score"

    base = W_UNCERTAIN * unc + W_DISAGREE * disagree + W_ABNORMAL * abnormal
    labeled = np.array([s.labeled for s in signals], dtype=bool)
    base[labeled] = 0.0
    if n > 1:
        k = n_clusters or int(np.clip(np.sqrt(n / 2), 2, 200))
        base = diversify(base, clusters(embed(texts, seed=seed), k, seed))
    return Ranking([s.id for s in signals], base, unc, source)
