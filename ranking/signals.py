"""Per-task signals for ranking and quality, read from Label Studio task records.

A task record is what ``tasks.list(fields="all")`` returns: ``data``, ``annotations`` and
``predictions``. The pre-annotation is prelabel's latest non-review prediction, the review is
the ``review:`` one (see docs/integration.md); a human label is the latest annotation that was
not cancelled.

What "labeled" means, the same for every control type: a task is labeled when a person submitted
a (not cancelled) annotation, whatever it holds: a ``Choices`` label, ``Labels`` spans (or none:
"no entity here" is an answer), a ``Rating``, a ``Number``, a ``TextArea`` text, any mix of
controls. A labeled task gets priority 0 and no priority is written on it. The class label used
for agreement and the refresh model (``human``) is the first ``Choices`` control's, when the
config has one.

The task's confidence (``score``) is its pre-annotation's task score, which combines every
control's score (the lowest); a pre-annotation without any region has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prelabel.contract import RegionStamp, ReviewStatus, is_review, stamp_of, status_of

ABNORMAL_REVIEW = {ReviewStatus.REJECTED, ReviewStatus.NEEDS_HUMAN, ReviewStatus.REVIEW_ERROR}
Span = tuple[int, int, str]  # start, end, label of one span region


@dataclass
class TaskSignals:
    id: int
    text: str
    human: str | None = None  # the human's label for the control, when labeled
    annotated: bool = False  # a person submitted an annotation (any control type): labeled
    predicted: str | None = None  # the pre-annotation's label
    reviewed: str | None = None  # the reviewer's label (its correction, or the same label)
    score: float | None = None  # confidence of the pre-annotation
    label_probs: dict[str, float] | None = None
    label_probs_kind: str = "distribution"  # or "inclusion" (multiple choice: per-label, no sum to 1)
    raw_score: float | None = None  # the score before calibration (what calibration is fitted on)
    review_status: str = ""
    pre_status: str = ""  # "", "needs_human" or "error" (the model_version suffix)
    extra: dict[str, Any] = field(default_factory=dict)
    # a Labels (span) control's regions as (start, end, label): the human's and the pre-annotation's
    human_spans: frozenset[Span] | None = None
    predicted_spans: frozenset[Span] | None = None

    @property
    def labeled(self) -> bool:
        return self.annotated or self.human is not None

    @property
    def disagreement(self) -> bool:
        return self.reviewed is not None and self.predicted is not None and self.reviewed != self.predicted


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def _latest(items: list[Any]) -> Any:
    return max(items, key=lambda item: _get(item, "id") or 0) if items else None


def choice_of(result: list[dict[str, Any]] | None, control: str) -> str | None:
    """The first chosen label of ``control`` in a result list."""
    for region in result or []:
        if region.get("from_name") == control:
            choices = (region.get("value") or {}).get("choices") or []
            if choices:
                return str(choices[0])
    return None


def spans_of(result: list[dict[str, Any]] | None, control: str) -> frozenset[Span]:
    """The span regions of ``control`` (a ``Labels`` control) in a result list."""
    found = set()
    for region in result or []:
        value = region.get("value") or {}
        if region.get("from_name") == control and isinstance(value.get("start"), int):
            for label in value.get("labels") or []:
                found.add((int(value["start"]), int(value.get("end") or 0), str(label)))
    return frozenset(found)


def control_stamp(result: list[dict[str, Any]] | None, control: str) -> RegionStamp:
    """The ``prelabel`` stamp of the control's first stamped region (empty when there is none)."""
    for region in result or []:
        if region.get("from_name") == control and stamp_of(region):
            return stamp_of(region)
    return {}


def probs_of(result: list[dict[str, Any]] | None, control: str) -> dict[str, float] | None:
    probs = control_stamp(result, control).get("label_probs")
    if isinstance(probs, dict) and probs:
        return {str(k): float(v) for k, v in probs.items()}
    return None


def task_signals(task: Any, control: str, text_key: str, span_control: str | None = None) -> TaskSignals:
    """Signals of one task for one ``Choices`` control (``control``) over ``data[text_key]``, and
    the spans of a ``Labels`` control (``span_control``) when the config has no ``Choices``."""
    data = _get(task, "data") or {}
    signals = TaskSignals(id=int(_get(task, "id")), text=str(data.get(text_key, "")))
    humans = [a for a in (_get(task, "annotations") or []) if not _get(a, "was_cancelled", False)]
    human = _latest(humans)
    if human is not None:
        signals.annotated = True
        signals.human = choice_of(_get(human, "result"), control) if control else None
        if span_control:
            signals.human_spans = spans_of(_get(human, "result"), span_control)
    predictions = list(_get(task, "predictions") or [])
    pre = _latest([p for p in predictions if not is_review(_get(p, "model_version"))])
    if pre is not None:
        signals.pre_status = status_of(_get(pre, "model_version"))
        signals.predicted = choice_of(_get(pre, "result"), control)
        signals.label_probs = probs_of(_get(pre, "result"), control)
        if span_control:
            signals.predicted_spans = spans_of(_get(pre, "result"), span_control)
        stamp = control_stamp(_get(pre, "result"), control)
        signals.label_probs_kind = str(stamp.get("label_probs_kind") or "distribution")
        score = _get(pre, "score")
        answered = bool(_get(pre, "result"))  # a region of any control: the task score covers them all
        signals.score = float(score) if score is not None and answered else None
        raw = stamp.get("raw_score", score)
        signals.raw_score = float(raw) if raw is not None and answered else None
    review = _latest([p for p in predictions if is_review(_get(p, "model_version"))])
    if review is not None:
        signals.review_status = status_of(_get(review, "model_version"))
        signals.reviewed = choice_of(_get(review, "result"), control)
    signals.review_status = str(data.get("prelabel_review") or signals.review_status)
    return signals
