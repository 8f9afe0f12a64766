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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from prelabel.contract import (
    ModelVersion,
    Outcome,
    Prediction,
    ProjectRef,
    TaskStatus,
    errored_key,
    is_own_preannotation,
    outcome_key,
)
from prelabel.studio.client import plain

log = logging.getLogger(__name__)


def prediction_outcome(prediction: Prediction | dict[str, Any]) -> Outcome:
    """The outcome of a prediction as the predictor returns it (with ``meta``)."""
    meta = prediction.get("meta") or {}
    status = meta.get("status") or TaskStatus.OK
    labeled = bool(prediction.get("result"))
    if status == TaskStatus.OK:
        return Outcome(TaskStatus.OK, None, labeled)
    if status == TaskStatus.ERROR:
        kind = (meta.get("provenance") or {}).get("llm_error")
        reason = f"llm_{kind}" if kind else _first_reason(meta.get("errors")) or "error"
        return Outcome(TaskStatus.ERROR, reason, labeled)
    return Outcome(status, _first_reason(meta.get("errors")) or status, labeled)


def _first_reason(errors: Any) -> str | None:
    """``{"intent": "invalid_label: ...", ...}`` -> the most frequent reason word."""
    if not isinstance(errors, dict) or not errors:
        return None
    reasons = Counter(str(message).split(":", 1)[0].strip() for message in errors.values())
    return reasons.most_common(1)[0][0]


def record(conn: redis.Redis, project: ProjectRef, outcomes: dict[int, Outcome]) -> None:
    """Remember the latest outcome of these tasks, and which of them an LLM error left unlabeled."""
    if not outcomes:
        return
    pipe = conn.pipeline()
    pipe.hset(outcome_key(project), mapping={str(t): o.encode() for t, o in outcomes.items()})
    errored = [t for t, o in outcomes.items() if o.status == TaskStatus.ERROR]
    healed = [t for t, o in outcomes.items() if o.status != TaskStatus.ERROR]
    if errored:
        pipe.sadd(errored_key(project), *errored)
    if healed:
        pipe.srem(errored_key(project), *healed)
    pipe.execute()


def record_predictions(conn: redis.Redis | None, project: ProjectRef | None, tasks: list[Any],
                       predictions: list[Any]) -> None:
    """``record`` for what ``/predict`` returned (Label Studio stores those predictions itself):
    tasks with an integer id in a project with a numeric id; others are not Label Studio's. A task
    answered ``[]`` (handed to the worker at the deadline) gets its outcome from the worker."""
    if conn is None or project is None:
        return
    found = {task["id"]: prediction_outcome(prediction) for task, prediction in zip(tasks, predictions)
             if isinstance(task, dict) and isinstance(task.get("id"), int) and isinstance(prediction, dict)}
    try:
        record(conn, project, found)
    except redis.RedisError as exc:  # the answer to Label Studio matters more than the record
        log.warning("outcomes of project %s not recorded: %s", project, type(exc).__name__)


def load(conn: redis.Redis, project: ProjectRef) -> dict[int, Outcome]:
    raw = conn.hgetall(outcome_key(project))
    return {int(k): Outcome.decode(v) for k, v in raw.items()}


def errored_tasks(conn: redis.Redis, project: ProjectRef) -> list[int]:
    return sorted(int(t) for t in conn.smembers(errored_key(project)))


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
            self.partly += outcome.status != TaskStatus.OK
        elif outcome.status == TaskStatus.OK:
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
        for status in (TaskStatus.ERROR, TaskStatus.NEEDS_HUMAN):
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


def preannotation_tally(client: Any, project_id: int, recorded: Callable[[], dict[int, Outcome]]) -> Tally:
    """Per task of the project: pre-annotated (its latest prelabel prediction has a valid region),
    failed (with the reason the worker recorded, else the ``#status`` of the prediction), or pending.

    The worker records a reason before it writes the prediction, so the records are read after
    the predictions: every prediction seen then has its reason."""
    latest: dict[int, dict[str, Any]] = {}
    for prediction in (plain(p) for p in client.predictions.list(project=project_id)):
        if is_own_preannotation(prediction.get("model_version") or ""):
            task = prediction["task"]
            if task not in latest or prediction["id"] > latest[task]["id"]:
                latest[task] = prediction
    task_ids = [plain(t)["id"] for t in client.tasks.list(project=project_id)]
    reasons = recorded()
    per_task: list[Outcome | None] = []
    for task_id in task_ids:
        own = latest.get(task_id)
        status = ModelVersion.parse(own.get("model_version") if own else None).task_status
        if own and own.get("result"):
            per_task.append(Outcome(status, None, labeled=True))
        elif task_id in reasons and not reasons[task_id].labeled:
            per_task.append(reasons[task_id])
        else:
            per_task.append(Outcome(status, status) if own else None)
    return Tally.of(per_task)
