"""Which name a model's state is kept under, and how each model of a route is prompted.

* Calibration maps are keyed by the configured model (the route), not the name a server reports:
  hosted APIs answer ``gpt-4o-mini`` as ``gpt-4o-mini-2024-07-18`` (the fault server's
  ``reported_model`` quirk), and a map fitted under the reported name would never be applied.
* A cascade's fallback is prompted its own way: the cheap model was fine-tuned on the compact
  prompt, the fallback (the configured base model, here the real llama.cpp server) gets the full
  guideline, not the cheap model's compact context.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from prelabel.contract import ProjectRef, active_model_key, calibration_key, stamp_of, tenant_slug
from prelabel.label_config.schema import build_schema
from prelabel.prediction.cache import PredictionCache
from prelabel.prediction.calibration import is_calibrated
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.model_router import ModelRouter
from prelabel.prediction.predictor import Predictor
from prelabel.quality.calibration_fit import calibration_pairs, calibration_report, store_maps
from prelabel.redis_conn import async_client
from prelabel.settings import Settings
from tests.support.fault_llm import FaultServer, running_fault_server

CONFIG = ('<View><Text name="text" value="$text"/>'
          '<Choices name="intent" toName="text"><Choice value="book"/><Choice value="cancel"/>'
          '<Choice value="other"/></Choices></View>')
LABELS = ("book", "cancel", "other")


@pytest.fixture()
def dated() -> Iterator[FaultServer]:
    with running_fault_server(reported_model="gpt-4o-mini-2024-07-18") as server:
        yield server


def _settings(base_url: str, model: str, redis_url: str, tmp_path: Path, **extra) -> Settings:
    return Settings(_env_file=None, llm_base_urls=[base_url], llm_model=model, llm_max_retries=0,
                    redis_url=redis_url, data_dir=tmp_path, fewshot_k=0, cache_ttl=60, **extra)


async def _predict(settings: Settings, project: ProjectRef, texts: list[str]) -> list[dict]:
    predictor = Predictor(settings, LLMClient(settings), PredictionCache(async_client(settings), settings.cache_ttl))
    router = ModelRouter(predictor)
    try:
        routed = await router.for_project(project)
        ctx = routed.context(CONFIG)
        return await routed.predict([{"id": i, "data": {"text": t}} for i, t in enumerate(texts)], ctx)
    finally:
        await router.aclose()
        await predictor.llm.aclose()
        await predictor.budget.counter.aclose()
        await predictor.cache.client.aclose()


def _labeled(predictions: list[dict]) -> list[dict]:
    """Label Studio tasks: each prediction with a human label, right for every other task."""
    tasks = []
    for i, prediction in enumerate(predictions):
        guess = prediction["result"][0]["value"]["choices"][0]
        human = guess if i % 2 == 0 else next(label for label in LABELS if label != guess)
        tasks.append({"id": i, "data": {"text": "x"}, "predictions": [{"id": i + 1, **prediction}],
                      "annotations": [{"id": i, "was_cancelled": False, "result": [
                          {"from_name": "intent", "to_name": "text", "type": "choices",
                           "value": {"choices": [human]}}]}]})
    return tasks


def test_calibration_map_applies_when_the_server_reports_a_dated_model_name(
        dated: FaultServer, redis_url: str, tmp_path: Path) -> None:
    settings = _settings(dated.base_url, "gpt-4o-mini", redis_url, tmp_path)
    project = ProjectRef(tenant_slug("http://ls.example"), 9241)
    conn = redis.Redis.from_url(redis_url)
    conn.delete(active_model_key(project), calibration_key(project, "gpt-4o-mini"),
                calibration_key(project, "gpt-4o-mini-2024-07-18"))
    first = asyncio.run(_predict(settings, project, [f"dated name task {i}: please move my trip" for i in range(16)]))
    provenance = first[0]["meta"]["provenance"]
    assert provenance["served_model"] == "gpt-4o-mini-2024-07-18"  # what the server says it is
    assert provenance["model"] == stamp_of(first[0]["result"][0])["model"] == "gpt-4o-mini"  # the route
    assert first[0]["model_version"].startswith("gpt-4o-mini@")

    pairs = calibration_pairs(_labeled(first), build_schema(CONFIG))
    assert set(pairs) == {"gpt-4o-mini"}
    written = store_maps(conn, project, [calibration_report(p) for p in pairs.values()])
    assert written and conn.exists(calibration_key(project, "gpt-4o-mini"))

    later = asyncio.run(_predict(settings, project, [f"dated name task {i}: cancel it all" for i in range(4)]))
    assert all(is_calibrated(p) for p in later)  # the map fitted above is the one applied
    assert {p["meta"]["provenance"]["calibration"] for p in later} == set(written)


def test_cascade_fallback_gets_its_own_full_prompt(llm_server, redis_url: str, tmp_path: Path) -> None:
    """The cheap model (fine-tuned, compact prompt) fails on every task (the fault server's bad
    labels); the fallback, the configured model on llama.cpp, answers with the full prompt."""
    with running_fault_server() as cheap:
        cheap.set_script(["bad_label"] * 20)
        shape = {"structured_output": llm_server.structured_output} if llm_server.structured_output else {}
        settings = _settings(llm_server.base_url, llm_server.model, redis_url, tmp_path, prompt_style="full", **shape)
        project = ProjectRef(tenant_slug("http://ls.example"), 9242)
        conn = redis.Redis.from_url(redis_url)
        conn.set(active_model_key(project), json.dumps({
            "model": "prelabel-9242-r1", "base_url": cheap.base_url, "prompt_style": "compact", "fewshot_k": 0,
            "cascade": {"threshold": 0.99, "fallback_model": llm_server.model, "fallback_base_url": None,
                        "fallback_prompt_style": None, "fallback_fewshot_k": None}}))
        try:
            answers = asyncio.run(_predict(settings, project, ["I want to cancel my booking for friday"]))
        finally:
            conn.delete(active_model_key(project))
        last = cheap.stats()
    assert last["requests"] >= 1
    [answer] = answers
    provenance = answer["meta"]["provenance"]
    assert provenance["cascade"]["route"] == "fallback" and provenance["model"] == llm_server.model
    # the prompt versions of the two styles: the cheap model's is compact, the fallback's the full one
    from prelabel.prediction.predictor import ContextBuilder

    full = ContextBuilder(settings).context(CONFIG)
    compact = full.styled("compact")
    assert full.prompt.version != compact.prompt.version
    assert provenance["prompt_version"] == full.prompt.version
    assert answer["model_version"].endswith("@" + compact.prompt.version)  # the cascade's family
