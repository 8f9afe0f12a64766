"""Guideline versions in a real (embedded) Redis: content-addressed, active per project, read by jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from prelabel.jobs.project_job import ProjectJob
from prelabel.label_config import guideline_store as store
from prelabel.label_config.guideline import load_guideline
from prelabel.prediction.cache import PredictionCache
from prelabel.prediction.interactive import constrained_context, parse_context
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.predictor import Predictor
from prelabel.settings import Settings
from prelabel.studio.tenancy import configured

TEMPLATES = Path(__file__).resolve().parents[2] / "label_config" / "templates"
CONFIG = (TEMPLATES / "search_intent.xml").read_text()


def settings_for(embedded_redis) -> Settings:
    return Settings(redis_url="unix://" + embedded_redis.socket_file, llm_base_urls=["http://127.0.0.1:9/v1"],
                    label_studio_url="http://127.0.0.1:9", label_studio_api_key="token")


def test_every_version_predicted_with_resolves_to_its_exact_text(embedded_redis):
    import redis.asyncio as aioredis

    settings = settings_for(embedded_redis)

    async def scenario() -> tuple[str, str, str]:
        client = aioredis.from_url(settings.redis_url)
        llm = LLMClient(settings)  # never called: an empty task needs no model
        try:
            predictor = Predictor(settings, llm, PredictionCache(client, 0))
            ctx = predictor.context(CONFIG, "search_intent")
            [prediction] = await predictor.predict([{"data": {"text": ""}}], ctx)
            interactive = constrained_context(ctx, parse_context(
                {"result": [{"from_name": "intent", "to_name": "text", "value": {"choices": ["other"]}}]},
                ctx.schema, {"text": "q"}))
            await predictor.predict([{"data": {"text": ""}}], interactive)
            return prediction["model_version"], ctx.prompt.system, interactive.prompt.version
        finally:
            await llm.aclose()
            await client.aclose()

    model_version, system, interactive_version = asyncio.run(scenario())
    version = model_version.split("@")[1].split("#")[0]
    record = store.prompt_version(embedded_redis, version)
    assert record["system"] == system
    assert "{body}" in record["input_template"]
    guideline = store.stored_guideline(embedded_redis, record["guideline_hash"])
    assert guideline == load_guideline("search_intent")
    assert guideline.hash == record["guideline_hash"]
    with pytest.raises(store.VersionNotFound):  # one labeling-screen context is not a version
        store.prompt_version(embedded_redis, interactive_version)


def test_active_version_history_and_scores(embedded_redis):
    first, second = load_guideline("search_intent"), load_guideline("search_intent")
    second = second.model_copy(update={"rules": [*second.rules, "Song lyrics are entertainment."]})
    assert store.active(embedded_redis, 7) is None
    store.activate(embedded_redis, 7, first, source="search_intent", prompt_version="p-aaaaaaaaaa")
    store.activate(embedded_redis, 7, second, source="v2.yaml", prompt_version="p-bbbbbbbbbb")
    active = store.active(embedded_redis, 7)
    assert active["guideline_hash"] == second.hash and active["guideline"]["rules"][-1].startswith("Song")
    assert [h["prompt_version"] for h in store.history(embedded_redis, 7)] == ["p-aaaaaaaaaa", "p-bbbbbbbbbb"]
    assert store.stored_guideline(embedded_redis, first.hash) == first  # both stay resolvable
    assert store.active(embedded_redis, 8) is None and store.history(embedded_redis, 8) == []
    store.record_scores(embedded_redis, 7, "m@p-bbbbbbbbbb", {"exact_match": 0.5, "at": "t"})
    assert store.scores(embedded_redis, 7) == {"m@p-bbbbbbbbbb": {"exact_match": 0.5, "at": "t"}}


def test_worker_jobs_read_the_active_version_without_restart(embedded_redis):
    settings = settings_for(embedded_redis)
    job = ProjectJob.open(5, settings)
    before = job.context(CONFIG).prompt.version  # no active version: the config's template
    variant = load_guideline("search_intent").model_copy(update={"when_unsure": "Choose other."})
    store.activate(embedded_redis, configured(settings, 5), variant, source="variant", prompt_version="p-x")
    after = ProjectJob.open(5, settings).context(CONFIG)  # a bare id: the configured Label Studio's project
    assert after.guideline == variant and after.prompt.version != before
    assert job.context(CONFIG).prompt.version == before  # a job keeps what it started with
