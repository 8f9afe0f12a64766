"""What each task's latest pre-annotation came to, so that every count tells the truth.

Label Studio keeps only ``result``, ``score`` and ``model_version`` of a prediction, so the reason
a task was left for a human (an LLM outage, an invalid answer, a text too long) would be lost
there. The worker records it here, per project, in Redis:

* ``prelabel:outcome:<project>``  hash task id -> ``ok`` | ``needs_human:<reason>`` | ``error:<reason>``
* ``prelabel:errored:<project>``  set of task ids whose latest attempt failed for an LLM error:
  the reconcile job pre-annotates them again once the LLM answers.

A task counts as pre-annotated only when its prediction has at least one valid region.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

log = logging.getLogger(__name__)

OUTCOME_KEY = "prelabel:outcome:{pid}"
ERRORED_KEY = "prelabel:errored:{pid}"

OK, NEEDS_HUMAN, ERROR = "ok", "needs_human", "error"


@dataclass(frozen=True)
class Outcome:
    """One task's pre-annotation: its status, why (when not ok) and whether it has valid regions."""

    status: str
    reason: str | None = None
    labeled: bool = False

    def encode(self) -> str:
        return ":".join(p for p in (self.status, self.reason, "labeled" if self.labeled else "") if p)

    @classmethod
    def decode(cls, raw: bytes | str) -> Outcome:
        text = raw.decode() if isinstance(raw, bytes) else raw
        parts = text.split(":")
        labeled = parts[-1] == "labeled"
        if labeled:
            parts = parts[:-1]
        return cls(parts[0], ":".join(parts[1:]) or None, labeled or parts[0] == OK)


def prediction_outcome(prediction: dict[str, Any]) -> Outcome:
    """The outcome of a prediction as the predictor returns it (with ``meta``)."""
    meta = prediction.get("meta") or {}
    status = meta.get("status") or OK
    labeled = bool(prediction.get("result"))
    if status == OK:
        return Outcome(OK, None, labeled)
    if status == ERROR:
        kind = (meta.get("provenance") or {}).get("llm_error")
        reason = f"llm_{kind}" if kind else _first_reason(meta.get("errors")) or "error"
        return Outcome(ERROR, reason, labeled)
    return Outcome(status, _first_reason(meta.get("errors")) or status, labeled)


def _first_reason(errors: Any) -> str | None:
    """``{"intent": "invalid_label: ...", ...}`` -> the most frequent reason word."""
    if not isinstance(errors, dict) or not errors:
        return None
    reasons = Counter(str(message).split(":", 1)[0].strip() for message in errors.values())
    return reasons.most_common(1)[0][0]


def record(conn: redis.Redis, project_id: int, outcomes: dict[int, Outcome]) -> None:
    """Remember the latest outcome of these tasks, and which of them an LLM error left unlabeled."""
    if not outcomes:
        return
    pipe = conn.pipeline()
    pipe.hset(OUTCOME_KEY.format(pid=project_id), mapping={str(t): o.encode() for t, o in outcomes.items()})
    errored = [t for t, o in outcomes.items() if o.status == ERROR]
    healed = [t for t, o in outcomes.items() if o.status != ERROR]
    if errored:
        pipe.sadd(ERRORED_KEY.format(pid=project_id), *errored)
    if healed:
        pipe.srem(ERRORED_KEY.format(pid=project_id), *healed)
    pipe.execute()


def record_predictions(conn: redis.Redis | None, project: str | None, tasks: list[Any],
                       predictions: list[Any]) -> None:
    """``record`` for what ``/predict`` returned (Label Studio stores those predictions itself):
    tasks with an integer id in a project with a numeric id; others are not Label Studio's. A task
    answered ``[]`` (handed to the worker at the deadline) gets its outcome from the worker."""
    if conn is None or not project or not project.isdigit():
        return
    found = {task["id"]: prediction_outcome(prediction) for task, prediction in zip(tasks, predictions)
             if isinstance(task, dict) and isinstance(task.get("id"), int) and isinstance(prediction, dict)}
    try:
        record(conn, int(project), found)
    except redis.RedisError as exc:  # the answer to Label Studio matters more than the record
        log.warning("outcomes of project %s not recorded: %s", project, type(exc).__name__)


def load(conn: redis.Redis, project_id: int) -> dict[int, Outcome]:
    raw = conn.hgetall(OUTCOME_KEY.format(pid=project_id))
    return {int(k): Outcome.decode(v) for k, v in raw.items()}


def errored_tasks(conn: redis.Redis, project_id: int) -> list[int]:
    return sorted(int(t) for t in conn.smembers(ERRORED_KEY.format(pid=project_id)))


@dataclass
class Tally:
    """Counts of outcomes over a set of tasks, and the most frequent reason per status."""

    total: int = 0
    labeled: int = 0
    partly: int = 0  # labeled, but some control left for a human
    empty: int = 0  # a valid answer with nothing to mark (e.g. no entity in the text)
    failed: Counter = field(default_factory=Counter)  # (status, reason) of tasks without a valid region
    pending: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[Outcome | None]) -> Tally:
        tally = cls()
        for outcome in outcomes:
            tally.add(outcome)
        return tally

    def add(self, outcome: Outcome | None) -> None:
        self.total += 1
        if outcome is None:
            self.pending += 1
        elif outcome.labeled:
            self.labeled += 1
            self.partly += outcome.status != OK
        elif outcome.status == OK:
            self.empty += 1
        else:
            self.failed[(outcome.status, outcome.reason or outcome.status)] += 1

    @property
    def settled(self) -> bool:
        return self.pending == 0

    @property
    def unlabeled(self) -> int:
        """Tasks that got no valid region (errors and needs_human)."""
        return sum(self.failed.values())

    def failures(self) -> list[str]:
        """``8 error: llm_connection_error``, ``1 needs_human: context_too_long`` (most frequent reason each)."""
        parts = []
        for status in (ERROR, NEEDS_HUMAN):
            reasons = Counter({r: n for (s, r), n in self.failed.items() if s == status})
            if reasons:
                reason, _ = reasons.most_common(1)[0]
                more = f" (+{len(reasons) - 1} other reasons)" if len(reasons) > 1 else ""
                parts.append(f"{sum(reasons.values())} {status}: {reason}{more}")
        return parts

    def details(self) -> list[str]:
        """Everything but the pre-annotated count: failures, empty answers, pending tasks."""
        return [*self.failures(), *([f"{self.empty} answered with no region"] if self.empty else []),
                *([f"{self.pending} pending"] if self.pending else [])]

    def pre_annotated(self) -> str:
        partly = f" ({self.partly} partly, a control left for a human)" if self.partly else ""
        return f"{self.labeled}/{self.total} tasks pre-annotated{partly}"

    def summary(self) -> str:
        details = self.details()
        return self.pre_annotated() + ("; " + ", ".join(details) if details else "")
