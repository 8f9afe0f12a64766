"""The backend's ASGI app in-process (Starlette's TestClient), with a predictor the test built: a
real LLM client against the fault LLM server and a real Redis cache (the session's redis-server).

What a prediction carries is checked against ``prelabel.contract``, the formats the worker,
ranking, quality and export read back: a region stamp key no reader knows, or a ``model_version``
that does not parse back, fails here."""

from __future__ import annotations

import time
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from starlette.testclient import TestClient

from prelabel.contract import (
    CASCADE_STATS_KEY,
    WEBHOOK_HEADER,
    ModelVersion,
    ProjectRef,
    RegionStamp,
    TaskStatus,
    aftercare_key,
    outcome_key,
    stamp_of,
)
from prelabel.ml_backend.server import create_app
from prelabel.prediction.cache import PredictionCache
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.predictor import Predictor
from prelabel.redis_conn import async_client
from prelabel.settings import Settings
from prelabel.studio.tenancy import configured
from tests.support.fault_llm import FaultServer
from tests.support.waiting import wait_for

CONFIG = ('<View><Text name="text" value="$text"/>'
          '<Choices name="intent" toName="text"><Choice value="book"/><Choice value="cancel"/>'
          '<Choice value="other"/></Choices></View>')
IMAGE_ONLY = ('<View><Image name="img" value="$image"/>'
              '<RectangleLabels name="box" toName="img"><Label value="car"/></RectangleLabels></View>')
SECRET = "whsec-inprocess-5b1e"


@pytest.fixture(scope="module")
def settings(fault: FaultServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(_env_file=None, llm_base_urls=[fault.base_url], llm_model="fault", llm_max_retries=0,
                    redis_url=redis_url, data_dir=Path(tmp_path_factory.mktemp("inprocess")),
                    webhook_secret=SecretStr(SECRET), fewshot_k=0)


@pytest.fixture()
def predictor(settings: Settings) -> Predictor:
    return Predictor(settings, LLMClient(settings), PredictionCache(async_client(settings), settings.cache_ttl))


@pytest.fixture()
def client(settings: Settings, predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(settings, predictor=predictor)) as test_client:
        yield test_client


def test_the_app_predicts_with_the_given_predictor(client: TestClient, predictor: Predictor,
                                                   fault: FaultServer) -> None:
    assert client.app.state.backend.predictor is predictor
    before = fault.stats()["requests"]
    tasks = [{"id": i, "data": {"text": f"in-process task {i}: move my booking to friday"}} for i in (1, 2)]
    response = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2 and fault.stats()["requests"] - before >= 2  # the given client called the LLM
    for prediction in results:
        version = ModelVersion.parse(prediction["model_version"])
        assert version.model == "fault" and version.prompt_version.startswith("p-") and not version.review
        assert str(version) == prediction["model_version"]
        assert version.task_status == prediction["meta"]["status"] == TaskStatus.OK
        [region] = prediction["result"]
        assert region["value"]["choices"][0] in {"book", "cancel", "other"}
        stamp = stamp_of(region)
        declared = set(typing.get_type_hints(RegionStamp))
        assert set(stamp) <= declared, f"stamp keys no reader declares: {set(stamp) - declared}"
        assert stamp["status"] == TaskStatus.OK and stamp["model"] == "fault"
        assert set(stamp["label_probs"]) == {"book", "cancel", "other"}  # what the ranking reads
        assert stamp["label_probs_kind"] == "distribution"


def test_errors_are_mapped_to_json_with_their_reason(client: TestClient) -> None:
    unusable = client.post("/setup", json={"project": "7", "schema": IMAGE_ONLY})
    assert unusable.status_code == 422 and unusable.json()["reason"] == "bad_config"
    unknown = client.get("/no-such-path")
    assert unknown.status_code == 404 and unknown.json()["reason"] == "not_found"
    unsigned = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 7}})
    assert unsigned.status_code == 401 and WEBHOOK_HEADER in unsigned.json()["error"]
    wrong = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 7}},
                        headers={WEBHOOK_HEADER: SECRET + "x"})
    assert wrong.status_code == 401


