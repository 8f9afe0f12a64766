"""Spot-check sampling: which tasks a human should look at to judge the pre-annotations.

The practice's quota: of ``n`` tasks, about 60% (``abnormal_share``) come from abnormal tasks
(review rejected / needs human / error, pre-annotation incomplete, low confidence, reviewer
disagreeing), where mistakes concentrate. The remaining ``n - 60%`` are spread over the predicted
classes: each class gets ``max(2, remaining // number_of_classes)`` tasks whose review *passed*,
so a whole-class systematic error (every price query called transactional) shows up even when
the reviewer let it through. Whatever the class quotas leave over goes to abnormal tasks, then,
when those run out, to any other pre-annotated task. Deterministic for a seed.

A config without a ``Choices`` control (spans, ratings, numbers, texts) has one stratum,
``NO_CLASS``; its pre-annotated tasks are those with any region (a task score).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from prelabel.contract import ReviewStatus
from prelabel.ranking.signals import ABNORMAL_REVIEW, TaskSignals

LOW_CONFIDENCE = 0.5
PER_CLASS_MIN = 2
NO_CLASS = "(no class)"  # the one stratum of a config without a Choices control (spans, ratings, ...)


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
    # pre-annotated: a class (Choices), or regions of any control type (the task has a score), or a failure
    pool = [s for s in signals if not s.labeled and (s.predicted is not None or s.score is not None or s.pre_status)]
    reasons = {s.id: abnormal_reason(s, low_confidence) for s in pool}
    passed: dict[str, list[TaskSignals]] = defaultdict(list)
    for s in pool:
        if s.review_status == ReviewStatus.PASSED and reasons[s.id] is None:
            passed[s.predicted if s.predicted is not None else NO_CLASS].append(s)  # span, rating, ...: one stratum
    chosen: dict[int, str] = {}
    if passed:
        remaining = n - round(n * abnormal_share)
        quota = max(PER_CLASS_MIN, remaining // len(passed))
        for label in sorted(passed):
            rng.shuffle(passed[label])
            for s in passed[label][: min(quota, n - len(chosen))]:
                chosen[s.id] = f"class:{label}"
    abnormal = [s for s in pool if reasons[s.id]]
    rng.shuffle(abnormal)
    for s in abnormal[: max(0, n - len(chosen))]:
        chosen[s.id] = str(reasons[s.id])
    rest = [s for s in pool if s.id not in chosen]
    rng.shuffle(rest)
    for s in rest[: max(0, n - len(chosen))]:
        chosen[s.id] = "random"
    return Sample(sorted(chosen), chosen)
