"""Per-task signals for ranking and quality, read from Label Studio task records.

A task record is what ``tasks.list(fields="all")`` returns: ``data``, ``annotations`` and
``predictions``. The pre-annotation is prelabel's latest non-review prediction, the review is
the ``review:`` one (see docs/integration.md); a human label is the latest annotation that was
not cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REVIEW_PREFIX = "review:"
ABNORMAL_REVIEW = {"rejected", "needs_human", "review_error"}


@dataclass
class TaskSignals:
    id: int
    text: str
    human: str | None = None  # the human's label for the control, when labeled
    predicted: str | None = None  # the pre-annotation's label
    reviewed: str | None = None  # the reviewer's label (its correction, or the same label)
    score: float | None = None  # confidence of the pre-annotation
    label_probs: dict[str, float] | None = None
    label_probs_kind: str = "distribution"  # or "inclusion" (multiple choice: per-label, no sum to 1)
    raw_score: float | None = None  # the score before calibration (what calibration is fitted on)
    review_status: str = ""
    pre_status: str = ""  # "", "needs_human" or "error" (the model_version suffix)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def labeled(self) -> bool:
        return self.human is not None

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


def stamp_of(result: list[dict[str, Any]] | None, control: str) -> dict[str, Any]:
    """The ``prelabel`` provenance stamp of the control's region (empty when there is none)."""
    for region in result or []:
        if region.get("from_name") == control and isinstance(region.get("prelabel"), dict):
            return region["prelabel"]
    return {}


def probs_of(result: list[dict[str, Any]] | None, control: str) -> dict[str, float] | None:
    probs = stamp_of(result, control).get("label_probs")
    if isinstance(probs, dict) and probs:
        return {str(k): float(v) for k, v in probs.items()}
    return None


def task_signals(task: Any, control: str, text_key: str) -> TaskSignals:
    """Signals of one task for one ``Choices`` control (``control``) over ``data[text_key]``."""
    data = _get(task, "data") or {}
    signals = TaskSignals(id=int(_get(task, "id")), text=str(data.get(text_key, "")))
    humans = [a for a in (_get(task, "annotations") or []) if not _get(a, "was_cancelled", False)]
    human = _latest(humans)
    if human is not None:
        signals.human = choice_of(_get(human, "result"), control)
    predictions = list(_get(task, "predictions") or [])
    pre = _latest([p for p in predictions if not (_get(p, "model_version") or "").startswith(REVIEW_PREFIX)])
    if pre is not None:
        version = _get(pre, "model_version") or ""
        signals.pre_status = version.partition("#")[2]
        signals.predicted = choice_of(_get(pre, "result"), control)
        signals.label_probs = probs_of(_get(pre, "result"), control)
        stamp = stamp_of(_get(pre, "result"), control)
        signals.label_probs_kind = str(stamp.get("label_probs_kind") or "distribution")
        score = _get(pre, "score")
        signals.score = float(score) if score is not None and signals.predicted is not None else None
        raw = stamp.get("raw_score", score)
        signals.raw_score = float(raw) if raw is not None and signals.predicted is not None else None
    review = _latest([p for p in predictions if (_get(p, "model_version") or "").startswith(REVIEW_PREFIX)])
    if review is not None:
        signals.review_status = (_get(review, "model_version") or "").partition("#")[2]
        signals.reviewed = choice_of(_get(review, "result"), control)
    signals.review_status = str(data.get("prelabel_review") or signals.review_status)
    return signals
