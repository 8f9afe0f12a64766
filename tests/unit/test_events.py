"""Webhook bodies -> events: validation, what a job gets, and ids that make redelivery harmless."""

from __future__ import annotations

import pytest

from prelabel.jobs.events import START_TRAINING_DEDUPE_S, Event, EventError, parse_event


def tasks_created(ids: list[int], pid: int = 3) -> dict:
    return {"action": "TASKS_CREATED", "project": {"id": pid, "label_config": "<View/>"},
            "tasks": [{"id": i, "data": {"text": f"t{i}"}} for i in ids]}


def annotation(action: str = "ANNOTATION_CREATED", aid: int = 11, updated: str = "2026-11-24T10:00:00Z",
               result: list | None = None) -> dict:
    return {"action": action, "project": {"id": 3},
            "annotation": {"id": aid, "task": 5, "result": result or [], "updated_at": updated}}


def test_tasks_created_keeps_ids_and_config_but_not_texts() -> None:
    event = parse_event(tasks_created([9, 2, 2, 5]))
    assert event is not None
    assert (event.action, event.project_id, event.task_ids) == ("TASKS_CREATED", 3, [2, 5, 9])
    assert event.label_config == "<View/>"
    assert "t2" not in repr(event.as_dict()), "task texts must not travel in job arguments"
    assert Event.from_dict(event.as_dict()) == event


def test_same_event_twice_same_key_different_events_different_keys() -> None:
    assert parse_event(tasks_created([1, 2])).key == parse_event(tasks_created([2, 1])).key
    assert parse_event(tasks_created([1, 2])).key != parse_event(tasks_created([1, 3])).key
    assert parse_event(tasks_created([1, 2], pid=3)).key != parse_event(tasks_created([1, 2], pid=4)).key
    first = parse_event(annotation())
    assert parse_event(annotation()).key == first.key
    assert parse_event(annotation(updated="2026-11-24T10:05:00Z")).key != first.key, "an edit is a new version"
    assert parse_event(annotation("ANNOTATION_UPDATED")).key != first.key
    assert first.task_ids == [5] and first.annotation_ids == [11]


def test_annotation_without_timestamp_is_versioned_by_its_result() -> None:
    def body(result: list) -> dict:
        data = annotation(result=result)
        del data["annotation"]["updated_at"]
        return data

    a = [{"from_name": "c", "value": {"choices": ["x"]}}]
    b = [{"from_name": "c", "value": {"choices": ["y"]}}]
    assert parse_event(body(a)).key == parse_event(body(a)).key
    assert parse_event(body(a)).key != parse_event(body(b)).key


def test_start_training_deduplicates_only_briefly() -> None:
    event = parse_event({"action": "START_TRAINING", "project": 8})
    assert event.project_id == 8 and event.dedupe_ttl == START_TRAINING_DEDUPE_S
    assert parse_event(annotation()).dedupe_ttl is None


def test_deleted_annotations() -> None:
    event = parse_event({"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": 4}, {"id": 1}]})
    assert event.annotation_ids == [1, 4]


def test_unhandled_actions_are_ignored_not_errors() -> None:
    assert parse_event({"action": "PROJECT_UPDATED", "project": {"id": 1}}) is None
    assert parse_event({"action": "LABEL_LINK_CREATED"}) is None


@pytest.mark.parametrize("body", [
    None, [], "TASKS_CREATED", {"project": {"id": 1}}, {"action": 3},
    {"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": []},
    {"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": [{"data": {}}]},
    {"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": [{"id": "7"}]},
    {"action": "TASKS_CREATED", "project": {"id": -1}, "tasks": [{"id": 7}]},
    {"action": "TASKS_CREATED", "project": {"id": True}, "tasks": [{"id": 7}]},
    {"action": "TASKS_CREATED", "tasks": [{"id": 7}]},
    {"action": "ANNOTATION_CREATED", "project": {"id": 1}},
    {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 2}},
    {"action": "ANNOTATION_UPDATED", "project": {"id": 1}, "annotation": [1]},
    {"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": []},
    {"action": "START_TRAINING"},
], ids=lambda b: str(b)[:40])
def test_malformed_events_are_rejected(body: object) -> None:
    with pytest.raises(EventError):
        parse_event(body)
