"""Truthful counts: a task is pre-annotated only with a valid region; failures keep their reason;
the reconcile job picks exactly the tasks an LLM error or a lost webhook left unlabeled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from prelabel.contract import ProjectRef, tenant_slug
from prelabel.jobs.reconcile import is_own_preannotation, known_projects, needs_preannotation
from prelabel.prediction import outcomes
from prelabel.prediction.outcomes import Outcome, Tally, prediction_outcome

REGION = {"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["other"]}}


def prediction(status: str, result: list | None = None, errors: dict | None = None, llm_error: str | None = None):
    provenance = {"llm_error": llm_error} if llm_error else {}
    return {"result": result or [], "meta": {"status": status, "errors": errors or {}, "provenance": provenance}}


def test_outcome_of_each_kind_of_prediction() -> None:
    assert prediction_outcome(prediction("ok", [REGION])) == Outcome("ok", None, True)
    assert prediction_outcome(prediction("error", llm_error="connection_error")) == \
        Outcome("error", "llm_connection_error", False)
    assert prediction_outcome(prediction("needs_human", errors={"task": "context_too_long: 3000 > 2048"})) == \
        Outcome("needs_human", "context_too_long", False)
    partly = prediction("needs_human", [REGION], errors={"date": "bad_format: x", "time": "bad_format: y",
                                                         "city": "missing: z"})
    assert prediction_outcome(partly) == Outcome("needs_human", "bad_format", True)


@pytest.mark.parametrize("outcome", [Outcome("ok", None, True), Outcome("error", "llm_timeout"),
                                     Outcome("needs_human", "invalid_label", True), Outcome("needs_human", "a:b")])
def test_outcome_round_trips_through_redis_encoding(outcome: Outcome) -> None:
    assert Outcome.decode(outcome.encode().encode()) == outcome


def test_tally_counts_only_valid_regions_and_names_the_most_frequent_reason() -> None:
    tally = Tally.of([Outcome("error", "llm_connection_error")] * 5 + [Outcome("error", "llm_timeout")]
                     + [Outcome("needs_human", "context_too_long"), Outcome("ok", None, True),
                        Outcome("needs_human", "invalid_label", True), None])
    assert (tally.total, tally.labeled, tally.partly, tally.pending) == (10, 2, 1, 1)
    assert not tally.settled
    assert tally.summary() == ("2/10 tasks pre-annotated (1 partly, a control left for a human); "
                               "6 error: llm_connection_error (+1 other reasons), 1 needs_human: context_too_long, "
                               "1 pending")
    everything_failed = Tally.of([Outcome("error", "llm_connection_error")] * 8)
    assert everything_failed.summary() == "0/8 tasks pre-annotated; 8 error: llm_connection_error"
    assert everything_failed.settled and everything_failed.labeled == 0


@pytest.mark.parametrize(("task", "needed"), [
    ({"id": 1, "predictions": []}, True),  # no pre-annotation at all (a lost TASKS_CREATED)
    ({"id": 2, "predictions": [{"id": 5, "model_version": "smollm2@p-ab12#error"}]}, True),
    ({"id": 3, "predictions": [{"id": 5, "model_version": "smollm2@p-ab12"}]}, False),
    ({"id": 4, "predictions": [{"id": 5, "model_version": "smollm2@p-ab12#needs_human"}]}, False),
    # the latest of our pre-annotations counts; reviews and other models' predictions do not
    ({"id": 5, "predictions": [{"id": 5, "model_version": "smollm2@p-ab12#error"},
                               {"id": 9, "model_version": "tuned@p-ab12"}]}, False),
    ({"id": 6, "predictions": [{"id": 5, "model_version": "smollm2@p-ab12"},
                               {"id": 9, "model_version": "tuned@p-ab12#error"}]}, True),
    ({"id": 7, "predictions": [{"id": 5, "model_version": "review:smollm2-reviewer@p-ab12#needs_human"}]}, True),
    # a human touched it: never again
    ({"id": 8, "total_annotations": 1, "predictions": [{"id": 5, "model_version": "smollm2@p-ab12#error"}]}, False),
    ({"id": 9, "cancelled_annotations": 1, "predictions": []}, False),
])
def test_reconcile_selects_unlabeled_tasks_without_a_good_preannotation(task: dict, needed: bool) -> None:
    assert needs_preannotation(task) is needed


def test_a_task_just_imported_waits_for_its_own_webhook_job() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    fresh = {"id": 1, "predictions": [], "created_at": now - timedelta(seconds=20)}
    old = {"id": 2, "predictions": [], "created_at": "2026-11-29T11:50:00.000000Z"}
    errored_fresh = {**fresh, "predictions": [{"id": 5, "model_version": "smollm2@p-ab12#error"}]}
    assert not needs_preannotation(fresh, now)
    assert needs_preannotation(old, now)
    assert needs_preannotation(errored_fresh, now)


def test_own_preannotation_versions() -> None:
    assert is_own_preannotation("smollm2@p-56db983854")
    assert is_own_preannotation("smollm2@p-56db983854#error")
    assert not is_own_preannotation("review:smollm2-reviewer@p-56db983854#passed")
    assert not is_own_preannotation("my-imported-model-v2")


@pytest.fixture
def conn(embedded_redis):
    return embedded_redis


def test_errored_set_follows_the_latest_outcome(conn) -> None:
    outcomes.record(conn, 7, {1: Outcome("error", "llm_connection_error"), 2: Outcome("error", "llm_timeout"),
                              3: Outcome("ok", None, True)})
    assert outcomes.errored_tasks(conn, 7) == [1, 2]
    outcomes.record(conn, 7, {1: Outcome("ok", None, True), 2: Outcome("needs_human", "invalid_label")})
    assert outcomes.errored_tasks(conn, 7) == []
    assert outcomes.load(conn, 7) == {1: Outcome("ok", None, True), 2: Outcome("needs_human", "invalid_label"),
                                      3: Outcome("ok", None, True)}
    assert outcomes.errored_tasks(conn, 8) == []


def test_known_projects_are_those_set_up(conn) -> None:
    ours, theirs = tenant_slug("http://ls.example"), tenant_slug("http://other.example")
    conn.set(f"prelabel:project:{ours}:3", "{}")
    conn.set(f"prelabel:project:{ours}:12", "{}")
    conn.set(f"prelabel:project:{theirs}:3", "{}")  # another Label Studio's project 3: another project
    conn.set("prelabel:project:4", "{}")  # the format before tenancy (`prelabel migrate` moves it)
    conn.set("prelabel:projection:x", "{}")
    assert sorted(known_projects(conn)) == sorted([ProjectRef(ours, 3), ProjectRef(ours, 12), ProjectRef(theirs, 3)])