def test_metrics_report_the_counters_all_processes_share(client: TestClient, settings: Settings) -> None:
    """Workers add to Redis hashes; the backend's /metrics reads them through its own connection."""
    conn = redis.Redis.from_url(settings.redis_url or "")
    conn.delete(CASCADE_STATS_KEY)
    conn.hincrby(CASCADE_STATS_KEY, "fallback", 3)
    try:
        text = client.get("/metrics").text
        assert 'prelabel_cascade_routes_total{route="fallback"} 3.0' in text
    finally:
        conn.delete(CASCADE_STATS_KEY)
        conn.close()


def _scheduled_aftercare(conn: redis.Redis, project: ProjectRef) -> list[str]:
    from rq.registry import ScheduledJobRegistry

    from prelabel.jobs.queue import job_queue

    scheduled = ScheduledJobRegistry(queue=job_queue(conn)).get_job_ids()
    return [j for j in scheduled if j.startswith(f"aftercare-{project.slug}-")]


def test_predict_queues_the_review_of_what_label_studio_stores_once_interactive_never(
        client: TestClient, settings: Settings) -> None:
    """A non-interactive /predict for a project Label Studio set up queues its after-care (review,
    ranking) once per prediction version, after the answer; the labeling screen's calls none."""
    conn = redis.Redis.from_url(settings.redis_url)
    project = configured(settings, 4261)
    assert client.post("/setup", json={"project": f"{project.id}.1", "schema": CONFIG}).status_code == 200
    tasks = [{"id": 11, "data": {"text": "cancel my order please"}}]
    interactive = client.post("/predict", json={"tasks": tasks, "project": f"{project.id}.1",
                                                "params": {"context": {"result": []}}})
    assert interactive.status_code == 200, interactive.text
    assert not conn.keys(f"prelabel:aftercare:{project}:*") and not _scheduled_aftercare(conn, project)
    assert not conn.hexists(outcome_key(project), 11), "an interactive call left a trace"

    first = client.post("/predict", json={"tasks": tasks, "project": f"{project.id}.1"})
    assert first.status_code == 200, first.text
    version = first.json()["results"][0]["model_version"]
    [job_id] = wait_for(lambda: _scheduled_aftercare(conn, project), 10, "the after-care job (queued after the answer)")
    assert conn.exists(aftercare_key(project, 11, version))
    assert client.post("/predict", json={"tasks": tasks, "project": f"{project.id}.1"}).status_code == 200
    time.sleep(1)  # the background task of the second answer has run
    assert _scheduled_aftercare(conn, project) == [job_id], "the same prediction version queued twice"


def test_a_project_it_cannot_wire_is_reported_with_the_manual_step(client: TestClient, settings: Settings) -> None:
    """No Label Studio the backend may call: the project's webhook state says so, with the step,
    in /metrics and in /load (``prelabel status``); the secret is never in it."""
    project = 4262
    assert client.post("/setup", json={"project": f"{project}.1", "schema": CONFIG,
                                       "hostname": "http://ls.example:8080"}).status_code == 200
    head = f'prelabel_project_webhook{{project="{project}"'
    line = wait_for(lambda: next((row for row in client.get("/metrics").text.splitlines()
                                  if row.startswith(head)), None), 10, "the project's webhook state in /metrics")
    assert 'reason="no_access",state="unwired"' in line and "X-Prelabel-Secret" in line and SECRET not in line
    state = client.get("/load").json()["webhooks"][str(project)]
    assert state["state"] == "unwired" and state["step"].startswith(f"In Label Studio open project {project}")
    from prelabel.stack.llm_load import format_webhooks

    assert format_webhooks({"webhooks": {str(project): state}}) == [
        f"project {project}: webhook not wired (no_access): {state['step']}"]
