"""Label Studio webhook events: validated, reduced to what a job needs, and given a stable id.

Label Studio sends a webhook once, inside the request that caused it, and never retries; but a
project can have two webhooks to the same URL, a proxy can replay, and users re-send by hand. The
event id is derived from the action, the objects it is about and their version, so the same
event delivered twice maps to the same job and is done once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from prelabel.contract import Event as Event  # re-exported: the type lives in the contract
from prelabel.errors import PrelabelError
from prelabel.studio.tenancy import stamp_of

# Events that start work; any other action Label Studio sends is acknowledged and ignored.
TASKS_CREATED = "TASKS_CREATED"
ANNOTATION_CREATED = "ANNOTATION_CREATED"
ANNOTATION_UPDATED = "ANNOTATION_UPDATED"
ANNOTATIONS_DELETED = "ANNOTATIONS_DELETED"
START_TRAINING = "START_TRAINING"
HANDLED = frozenset({TASKS_CREATED, ANNOTATION_CREATED, ANNOTATION_UPDATED, ANNOTATIONS_DELETED, START_TRAINING})
# Events a person just caused: queued ahead of bulk work (pre-annotation, review slices), so an
# annotator's label reaches the few-shot pool, ranking and quality within one job slice.
HUMAN = frozenset({ANNOTATION_CREATED, ANNOTATION_UPDATED, ANNOTATIONS_DELETED})

# "Start training" carries nothing but the project: a second click within this window is the
# same request; after it, a new training run.
START_TRAINING_DEDUPE_S = 60


class EventError(PrelabelError, ValueError):
    """A webhook body that cannot be a Label Studio event; answered with 400, nothing enqueued."""


def parse_event(body: Any) -> Event | None:
    """The event in a webhook body; None for actions prelabel does not act on.

    Raises ``EventError`` when the body is not a well-formed event of a handled action.
    """
    if not isinstance(body, dict) or not isinstance(body.get("action"), str):
        raise EventError("webhook body must be a JSON object with a string 'action'")
    action = body["action"]
    if action not in HANDLED:
        return None
    project = body.get("project")
    pid = _int(project.get("id") if isinstance(project, dict) else project, "project id")
    config = project.get("label_config") if isinstance(project, dict) else None
    if config is not None and not isinstance(config, str):
        raise EventError("project.label_config must be a string")
    event = _parse(body, action, pid, config)
    stamp = stamp_of(pid, project.get("created_at")) if isinstance(project, dict) else None
    return replace(event, stamp=stamp) if stamp else event


def _parse(body: dict[str, Any], action: str, pid: int, config: str | None) -> Event:
    if action == TASKS_CREATED:
        ids = _ids(body, "tasks", "task id")
        return Event(action, pid, event_key(action, pid, ids), task_ids=ids, label_config=config)
    if action in (ANNOTATION_CREATED, ANNOTATION_UPDATED):
        annotation = body.get("annotation")
        if not isinstance(annotation, dict):
            raise EventError(f"{action} needs an 'annotation' object")
        aid = _int(annotation.get("id"), "annotation id")
        tid = _int(annotation.get("task"), "annotation task")
        updated = annotation.get("updated_at")
        version = updated if isinstance(updated, str) and updated else _digest(annotation.get("result"))
        return Event(action, pid, event_key(action, pid, aid, version), task_ids=[tid], annotation_ids=[aid],
                     label_config=config)
    if action == ANNOTATIONS_DELETED:
        ids = _ids(body, "annotations", "annotation id")
        return Event(action, pid, event_key(action, pid, ids), annotation_ids=ids, label_config=config)
    return Event(action, pid, event_key(action, pid), label_config=config, dedupe_ttl=START_TRAINING_DEDUPE_S)


def _ids(body: dict[str, Any], key: str, what: str) -> list[int]:
    items = body.get(key)
    if not isinstance(items, list) or not items:
        raise EventError(f"{body['action']} needs a non-empty '{key}' list")
    return sorted({_int(item.get("id") if isinstance(item, dict) else None, what) for item in items})


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventError(f"missing or invalid {what}: {value!r}")
    return value


def _digest(value: Any) -> str:
    try:
        canonical = json.dumps(value, sort_keys=True, default=str)
    except (RecursionError, ValueError) as exc:  # a body nested ~1,000 deep: not a Label Studio event
        raise EventError(f"event cannot be read: {type(exc).__name__}") from None
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def event_key(*parts: Any) -> str:
    return _digest(parts)
