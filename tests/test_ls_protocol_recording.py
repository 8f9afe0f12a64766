"""What a real Label Studio (1.23.2) sends to an ML backend, and what it keeps from the answers.

A recording ML backend (a thread, tests/servers/recorder.py) is connected to the session's
Label Studio through label-studio-sdk. These tests pin the facts docs/label-studio-protocol.md
describes: if a Label Studio upgrade changes any of them, this file fails loudly.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from label_studio_sdk.core.api_error import ApiError

from tests.servers.recorder import RecordingBackend

pytestmark = pytest.mark.e2e

CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="sentiment" toName="text">'
    '<Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)
TEXTS = ["good", "bad", "meh"]
SETUP_KEYS = {"project", "schema", "hostname", "access_token", "extra_params"}
PREDICT_KEYS = {"tasks", "project", "label_config", "params"}


@pytest.fixture(scope="module")
def ls(label_studio):
    return label_studio.sdk()


@pytest.fixture()
def recorder():
    rec = RecordingBackend(model_version="rec-1").start()
    yield rec
    rec.stop()


@pytest.fixture()
def project(ls):
    p = ls.projects.create(title=f"protocol-{uuid.uuid4().hex[:8]}", label_config=CONFIG)
    yield p
    ls.projects.delete(id=p.id)


def _import(ls, project_id: int, texts=TEXTS) -> list[int]:
    res = ls.projects.import_tasks(
        id=project_id, request=[{"text": t} for t in texts], return_task_ids=True
    )
    return list(res.task_ids)


def _retrieve_predictions(ls, project_id: int) -> None:
    """The data manager action behind "Retrieve Predictions" (synchronous without RQ)."""
    ls.actions.create(
        id="retrieve_tasks_predictions",
        project=project_id,
        selected_items={"all": True, "excluded": []},
    )


def _stored_predictions(label_studio, task_id: int) -> list[dict]:
    """Raw JSON of /api/predictions, so no SDK model filters keys away."""
    with label_studio.http() as http:
        r = http.get("/api/predictions/", params={"task": task_id})
        r.raise_for_status()
        return r.json()


# --------------------------------------------------------------------------- connect / setup
def test_connect_sends_health_then_setup(label_studio, ls, recorder, project):
    ml = ls.ml.create(url=recorder.url, project=project.id, title="recorder")
    assert ml.state == "CO"  # connected
    assert ml.model_version == "rec-1"  # taken from our /setup answer (auto_update)
    assert ml.auto_update is True

    first, second = recorder.requests[:2]
    assert (first.method, first.path, second.method, second.path) == (
        "GET",
        "/health",
        "POST",
        "/setup",
    )
    # LS checks the backend twice on creation (validation, then save): health+setup x2
    assert [r.path for r in recorder.requests] == ["/health", "/setup"] * 2

    body = second.body
    assert set(body) == SETUP_KEYS
    assert re.fullmatch(rf"{project.id}\.\d+", body["project"])  # "<id>.<created_at epoch>"
    assert body["schema"] == CONFIG
    assert body["hostname"] == label_studio.url  # LABEL_STUDIO_HOST / --host
    assert body["access_token"] == label_studio.api_key  # the creator's *legacy* token
    assert body["extra_params"] is None

    headers = second.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("heartex/")
    assert "authorization" not in headers
    assert "authorization" not in first.headers

    # LS creates a webhook to <url>/webhook for all actions, with payload
    hooks = [w for w in ls.webhooks.list(project=project.id) if w.url == recorder.url + "/webhook"]
    assert len(hooks) == 1
    assert hooks[0].send_for_all_actions and hooks[0].send_payload and hooks[0].is_active


def test_extra_params_reach_setup(ls, recorder, project):
    ls.ml.create(url=recorder.url, project=project.id, extra_params={"prompt_version": "v7"})
    assert recorder.by_path("/setup")[-1].body["extra_params"] == {"prompt_version": "v7"}


def test_setup_error_refuses_connection_then_blocks_predictions(ls, recorder, project):
    recorder.setup_status = 500
    with pytest.raises(ApiError) as exc:
        ls.ml.create(url=recorder.url, project=project.id)
    assert exc.value.status_code == 400
    assert "doesn't look like a valid ML backend" in str(exc.value.body)

    # connected first, /setup failing later: the backend turns "ER" and /predict is not called
    recorder.setup_status = 200
    ml = ls.ml.create(url=recorder.url, project=project.id)
    _import(ls, project.id, ["x"])
    recorder.setup_status = 500
    recorder.clear()
    _retrieve_predictions(ls, project.id)
    assert [r.path for r in recorder.requests] == ["/health", "/setup"]
    ml = ls.ml.get(id=ml.id)
    assert ml.state == "ER" and "500" in (ml.error_message or "")


# --------------------------------------------------------------------------- import / predict
def test_import_sends_tasks_created_webhook_and_no_predict(ls, recorder, project):
    ls.ml.create(url=recorder.url, project=project.id)
    recorder.clear()
    ids = _import(ls, project.id)
    hook = recorder.wait_webhook("TASKS_CREATED")
    body = hook.body
    assert set(body) == {"action", "tasks", "project"}
    assert [t["id"] for t in body["tasks"]] == ids
    assert [t["data"] for t in body["tasks"]] == [{"text": t} for t in TEXTS]
    assert body["project"]["id"] == project.id
    assert body["project"]["label_config"] == CONFIG
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["user-agent"].startswith("python-requests/")
    time.sleep(1)
    assert recorder.by_path("/predict") == []  # import alone never asks for predictions


def test_retrieve_predictions_body_and_what_is_stored(label_studio, ls, recorder, project):
    ls.ml.create(url=recorder.url, project=project.id)
    ids = _import(ls, project.id)
    recorder.clear()
    _retrieve_predictions(ls, project.id)

    # the action re-runs health + setup, then one batched /predict with all tasks
    assert [r.path for r in recorder.requests] == ["/health", "/setup", "/predict"]
    predict = recorder.by_path("/predict")[0]
    body = predict.body
    assert set(body) == PREDICT_KEYS
    assert re.fullmatch(rf"{project.id}\.\d+", body["project"])
    assert body["label_config"] == CONFIG
    assert body["params"] == {"login": None, "password": None, "context": None}
    assert [t["id"] for t in body["tasks"]] == ids
    task = body["tasks"][0]
    assert task["data"] == {"text": "good"}
    assert task["project"] == project.id
    assert task["annotations"] == [] and task["predictions"] == []
    assert predict.headers["content-type"] == "application/json"
    assert predict.headers["user-agent"].startswith("heartex/")

    stored = _stored_predictions(label_studio, ids[0])
    assert len(stored) == 1
    pred = stored[0]
    assert pred["model_version"] == "rec-1"
    assert pred["score"] == pytest.approx(0.87)
    assert pred["task"] == ids[0] and pred["project"] == project.id
    # prediction-level extra keys are dropped ...
    assert "meta" not in pred and "extra_key" not in pred
    # ... but a region is stored verbatim, extra keys included
    region = pred["result"][0]
    assert region["value"] == {"choices": ["Positive"]}
    assert region["score"] == pytest.approx(0.87)
    assert region["meta"] == {"region_extra": "kept?"}

    # the same model_version is not asked again for tasks that already have it
    recorder.clear()
    _retrieve_predictions(ls, project.id)
    assert [r.path for r in recorder.requests] == ["/health", "/setup"]

    # a new model_version from /setup -> predicted again, stored beside the old one
    recorder.model_version = "rec-2"
    recorder.clear()
    _retrieve_predictions(ls, project.id)
    assert [r.path for r in recorder.requests] == ["/health", "/setup", "/predict"]
    versions = sorted(p["model_version"] for p in _stored_predictions(label_studio, ids[0]))
    assert versions == ["rec-1", "rec-2"]


def test_model_version_falls_back_to_backend_version(label_studio, ls, recorder, project):
    def no_version(task, model_version):
        return {"result": [], "score": 0.5}

    recorder.make_prediction = no_version
    ls.ml.create(url=recorder.url, project=project.id)
    ids = _import(ls, project.id, ["x"])
    _retrieve_predictions(ls, project.id)
    (pred,) = _stored_predictions(label_studio, ids[0])
    assert pred["model_version"] == "rec-1"  # the ML backend's version (from /setup)
    assert pred["result"] == []


@pytest.mark.parametrize(
    ("mode", "predict_sizes", "stored"),
    [
        # fewer results than tasks (but more than one): nothing at all is stored
        ("fewer", [3], 0),
        # exactly one result for a batch: LS falls back to one /predict per task
        ("one", [3, 1, 1, 1], 3),
        # HTTP 500: nothing stored, backend stays "connected"
        ("error", [3], 0),
        # {"results": []}: nothing stored
        ("empty", [3], 0),
    ],
)
def test_short_or_failed_predict_answers(
    label_studio, ls, recorder, project, mode, predict_sizes, stored
):
    recorder.predict_mode = mode
    ml = ls.ml.create(url=recorder.url, project=project.id)
    ids = _import(ls, project.id)
    recorder.clear()
    _retrieve_predictions(ls, project.id)  # no error surfaces to the API caller
    assert [len(r.body["tasks"]) for r in recorder.by_path("/predict")] == predict_sizes
    assert sum(len(_stored_predictions(label_studio, i)) for i in ids) == stored
    assert ls.ml.get(id=ml.id).state == "CO"


def test_evaluate_predictions_automatically_predicts_on_task_listing(ls, recorder):
    p = ls.projects.create(
        title=f"protocol-auto-{uuid.uuid4().hex[:6]}",
        label_config=CONFIG,
        evaluate_predictions_automatically=True,
    )
    try:
        ls.ml.create(url=recorder.url, project=p.id)
        _import(ls, p.id, ["a", "b"])
        time.sleep(1)
        assert recorder.by_path("/predict") == []  # not on import ...
        tasks = list(ls.tasks.list(project=p.id))  # ... but when the data manager lists tasks
        assert [len(r.body["tasks"]) for r in recorder.by_path("/predict")] == [2]
        assert all(len(t.predictions or []) == 1 for t in tasks)
    finally:
        ls.projects.delete(id=p.id)


def test_predict_all_tasks_endpoint_is_not_in_open_source(ls, recorder, project):
    ml = ls.ml.create(url=recorder.url, project=project.id)
    with pytest.raises(ApiError) as exc:
        ls.ml.predict_all_tasks(id=ml.id)
    assert exc.value.status_code == 404


def test_interactive_predict_sends_context(ls, recorder, project):
    ml = ls.ml.create(url=recorder.url, project=project.id, is_interactive=True)
    (task_id,) = _import(ls, project.id, ["x"])
    recorder.clear()
    ls.ml.predict_interactive(id=ml.id, task=task_id, context={"result": [], "source": "test"})
    (predict,) = recorder.by_path("/predict")
    assert predict.body["params"]["context"] == {"result": [], "source": "test"}
    (task,) = predict.body["tasks"]
    assert task["id"] == task_id and task["drafts"] == [] and task["annotations"] == []


# --------------------------------------------------------------------------- webhooks
def test_annotation_webhooks(ls, recorder, project):
    ls.ml.create(url=recorder.url, project=project.id)
    (task_id,) = _import(ls, project.id, ["x"])
    result = [
        {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["Negative"]},
        }
    ]
    ann = ls.annotations.create(id=task_id, result=result)
    created = recorder.wait_webhook("ANNOTATION_CREATED").body
    assert set(created) == {"action", "annotation", "project", "task"}
    assert created["annotation"]["id"] == ann.id
    assert created["annotation"]["result"] == result
    assert created["annotation"]["task"] == task_id
    assert created["task"]["id"] == task_id and created["task"]["data"] == {"text": "x"}
    assert created["task"]["is_labeled"] is True
    assert created["project"]["id"] == project.id

    ls.annotations.update(id=ann.id, result=result)
    updated = recorder.wait_webhook("ANNOTATION_UPDATED").body
    assert set(updated) == {"action", "annotation", "project", "task"}
    assert updated["annotation"]["id"] == ann.id

    ls.annotations.delete(id=ann.id)
    deleted = recorder.wait_webhook("ANNOTATIONS_DELETED").body
    assert set(deleted) == {"action", "annotations", "project"}
    assert [a["id"] for a in deleted["annotations"]] == [ann.id]


def test_start_training_goes_to_webhook(ls, recorder, project):
    ml = ls.ml.create(url=recorder.url, project=project.id)
    recorder.clear()
    ls.ml.train(id=ml.id)
    hook = recorder.wait_webhook("START_TRAINING")
    assert set(hook.body) == {"action", "project"}
    assert hook.body["project"]["id"] == project.id
    assert hook.headers["user-agent"].startswith("heartex/")  # sent by the ML API client
    assert recorder.by_path("/train") == []


def test_user_webhook_with_headers_and_action_filter(ls, recorder, project):
    hook = ls.webhooks.create(
        url=recorder.url + "/webhook",
        project=project.id,
        send_payload=True,
        send_for_all_actions=False,
        actions=["ANNOTATION_CREATED"],
        headers={"X-Prelabel-Secret": "s3cret"},
    )
    try:
        (task_id,) = _import(ls, project.id, ["x"])
        ls.annotations.create(
            id=task_id,
            result=[
                {
                    "from_name": "sentiment",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": ["Positive"]},
                }
            ],
        )
        got = recorder.wait_webhook("ANNOTATION_CREATED")
        assert got.headers["x-prelabel-secret"] == "s3cret"
        time.sleep(1)
        assert recorder.webhooks("TASKS_CREATED") == []  # filtered out
    finally:
        ls.webhooks.delete(id=hook.id)


# --------------------------------------------------------------------------- basic auth
def test_basic_auth_in_the_url_is_sent_everywhere(ls, recorder, project):
    url = f"http://user:pa%3Ass@127.0.0.1:{recorder.port}"
    ml = ls.ml.create(url=url, project=project.id)
    assert ml.state == "CO" and ml.auth_method == "NONE"
    assert [w.url for w in ls.webhooks.list(project=project.id)] == [url + "/webhook"]
    _import(ls, project.id, ["x"])
    recorder.wait_webhook("TASKS_CREATED")
    _retrieve_predictions(ls, project.id)
    ls.ml.train(id=ml.id)
    recorder.wait_webhook("START_TRAINING")
    paths = {r.path for r in recorder.requests}
    assert paths == {"/health", "/setup", "/predict", "/webhook"}
    assert {r.basic_auth for r in recorder.requests} == {("user", "pa:ss")}  # percent-decoded


def test_basic_auth_method_is_not_sent_with_webhooks(ls, recorder, project):
    ml = ls.ml.create(
        url=recorder.url,
        project=project.id,
        auth_method="BASIC_AUTH",
        basic_auth_user="user",
        basic_auth_pass="secret",
    )
    assert ml.state == "CO" and ml.auth_method == "BASIC_AUTH" and ml.basic_auth_pass_is_set
    _import(ls, project.id, ["x"])
    recorder.wait_webhook("TASKS_CREATED")
    _retrieve_predictions(ls, project.id)
    ls.ml.train(id=ml.id)
    recorder.wait_webhook("START_TRAINING")
    auth = {}
    for r in recorder.requests:
        action = r.body.get("action") if isinstance(r.body, dict) else None
        auth.setdefault((r.path, action), set()).add(r.basic_auth)
    assert auth[("/health", None)] == {("user", "secret")}
    assert auth[("/setup", None)] == {("user", "secret")}
    assert auth[("/predict", None)] == {("user", "secret")}
    assert auth[("/webhook", "START_TRAINING")] == {("user", "secret")}  # via the ML API client
    assert auth[("/webhook", "TASKS_CREATED")] == {None}  # event webhooks carry no credentials


# --------------------------------------------------------------------------- timeouts
def test_timeouts_health_1s_setup_3s(ls, recorder, project):
    recorder.delays["/health"] = 1.5  # LS ML_TIMEOUT_HEALTH = 1 s
    with pytest.raises(ApiError) as exc:
        ls.ml.create(url=recorder.url, project=project.id)
    assert exc.value.status_code == 400 and "health check failed" in str(exc.value.body)

    recorder.delays = {"/setup": 3.5}  # LS ML_TIMEOUT_SETUP = 3 s
    with pytest.raises(ApiError) as exc:
        ls.ml.create(url=recorder.url, project=project.id)
    assert exc.value.status_code == 400 and "Read timed out" in str(exc.value.body)


def test_webhook_gets_1s_and_no_retry(ls, recorder, project):
    ls.ml.create(url=recorder.url, project=project.id)
    recorder.delays["/webhook"] = 2.0  # LS WEBHOOK_TIMEOUT = 1 s, sent inside the import request
    t0 = time.monotonic()
    _import(ls, project.id, ["x"])
    assert time.monotonic() - t0 < 2.0  # LS gave up after ~1 s ...
    time.sleep(2.5)
    hooks = recorder.webhooks("TASKS_CREATED")
    assert len(hooks) == 1 and hooks[0].client_gone  # ... and does not retry
    recorder.delays.clear()
    _import(ls, project.id, ["y"])  # the webhook stays active
    recorder.wait_for(
        lambda rs: len(recorder.webhooks("TASKS_CREATED")) == 2, what="a second TASKS_CREATED"
    )
