"""Per-class agreement between pre-annotations and human labels, with the usual confusions.

For a classification control, every task that has both a human label and a pre-annotation
counts once, under its *human* label: agreement of a class = share of its human-labeled tasks
the pre-annotator got right. For a span (``Labels``) config, every span a human marked counts
once under its label: agreed when the pre-annotation has the same span (start, end) with the same
label, else confused with the label the pre-annotation gave that span, or ``(none)``. A class
under the bar is flagged with the labels it was most often mistaken for, which is what a
guideline author needs to fix the prompt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from prelabel.ranking.signals import TaskSignals


@dataclass
class ClassAgreement:
    label: str
    n: int
    agreed: int
    confusions: list[tuple[str, int]] = field(default_factory=list)  # (predicted, count), most first

    @property
    def rate(self) -> float | None:
        return self.agreed / self.n if self.n else None


@dataclass
class AgreementReport:
    labels: list[str]
    classes: list[ClassAgreement]
    matrix: np.ndarray  # rows: human label, columns: predicted label (+ a last "none" column)
    bar: float
    compared: int

    @property
    def overall(self) -> float | None:
        total = sum(c.n for c in self.classes)
        return sum(c.agreed for c in self.classes) / total if total else None

    @property
    def flagged(self) -> list[ClassAgreement]:
        return [c for c in self.classes if c.n and c.rate is not None and c.rate < self.bar]

    def as_dict(self) -> dict:
        return {
            "bar": self.bar, "compared": self.compared, "overall": self.overall,
            "classes": [{"label": c.label, "n": c.n, "agreed": c.agreed, "rate": c.rate,
                         "flagged": c in self.flagged, "top_confusions": c.confusions[:3]} for c in self.classes],
            "labels": self.labels, "matrix": self.matrix.tolist(),
        }


NONE = "(none)"


def agreement(signals: Sequence[TaskSignals], labels: Sequence[str], bar: float = 0.9) -> AgreementReport:
    """Compare pre-annotations with human labels; a missing pre-annotation label counts as wrong."""
    labels = list(labels)
    columns = labels + [NONE]
    index = {label: i for i, label in enumerate(columns)}
    matrix = np.zeros((len(labels), len(columns)), dtype=np.int64)
    confusions: dict[str, Counter[str]] = {label: Counter() for label in labels}
    compared = 0
    for human, predicted in _pairs(signals):
        if human not in index or human == NONE:
            continue
        predicted = predicted if predicted in index else NONE
        matrix[index[human], index[predicted]] += 1
        compared += 1
        if predicted != human:
            confusions[human][predicted] += 1
    classes = [
        ClassAgreement(label, int(matrix[i].sum()), int(matrix[i, i]), confusions[label].most_common())
        for i, label in enumerate(labels)
    ]
    return AgreementReport(labels, classes, matrix, bar, compared)


def _pairs(signals: Sequence[TaskSignals]) -> list[tuple[str, str | None]]:
    """(human label, pre-annotated label) of every compared item: a task (class), or a human span."""
    pairs: list[tuple[str, str | None]] = []
    for s in signals:
        pre_annotated = s.predicted is not None or s.pre_status or s.predicted_spans is not None
        if not s.labeled or not pre_annotated:
            continue  # not labeled by a human, or never pre-annotated: nothing to compare
        if s.human is not None:
            pairs.append((s.human, s.predicted))
        elif s.human_spans is not None:
            given = {(start, end): label for start, end, label in s.predicted_spans or ()}
            pairs += [(label, given.get((start, end))) for start, end, label in sorted(s.human_spans)]
    return pairs
