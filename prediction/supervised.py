"""The supervised stage: a linear classifier fitted on the project's own human labels.

For a ``Choices`` control a TF-IDF of word (1-2) and character (2-4, within words) n-grams and a
logistic regression beat a small LLM after a few dozen labels and answer in milliseconds. One
model per control; single choice is the ranking's ``FallbackClassifier`` (the same model refreshes the
queue's priorities, see ``ranking.priority.rank``), multiple choice one binary model per label.

A stage is only as good as its threshold: ``calibrate_threshold`` picks, on held-out human labels
the model never saw, the lowest confidence above which it is at least as accurate as the stage it
replaces. A stage with no such threshold answers nothing.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import MultiLabelBinarizer

from prelabel.ranking.fallback_classifier import FallbackClassifier

MIN_TRAIN_LABELS = 10  # fewer: no stage (a linear model on a handful of texts is noise)
MIN_SUPPORT = 10  # held-out answers a threshold must cover to be trusted
STAGE_FORMAT = 1  # bump when the pickled layout changes: older blobs are ignored, refitted


def featurizer() -> FeatureUnion:
    """Word and in-word character n-grams: robust to typos and morphology, no model to download."""
    return FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=50_000)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=1,
                                 max_features=50_000)),
    ])


@dataclass
class ControlModel:
    """One ``Choices`` control's classifier over the text of its object."""

    control: str
    labels: list[str]
    multiple: bool
    vectorizer: FeatureUnion
    model: Any  # FallbackClassifier (single choice) or OneVsRestClassifier (multiple choice)
    binarizer: MultiLabelBinarizer | None = None

    @classmethod
    def fit(cls, control: str, labels: Sequence[str], multiple: bool, texts: Sequence[str],
            targets: Sequence[Sequence[str]], seed: int = 0) -> ControlModel | None:
        """The fitted model, or None when the labels cannot support one (too few, one class)."""
        pairs = [(t, [c for c in y if c in labels]) for t, y in zip(texts, targets)]
        pairs = [(t, y) for t, y in pairs if y]
        seen = {c for _, y in pairs for c in (y if multiple else y[:1])}
        if len(pairs) < MIN_TRAIN_LABELS or len(seen) < 2:
            return None
        vectorizer = featurizer()
        features = vectorizer.fit_transform([t for t, _ in pairs])
        if not multiple:
            single = FallbackClassifier(labels, seed, c=10.0, solver="lbfgs").fit(features, [y[0] for _, y in pairs])
            return cls(control, list(labels), False, vectorizer, single) if single.fitted else None
        binarizer = MultiLabelBinarizer(classes=list(labels))
        matrix = binarizer.fit_transform([y for _, y in pairs])
        keep = matrix.any(axis=0) & ~matrix.all(axis=0)  # labels always or never present: no classifier
        if not keep.any():
            return None
        ovr = OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=500, random_state=seed))
        ovr.fit(features, matrix[:, keep])
        return cls(control, list(labels), True, vectorizer, (ovr, keep, matrix.mean(axis=0)), binarizer)

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        """Tasks x labels: a distribution (single choice) or inclusion probabilities (multiple)."""
        if not texts:
            return np.zeros((0, len(self.labels)))
        features = self.vectorizer.transform(list(texts))
        if not self.multiple:
            return np.asarray(self.model.predict_proba(features))
        ovr, keep, prior = self.model
        out = np.tile(prior, (len(texts), 1)).astype(float)  # constant labels keep their rate (0 or 1)
        out[:, keep] = ovr.predict_proba(features)
        return out

    def answers(self, texts: Sequence[str]) -> list[tuple[list[str], float]]:
        """(chosen labels, confidence) per text. Multiple choice: confidence of the least settled
        include/leave-out decision, so one doubtful label makes the whole answer doubtful."""
        probs = self.proba(texts)
        out = []
        for row in probs:
            if not self.multiple:
                best = int(row.argmax())
                out.append(([self.labels[best]], float(row[best])))
                continue
            chosen = [label for label, p in zip(self.labels, row) if p >= 0.5]
            if not chosen:  # a Choices answer needs at least one label: the likeliest, unsure
                best = int(row.argmax())
                out.append(([self.labels[best]], float(row[best])))
            else:
                out.append((chosen, float(np.maximum(row, 1.0 - row).min())))
        return out


def calibrate_threshold(confidence: Sequence[float], correct: Sequence[bool], target: float,
                        min_support: int = MIN_SUPPORT) -> float | None:
    """The lowest confidence ``t`` such that held-out answers with confidence >= ``t`` are right
    at least ``target`` of the time (over at least ``min_support`` of them); None when none is.

    Lowest, because every task above it is one LLM call saved at no loss of accuracy. The
    accuracy is the Wilson score interval's lower bound (one standard error): on a small slice a
    run of ten right answers is weak evidence, and the threshold should not chase it.
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if len(conf) < min_support:
        return None
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(ok[order])
    n = np.arange(1, len(order) + 1)
    accuracy = wilson_lower(hits, n)
    # candidate cut after position k (all answers with conf >= conf[order[k]]); ties stay together
    best: float | None = None
    for k in range(min_support - 1, len(order)):
        if k + 1 < len(order) and conf[order[k + 1]] == conf[order[k]]:
            continue
        if accuracy[k] >= target:
            best = float(conf[order[k]])
    return best


def wilson_lower(hits: np.ndarray, n: np.ndarray, z: float = 1.0) -> np.ndarray:
    """Lower bound of the Wilson score interval of ``hits`` successes in ``n`` trials."""
    p = hits / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n)


@dataclass
class SupervisedStage:
    """A project's fitted control models, their thresholds and what the held-out slice measured."""

    models: dict[str, ControlModel]
    thresholds: dict[str, float | None]
    n_labels: int
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: str = ""

    def __post_init__(self) -> None:
        if not self.version:
            digest = hashlib.sha256(pickle.dumps((self.models, self.n_labels, self.thresholds))).hexdigest()
            self.version = f"supervised-{self.n_labels}-{digest[:8]}"

    @property
    def routed(self) -> bool:
        """True when at least one control has a threshold the held-out slice supports."""
        return any(t is not None for t in self.thresholds.values())

    def dumps(self) -> bytes:
        return pickle.dumps((STAGE_FORMAT, self))

    @staticmethod
    def loads(blob: bytes) -> SupervisedStage | None:
        """The stage in ``blob`` (written by ``dumps`` in the worker), None for another format."""
        fmt, stage = pickle.loads(blob)
        return stage if fmt == STAGE_FORMAT and isinstance(stage, SupervisedStage) else None
