"""Projects made the way a Label Studio user makes them (no ``prelabel init``) end where an
``init`` project ends: every task pre-annotated, reviewed and ranked, human labels learned from.

Real Label Studio, real Redis, real backend and worker processes, real llama.cpp (SmolLM2 as
pre-annotator and, under another name, reviewer). The model is connected with the UI's *Basic
auth* fields, so Label Studio's webhook to ``/webhook`` carries no credentials until the backend
wires it itself; nothing in these tests edits the webhook. Each test prints its row of the
issue's table (tasks, pre-annotated, reviewed, ranked).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prelabel.contract import aftercare_key, fewshot_keys, new_labels_key, quality_key, train_status_key
from tests.e2e.test_review_pipeline import (
    AUTH,
    CONFIG,
    QUERIES,
    SECRET,
    STATUSES,
    Stack,
    _own_db,
    project_state,
    start_stack,
    wait_for,
)

pytestmark = pytest.mark.e2e

SPAN = """<View>
  <Labels name="entity" toName="text"><Label value="PER"/><Label value="LOC"/><Label value="ORG"/></Labels>
  <Text name="text" value="$text"/>
</View>"""
TWO_CONTROLS = """<View>
  <Text name="text" value="$text"/>
  <Choices name="intent" toName="text"><Choice value="question"/><Choice value="request"/><Choice value="other"/>
  </Choices>
  <Labels name="entity" toName="text"><Label value="PER"/><Label value="LOC"/></Labels>
</View>"""
SENTENCES = ["Angela Merkel visited Paris.", "Book a table in Rome for Maria.", "Where does Tim Cook live?"]


@pytest.fixture(scope="module")
def stack(backend_factory, label_studio, llm_server, redis_url) -> Iterator[Stack]:
    stack = start_stack(backend_factory, label_studio, "by-hand", _own_db(redis_url),
                        {"PRELABEL_REVIEWER_MODEL": "smollm2-reviewer"})
    yield stack
    stack.stop()


def connect_by_hand(label_studio, stack: Stack, pid: int) -> None:
    """*Connect Model* with the Basic auth fields, as the UI does it."""
    label_studio.sdk().ml.create(project=pid, url=stack.backend.url, title="prelabel", is_interactive=False,
                                 auth_method="BASIC_AUTH", basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])


def hooks(label_studio, stack: Stack, pid: int) -> list[dict[str, Any]]:
    return [h.model_dump() for h in label_studio.sdk().webhooks.list(project=str(pid))
            if h.url.startswith(stack.backend.url)]


def wired(label_studio, stack: Stack, pid: int) -> list[dict[str, Any]]:
    found = hooks(label_studio, stack, pid)
    return found if any((h.get("headers") or {}).get("X-Prelabel-Secret") == SECRET for h in found) else []


def table_row(state: dict[int, dict]) -> dict[str, int]:
    """tasks, pre-annotated (a prelabel prediction), reviewed (a review status), ranked (a priority)."""
    return {"tasks": len(state),
            "pre_annotated": sum(bool(t["pre"]) for t in state.values()),
            "reviewed": sum(t["data"].get("prelabel_review") in STATUSES and bool(t["review"]) for t in state.values()),
            "ranked": sum(isinstance(t["data"].get("prelabel_priority"), float) for t in state.values())}


def all_done(label_studio, pid: int, n: int) -> Any:
    def check() -> dict | None:
        state = project_state(label_studio, pid)
        row = table_row(state)
        return state if row == {"tasks": n, "pre_annotated": n, "reviewed": n, "ranked": n} else None
    return check


def settle(label_studio, stack: Stack, pid: int, n: int, what: str) -> dict[int, dict]:
    """Wait for every task to be pre-annotated, reviewed and ranked; print the table row either way."""
    try:
        return wait_for(all_done(label_studio, pid, n), 300, what, stack)
    finally:
        print(f"\n[table] {what}: {json.dumps(table_row(project_state(label_studio, pid)))}")


def retrieve_predictions(label_studio, pid: int) -> None:
    """The Data Manager's *Retrieve Predictions* (the API call its button makes)."""
    label_studio.sdk().actions.create(id="retrieve_tasks_predictions", project=pid,
                                      selected_items={"all": True, "excluded": []},
                                      request_options={"timeout_in_seconds": 300})  # Label Studio waits for /predict


