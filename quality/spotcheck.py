"""Spot-check sampling: which tasks a human should look at to judge the pre-annotations.

About 60% of the sample comes from abnormal tasks (review rejected / needs human / error,
pre-annotation incomplete, low confidence, reviewer disagreeing), where mistakes concentrate;
the rest is spread over the predicted classes so every class gets at least two looks (when it
has two), then filled at random. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from prelabel.ranking.signals import ABNORMAL_REVIEW, TaskSignals

LOW_CONFIDENCE = 0.5
PER_CLASS_MIN = 2


def abnormal_reason(s: TaskSignals, low_confidence: float = LOW_CONFIDENCE) -> str | None:
    if s.review_status in ABNORMAL_REVIEW:
        return f"review_{s.review_status}"
    if s.pre_status:
        return f"pre_annotation_{s.pre_status}"
    if s.disagreement:
        return "disagreement"
    if s.score is not None and s.score < low_confidence:
        return "low_confidence"
    return None


@dataclass
class Sample:
    ids: list[int]
    reasons: dict[int, str]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for reason in self.reasons.values():
            out[reason.split(":")[0]] += 1
        return dict(out)


def sample(signals: Sequence[TaskSignals], n: int = 150, abnormal_share: float = 0.6, seed: int = 0,
           low_confidence: float = LOW_CONFIDENCE) -> Sample:
    """Choose up to ``n`` unlabeled, pre-annotated tasks (see module docstring)."""
    rng = random.Random(seed)
    pool = [s for s in signals if not s.labeled and (s.predicted is not None or s.pre_status)]
    chosen: dict[int, str] = {}
    abnormal = [(s, r) for s in pool if (r := abnormal_reason(s, low_confidence))]
    rng.shuffle(abnormal)
    for s, reason in abnormal[: int(round(n * abnormal_share))]:
        chosen[s.id] = reason
    by_class: dict[str, list[TaskSignals]] = defaultdict(list)
    for s in pool:
        if s.id not in chosen:
            by_class[s.predicted or "(none)"].append(s)
    for label in sorted(by_class):
        rng.shuffle(by_class[label])
        have = sum(1 for s in pool if s.id in chosen and (s.predicted or "(none)") == label)
        for s in by_class[label][: max(0, PER_CLASS_MIN - have)]:
            if len(chosen) < n:
                chosen[s.id] = f"class:{label}"
    rest = [s for s in pool if s.id not in chosen]
    rng.shuffle(rest)
    for s in rest[: max(0, n - len(chosen))]:
        chosen[s.id] = "random"
    return Sample(sorted(chosen), chosen)
