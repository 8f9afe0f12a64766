"""Which tasks count as verified by humans, and what their label is.

Only annotations count, never predictions: a pre-annotation becomes a label only when a human
submitted it (an annotation created from it). Cancelled annotations (skips) never count. With
several annotators the label is the majority (``min_agreement`` share of them must agree), or the
ground-truth annotation when there is one and ``ground_truth_only`` asks for it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VerifyOptions:
    ground_truth_only: bool = False
    min_annotators: int = 1
    min_agreement: float = 0.5  # share of the task's annotators that must agree (strictly more than half: majority)


@dataclass
class Verified:
    result: list[dict[str, Any]]
    annotators: list[int]
    agreement: float


def _key(result: list[dict[str, Any]]) -> str:
    """Canonical form of a result: region ids and provenance ignored, order ignored."""
    core = sorted(json.dumps({k: r.get(k) for k in ("from_name", "to_name", "type", "value")}, sort_keys=True)
                  for r in result)
    return "|".join(core)


def verified_label(task: dict[str, Any], options: VerifyOptions) -> tuple[Verified | None, str]:
    """(the task's verified human result, why not when None)."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled") and a.get("result")]
    if not annotations:
        skipped = any(a.get("was_cancelled") for a in task.get("annotations") or [])
        return None, "skipped" if skipped else "unlabeled"
    if options.ground_truth_only:
        truth = [a for a in annotations if a.get("ground_truth")]
        if not truth:
            return None, "no_ground_truth"
        chosen = max(truth, key=lambda a: a.get("id") or 0)
        return Verified(chosen["result"], [chosen.get("completed_by")], 1.0), "ok"
    latest: dict[Any, dict[str, Any]] = {}
    for annotation in sorted(annotations, key=lambda a: a.get("id") or 0):
        latest[annotation.get("completed_by")] = annotation  # one vote per annotator: their latest
    if len(latest) < options.min_annotators:
        return None, "too_few_annotators"
    votes = Counter(_key(a["result"]) for a in latest.values())
    winner, count = votes.most_common(1)[0]
    share = count / len(latest)
    tie = sum(1 for c in votes.values() if c == count) > 1
    if tie or share < options.min_agreement or (len(latest) > 1 and share <= 0.5 and options.min_agreement >= 0.5):
        return None, "disagreement"
    chosen = next(a for a in latest.values() if _key(a["result"]) == winner)
    return Verified(chosen["result"], sorted(k for k in latest if k is not None), share), "ok"
