"""Per-class agreement and spot-check sampling on constructed signals."""

from __future__ import annotations

from collections import Counter

import numpy as np

from prelabel.quality.agreement import agreement
from prelabel.quality.plots import confusion_png
from prelabel.quality.spotcheck import sample
from prelabel.ranking.signals import TaskSignals


def s(tid: int, human: str | None, pred: str | None, score: float | None = 0.9, review: str = "passed",
      reviewed: str | None = None, pre_status: str = "") -> TaskSignals:
    return TaskSignals(id=tid, text=f"t{tid}", human=human, predicted=pred, score=score, review_status=review,
                       reviewed=reviewed if reviewed is not None else pred, pre_status=pre_status)


def test_agreement_per_class_flags_and_confusions(tmp_path) -> None:
    signals = [s(1, "a", "a"), s(2, "a", "a"), s(3, "a", "b"), s(4, "b", "b"), s(5, "b", "b"),
               s(6, "c", "a"), s(7, "c", "a"), s(8, "c", None, pre_status="needs_human"),
               s(9, None, "a"),  # unlabeled: not compared
               s(10, "b", None, score=None)]  # never pre-annotated: not compared
    report = agreement(signals, ["a", "b", "c"], bar=0.9)
    rates = {c.label: (c.n, c.agreed) for c in report.classes}
    assert rates == {"a": (3, 2), "b": (2, 2), "c": (3, 0)}
    assert [c.label for c in report.flagged] == ["a", "c"]
    c = next(x for x in report.classes if x.label == "c")
    assert c.confusions == [("a", 2), ("(none)", 1)]
    assert report.compared == 8 and report.overall == 4 / 8
    assert report.matrix.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [2, 0, 0, 1]]
    png = confusion_png(report.matrix, report.labels, report.labels + ["(none)"], tmp_path / "c.png")
    assert png.stat().st_size > 5_000


def test_spotcheck_mixes_abnormal_and_covers_classes_deterministically() -> None:
    rng = np.random.default_rng(0)
    signals = []
    for i in range(400):
        label = ["a", "b", "c", "rare"][0 if i < 200 else 1 if i < 330 else 2 if i < 397 else 3]
        review = "rejected" if i % 10 == 0 else "passed"
        signals.append(s(i, None, label, score=float(rng.uniform(0.5, 1.0)), review=review))
    signals += [s(1000 + i, "a", "a") for i in range(20)]  # labeled: never sampled
    picked = sample(signals, n=50, abnormal_share=0.6, seed=3)
    assert len(picked.ids) == 50 and len(set(picked.ids)) == 50
    assert all(i < 1000 for i in picked.ids)
    reasons = Counter(r.split(":")[0] for r in picked.reasons.values())
    # 20 non-abnormal slots / 4 classes = 5 passed tasks per class; "rare" has only 3 passed
    per_class = Counter(r for r in picked.reasons.values() if r.startswith("class:"))
    assert per_class == {"class:a": 5, "class:b": 5, "class:c": 5, "class:rare": 3}
    assert reasons["review_rejected"] == 50 - 18
    assert sample(signals, n=50, seed=3).ids == picked.ids
    assert sample(signals, n=50, seed=4).ids != picked.ids


def test_spotcheck_low_confidence_and_small_pools() -> None:
    signals = [s(1, None, "a", score=0.2), s(2, None, "a", score=0.95), s(3, None, None, pre_status="error")]
    picked = sample(signals, n=10)
    assert picked.ids == [1, 2, 3]
    assert picked.reasons[1] == "low_confidence" and picked.reasons[3] == "pre_annotation_error"


def test_spotcheck_class_quota_is_max_2_or_remaining_over_classes_from_passed_reviews() -> None:
    signals = []
    for label in ("a", "b", "c", "d"):
        for i in range(60):
            tid = len(signals)
            review = "rejected" if i < 25 else "passed" if i < 55 else ""  # the last 5: never reviewed
            signals.append(s(tid, None, label, review=review))
    picked = sample(signals, n=150, abnormal_share=0.6, seed=1)
    by_reason = Counter(r.split(":")[0] for r in picked.reasons.values())
    per_class = Counter(r for r in picked.reasons.values() if r.startswith("class:"))
    assert per_class == {f"class:{c}": 15 for c in "abcd"}, "max(2, (150 - 90) // 4) = 15 per class"
    assert all(signals[i].review_status == "passed" for i, r in picked.reasons.items() if r.startswith("class:"))
    assert by_reason["review_rejected"] == 90 and len(picked.ids) == 150
    few = sample(signals, n=10, abnormal_share=0.6, seed=1)  # max(2, 4 // 4) = 2: the floor of two per class
    assert Counter(r for r in few.reasons.values() if r.startswith("class:")) == {"class:a": 2, "class:b": 2,
                                                                                  "class:c": 2, "class:d": 2}
    assert Counter(r.split(":")[0] for r in few.reasons.values())["review_rejected"] == 2
