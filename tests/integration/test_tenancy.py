"""Two Label Studio instances, one project id (issue 27, finding 4), through the backend's app
in-process with a real Redis: each instance's ``/setup`` keeps its own record (host, token), its own
few-shot pool and its own webhook jobs. Before, the second ``/setup`` overwrote the first's record
(the worker then followed the second host with its token) and the second's labeled tasks became
the first's few-shot examples. (The ``/predict`` side is in the hostile corpus: tenancy.yaml.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from starlette.testclient import TestClient

from prelabel.contract import ProjectRef, project_key, tenant_slug
from prelabel.jobs.projects import load_project
from prelabel.ml_backend.server import create_app
from prelabel.prediction.cache import PredictionCache
from prelabel.prediction.fewshot_store import ProjectPools, add_example
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.predictor import ContextBuilder, Predictor
from prelabel.redis_conn import async_client
from prelabel.settings import Settings
from prelabel.studio.tenancy import access_for
from tests.support.fault_llm import FaultServer

CONFIG = ('<View><Text name="text" value="$text"/>'
          '<Choices name="intent" toName="text"><Choice value="book"/><Choice value="cancel"/></Choices></View>')
# Hosts that resolve nowhere (RFC 2606): the background calls (examples, webhook wiring) fail at once.
FIRST, SECOND = "http://ls-first.invalid:8080", "http://ls-second.invalid:8080"
SECRET = "whsec-tenancy-7c41"
PID = 4711
FIRST_STAMP, SECOND_STAMP = f"{PID}.1700000000", f"{PID}.1700000500"
FIRST_CREATED, SECOND_CREATED = "2023-11-14T22:13:20.250000Z", "2023-11-14T22:21:40Z"


@pytest.fixture(scope="module")
def settings(fault: FaultServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(_env_file=None, llm_base_urls=[fault.base_url], llm_model="fault", llm_max_retries=0,
                    redis_url=redis_url, data_dir=Path(tmp_path_factory.mktemp("tenancy")),
                    webhook_secret=SecretStr(SECRET), fewshot_k=2, label_studio_url=FIRST,
                    label_studio_api_key=SecretStr("first-key"), label_studio_hosts=[SECOND])


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    predictor = Predictor(settings, LLMClient(settings), PredictionCache(async_client(settings), settings.cache_ttl))
    with TestClient(create_app(settings, predictor=predictor)) as test_client:
        yield test_client


@pytest.fixture()
def conn(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _setup(client: TestClient, stamp: str, hostname: str, token: str) -> None:
    response = client.post("/setup", json={"project": stamp, "schema": CONFIG, "hostname": hostname,
                                           "access_token": token})
    assert response.status_code == 200, response.text


def test_each_instance_keeps_its_record_and_its_few_shot_pool(client: TestClient, settings: Settings,
                                                               conn: redis.Redis) -> None:
    first, second = ProjectRef(tenant_slug(FIRST), PID), ProjectRef(tenant_slug(SECOND), PID)
    _setup(client, FIRST_STAMP, FIRST, "first-user-token")
    _setup(client, SECOND_STAMP, SECOND, "second-user-token")
    # the worker follows each project's own record: its host, its token
    ours, theirs = load_project(conn, first), load_project(conn, second)
    assert (ours.hostname, ours.access_token) == (FIRST, "first-user-token")
    assert (theirs.hostname, theirs.access_token) == (SECOND, "second-user-token")
    assert access_for(settings, first, ours.hostname, ours.access_token).url == FIRST
    assert access_for(settings, second, theirs.hostname, theirs.access_token).url == SECOND
    assert not conn.exists(f"prelabel:project:{PID}")  # nothing under the bare id
    assert conn.exists(project_key(first)) and conn.exists(project_key(second))

    # the second instance's human label (the worker's learn_examples) reaches only its own prompts
    add_example(conn, second, 1, {"text": "cancel my booking"}, {"intent": ["cancel"]}, 50)
    ctx = ContextBuilder(settings).context(CONFIG)

    async def pools() -> tuple[object, object]:
        aclient = async_client(settings)
        try:
            built = ProjectPools()
            return await built.pool(aclient, first, ctx), await built.pool(aclient, second, ctx)
        finally:
            await aclient.aclose()

    first_pool, second_pool = asyncio.run(pools())
    assert first_pool is None, "the first instance's prompts carry the second's labeled tasks"
    assert second_pool is not None
    info = client.get(f"/projects/{SECOND_STAMP}").json()
    assert info["human_examples"] == 1 and client.get(f"/projects/{FIRST_STAMP}").json()["human_examples"] == 0


def test_each_instances_webhook_is_its_own_projects_job(client: TestClient, conn: redis.Redis) -> None:
    """The webhook's project ``created_at`` is the stamp ``/setup`` remembered: the second instance's
    event is queued as its project's (and is not a "duplicate" of the first's same-looking event)."""
    _setup(client, FIRST_STAMP, FIRST, "first-user-token")
    _setup(client, SECOND_STAMP, SECOND, "second-user-token")
    jobs = {}
    for name, created in (("first", FIRST_CREATED), ("second", SECOND_CREATED)):
        response = client.post("/webhook", headers={"X-Prelabel-Secret": SECRET}, json={
            "action": "TASKS_CREATED", "project": {"id": PID, "created_at": created}, "tasks": [{"id": 1}]})
        assert response.status_code == 200 and response.json()["status"] == "queued", response.text
        jobs[name] = response.json()["job_id"]
    assert tenant_slug(FIRST) in jobs["first"] and tenant_slug(SECOND) in jobs["second"]
    from rq.job import Job

    args = {name: Job.fetch(job_id, connection=conn).args[0] for name, job_id in jobs.items()}
    assert (args["first"]["tenant"], args["second"]["tenant"]) == (tenant_slug(FIRST), tenant_slug(SECOND))
    assert args["first"]["project_id"] == args["second"]["project_id"] == PID