def test_basic_auth_fields_then_import(label_studio, stack: Stack) -> None:
    """Connected with the Basic auth fields, then tasks imported: TASKS_CREATED reaches the worker."""
    client = label_studio.sdk()
    pid = client.projects.create(title="by hand: basic auth, then import", label_config=CONFIG).id
    connect_by_hand(label_studio, stack, pid)
    found = wait_for(lambda: wired(label_studio, stack, pid), 30, "the backend to wire its webhook", stack)
    assert len(hooks(label_studio, stack, pid)) == 1, "a second webhook"
    client.projects.import_tasks(id=pid, request=[{"text": t} for t in QUERIES[:3]])
    settle(label_studio, stack, pid, 3, "basic auth fields, then tasks imported")
    # /setup again (Label Studio repeats it): nothing changes, still one webhook
    stack.backend.http(auth=AUTH).post("/setup", json={"project": f"{pid}.2", "schema": CONFIG,
                                                       "hostname": label_studio.url}).raise_for_status()
    assert hooks(label_studio, stack, pid) == found
    metrics = httpx.get(stack.backend.url + "/metrics", auth=AUTH, timeout=10).text
    assert f'prelabel_project_webhook{{project="{pid}",reason="",state="wired"' in metrics
    # the worker's own counters, in the backend's /metrics
    assert 'prelabel_worker_jobs_done_total{kind="handle_event",outcome="finished"}' in metrics
    assert 'prelabel_worker_tasks_total{cache=' in metrics
    assert 'prelabel_worker_llm_requests_total{outcome="ok"}' in metrics


def test_imported_first_retrieve_predictions_then_a_human_label(label_studio, stack: Stack) -> None:
    """Tasks imported, then the model connected (Basic auth fields), then *Retrieve Predictions*:
    no TASKS_CREATED ever comes, the after-care of /predict's answers does the rest."""
    client = label_studio.sdk()
    pid = client.projects.create(title="by hand: import, then connect", label_config=CONFIG).id
    client.projects.import_tasks(id=pid, request=[{"text": t} for t in QUERIES[3:7]])
    connect_by_hand(label_studio, stack, pid)
    wait_for(lambda: wired(label_studio, stack, pid), 30, "the backend to wire its webhook", stack)
    retrieve_predictions(label_studio, pid)
    state = settle(label_studio, stack, pid, 4, "tasks imported, then connected (Retrieve Predictions)")
    for task in state.values():
        assert len(task["pre"]) == 1 and len(task["review"]) == 1, task
    project = stack.project(pid)
    assert stack.redis().exists(aftercare_key(project, min(state), state[min(state)]['pre'][0]['model_version']))

    # Retrieve Predictions again: the same predictions, no second review
    retrieve_predictions(label_studio, pid)
    wait_for(lambda: stack.jobs()["running"] == 0 and stack.jobs()["queued"] == 0, 60, "the queue to drain", stack)
    assert all(len(t["review"]) == 1 for t in project_state(label_studio, pid).values())

    # a human label -> the few-shot pool, and the project ranked and compared again
    tid = min(state)
    annotation = client.annotations.create(id=tid, result=[{
        "from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["other"]}}])
    wait_for(lambda: stack.redis().sismember(new_labels_key(project), annotation.id), 60,
             "the annotation reaching the worker", stack)
    assert stack.redis().hexists(fewshot_keys(project).tasks, tid)
    # the refresh job ranks and compares in one go: agreement over the human label means it ran after it
    wait_for(lambda: (q := stack.redis().get(quality_key(project))) and json.loads(q)["compared"] == 1, 60,
             "the ranking and agreement refreshed with the human label", stack)

    # Start Training reaches the worker the same way
    client.ml.train(id=client.ml.list(project=pid)[0].id)
    wait_for(lambda: stack.redis().hgetall(train_status_key(project)), 60, "a training status", stack)


@pytest.mark.parametrize("config", [SPAN, TWO_CONTROLS], ids=["span", "two_controls"])
def test_imported_first_other_configs(label_studio, stack: Stack, config: str) -> None:
    client = label_studio.sdk()
    pid = client.projects.create(title="by hand: other config", label_config=config).id
    client.projects.import_tasks(id=pid, request=[{"text": t} for t in SENTENCES[:2]])
    connect_by_hand(label_studio, stack, pid)
    retrieve_predictions(label_studio, pid)
    settle(label_studio, stack, pid, 2, f"{'span' if config == SPAN else 'two controls'}: imported, then connected")
