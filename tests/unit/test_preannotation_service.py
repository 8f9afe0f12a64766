"""The pre-annotation service in a real (embedded) Redis: one guideline rule for the backend and the
worker, the deadline's hand-off, and recorded outcomes.

Empty tasks need no model (they come back ``needs_human`` without an LLM call), so the service is
exercised end to end without an LLM server; the hand-off (the backend's part) queues a real RQ job.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis
from rq import Queue

from prelabel.contract import QUEUE_NAME, TaskStatus
from prelabel.jobs import handoff
from prelabel.jobs.project_job import ProjectJob
from prelabel.label_config import guideline_store as store
from prelabel.label_config.guideline import load_guideline
from prelabel.prediction import outcomes
from prelabel.prediction.service import PreannotationService, choose_guideline
from prelabel.settings import Settings
from prelabel.studio.tenancy import configured

TEMPLATES = Path(__file__).resolve().parents[2] / "label_config" / "templates"
CONFIG = (TEMPLATES / "search_intent.xml").read_text()


def settings_for(embedded_redis) -> Settings:
    return Settings(redis_url="unix://" + embedded_redis.socket_file, llm_base_urls=["http://127.0.0.1:9/v1"],
                    label_studio_url="http://127.0.0.1:9", label_studio_api_key="token")


def run(settings: Settings, conn: redis.Redis, scenario: Any) -> Any:
    async def main() -> Any:
        async with PreannotationService.open(settings, conn=conn) as service:
            return await scenario(service)

    return asyncio.run(main())


def test_guideline_precedence_is_one_rule_for_the_backend_and_the_worker(embedded_redis) -> None:
    """A request's guideline beats the project's active version, which beats the one /setup named:
    the backend (the service) and the worker (``ProjectJob``) come to the same answer."""
    assert choose_guideline("a", {"b": 1}, "c") == "a"
    assert choose_guideline(None, {"b": 1}, "c") == {"b": 1}
    assert choose_guideline(None, None, "c") == "c"
    settings = settings_for(embedded_redis)

    async def guidelines(service: PreannotationService) -> tuple[Any, Any, Any]:
        return (await service.guideline(configured(settings, 5), configured="search_intent"),
                await service.guideline(configured(settings, 5), requested="mine", configured="search_intent"),
                await service.guideline(None, configured="search_intent"))

    assert run(settings, embedded_redis, guidelines) == ("search_intent", "mine", "search_intent")  # none active yet
    variant = load_guideline("search_intent").model_copy(update={"when_unsure": "Choose other."})
    store.activate(embedded_redis, configured(settings, 5), variant, source="variant", prompt_version="p-x")
    active, requested, no_project = run(settings, embedded_redis, guidelines)
    assert active == variant.model_dump(mode="json") and requested == "mine" and no_project == "search_intent"
    assert ProjectJob.open(5, settings).record.guideline == active


def test_predict_records_each_tasks_outcome(embedded_redis) -> None:
    settings = settings_for(embedded_redis)

    async def scenario(service: PreannotationService) -> list[Any]:
        batch = await service.prepare(configured(settings, 7), CONFIG, "search_intent")
        return await service.predict(batch, [{"id": 1, "data": {"text": ""}}, {"id": 2, "data": {"text": ""}}])

    predictions = run(settings, embedded_redis, scenario)
    assert [p["meta"]["status"] for p in predictions] == [TaskStatus.NEEDS_HUMAN] * 2
    recorded = outcomes.load(embedded_redis, configured(settings, 7))
    assert set(recorded) == {1, 2} and {o.status for o in recorded.values()} == {TaskStatus.NEEDS_HUMAN}


def test_tasks_past_the_deadline_go_to_the_worker_once(embedded_redis) -> None:
    """Before a deadline already past nothing (or close to nothing) finishes: the rest comes back
    ``late`` and ``[]``; once handed to the worker (as the backend does), asking again answers
    them ``[]`` as pending, neither predicted nor late a second time."""
    settings = settings_for(embedded_redis)
    ids = [11, 12]

    async def scenario(service: PreannotationService) -> tuple[Any, Any]:
        batch = await service.prepare(configured(settings, 7), CONFIG, "search_intent")
        tasks = [{"id": 11, "data": {"text": "flights to oslo"}}, {"id": 12, "data": {"text": "weather"}}]
        past = asyncio.get_running_loop().time() - 1
        first = await service.predict_until(batch, tasks, past)
        handoff.hand_off(embedded_redis, settings, configured(settings, 7), first.late, CONFIG)
        second = await service.predict_until(batch, tasks, past)
        return first, second

    first, second = run(settings, embedded_redis, scenario)
    assert first.late, "a deadline already past left no task to the worker"
    assert first.pending == first.late  # nothing was pending before
    for reply in (first, second):  # each task: a prediction, or [] and pending (never both, never neither)
        assert [tid for tid, result in zip(ids, reply.results) if result == []] == reply.pending
    assert set(first.late) <= set(second.pending) and not set(first.late) & set(second.late)
    [job] = Queue(QUEUE_NAME, connection=embedded_redis).jobs
    seven = configured(settings, 7)
    assert job.func_name == "prelabel.jobs.handoff.predict_handed_off" and job.args[:2] == (seven, first.late)
    # late tasks: the worker records them
    assert set(outcomes.load(embedded_redis, seven)) == set(ids) - set(first.late)


def test_tasks_without_ids_cannot_be_handed_off_and_are_all_predicted(embedded_redis) -> None:
    settings = settings_for(embedded_redis)

    async def scenario(service: PreannotationService) -> Any:
        batch = await service.prepare(configured(settings, 7), CONFIG, "search_intent")
        return await service.predict_until(batch, [{"data": {"text": ""}}], asyncio.get_running_loop().time() - 1)

    reply = run(settings, embedded_redis, scenario)
    assert reply.pending == reply.late == [] and reply.results[0]["meta"]["status"] == TaskStatus.NEEDS_HUMAN
