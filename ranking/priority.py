"""One priority per unlabeled task: where a human adds the most value first.

    base = W_UNCERTAIN * uncertainty + W_DISAGREE * disagreement + W_ABNORMAL * abnormal
    priority = base * DIVERSITY_DECAY ** (better tasks of the same cluster ahead of it)

* uncertainty: of the pre-annotation's label distribution when the LLM gave logprobs
  (``label_probs``; for multiple choice the least settled include/leave-out decision), else of
  the refresh model's (trained on the project's human labels), else 1 - the pre-annotation's
  score, else 1 (no pre-annotation: nothing is known);
* disagreement: 1 when the reviewer's label differs from the pre-annotator's, or when a
  confident refresh model disagrees with the pre-annotation;
* abnormal: 1 when the review or the pre-annotation did not end ``ok``/``passed``.
Labeled tasks get 0: they need no human any more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from prelabel.ranking.diversity import TextIndex, diversify
from prelabel.ranking.fallback_classifier import FallbackClassifier
from prelabel.ranking.signals import ABNORMAL_REVIEW, TaskSignals
from prelabel.ranking.uncertainty import Measure, inclusion_uncertainty, uncertainty

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
         index: TextIndex | None = None, seed: int = 0,
         model: Callable[[Sequence[str]], np.ndarray] | None = None) -> Ranking:
    """Priorities of ``signals`` (same order). ``index``: their texts' TextIndex, if cached.
    ``model``: the project's supervised stage (texts -> probabilities over ``labels``), so the
    queue is ranked by the model that pre-annotates; without one a refresh model is fitted here."""
    n = len(signals)
    labels = list(labels)
    index = index if index is not None else TextIndex.build([s.text for s in signals], seed=seed)
    unc = np.ones(n)
    source = np.full(n, "none", dtype=object)

    score = np.array([np.nan if s.score is None else s.score for s in signals])
    has_score = ~np.isnan(score)
    unc[has_score], source[has_score] = 1.0 - score[has_score], "score"

    labeled = np.array([s.labeled for s in signals], dtype=bool)
    disagree = np.array([s.disagreement for s in signals], dtype=float)
    abnormal = np.array([bool(s.review_status in ABNORMAL_REVIEW or s.pre_status) for s in signals], dtype=float)
    if labels:
        todo = np.flatnonzero(~labeled)
        probs = _refresh_probs(signals, labels, index, labeled, todo, seed, model)
        if probs is not None:
            unc[todo], source[todo] = uncertainty(probs, measure), "fallback_classifier"
            best = probs.argmax(axis=1)
            predicted = np.array([signals[i].predicted for i in todo], dtype=object)
            confident_other = (probs.max(axis=1) >= CONFIDENT) & (predicted != None)  # noqa: E711
            confident_other &= np.array(labels, dtype=object)[best] != predicted
            disagree[todo[confident_other]] = 1.0
        for kind in ("distribution", "inclusion"):
            with_probs = [i for i, s in enumerate(signals) if s.label_probs and s.label_probs_kind == kind]
            if with_probs:
                rows = np.array([[(signals[i].label_probs or {}).get(label, 0.0) for label in labels]
                                 for i in with_probs])
                measured = uncertainty(rows, measure) if kind == "distribution" else inclusion_uncertainty(rows)
                unc[with_probs], source[with_probs] = measured, "label_probs"

    base = W_UNCERTAIN * unc + W_DISAGREE * disagree + W_ABNORMAL * abnormal
    base[labeled] = 0.0
    return Ranking([s.id for s in signals], diversify(base, index.groups, DIVERSITY_DECAY), unc, list(source))


def _refresh_probs(signals: Sequence[TaskSignals], labels: list[str], index: TextIndex, labeled: np.ndarray,
                   todo: np.ndarray, seed: int, model: Callable[[Sequence[str]], np.ndarray] | None
                   ) -> np.ndarray | None:
    """The unlabeled tasks' label probabilities: the supervised stage's, else the fallback classifier's."""
    if model is not None:
        return np.asarray(model([signals[i].text for i in todo])) if len(todo) else np.zeros((0, len(labels)))
    classified = np.array([s.human is not None for s in signals], dtype=bool)  # labeled with a class
    classes = [s.human for s in signals if s.human is not None]
    fallback = FallbackClassifier(labels, seed).fit(index.features[classified], classes)
    return fallback.predict_proba(index.features[todo]) if fallback.fitted else None
