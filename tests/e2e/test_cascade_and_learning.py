"""Pre-annotation through the router, with real model servers and real Redis:

* the cost cascade: a promotion record with a cascade sends every task to the cheap model's
  server first and the tasks under the (calibrated) threshold to the fallback model's server;
  provenance names the model and the server that answered, ``/metrics`` counts both routes;
* calibration: a stored map changes the score of the next prediction, the raw score stays;
* few-shot that learns: an example put into the project's shared pool reaches the next
  ``/predict`` without a restart, and never the task it came from.

Two llama.cpp server processes serve SmolLM2 here (under two other names, so that no cached
answer of the default model stands in): what is checked is the routing, which server answered
and what is counted, not which model is better.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis as redis_lib

from prelabel.contract import active_model_key, calibration_key, fewshot_keys
from prelabel.prediction.calibration import CalibrationMap
from prelabel.prediction.fewshot_store import add_example
from prelabel.stack.llm_server import start_llm_server
from tests.support.tenancy import project_ref

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "label_config/templates/search_intent.xml").read_text()
QUERIES = ["facebook login", "how tall is mount everest", "buy running shoes online", "funny cat videos",
           "python tutorial for beginners", "cheap flights to rome", "netflix sign in", "what is photosynthesis"]
PROJECT = "41"
REF = project_ref(None, PROJECT)  # how these backends (no LABEL_STUDIO_URL) key project 41


@pytest.fixture(scope="module")
def second_llm(harness_dir):
    server = start_llm_server(harness_dir / "llm-fallback")
    yield server
    server.process.stop()


def _predict(backend, queries: list[str], first_id: int = 1) -> list[dict]:
    response = httpx.post(f"{backend.url}/predict", timeout=600, json={
        "tasks": [{"id": first_id + i, "data": {"text": q}} for i, q in enumerate(queries)],
        "label_config": CONFIG, "project": f"{PROJECT}.1700000000"})
    response.raise_for_status()
    return response.json()["results"]


def _metric(backend, name: str) -> dict[str, float]:
    text = httpx.get(f"{backend.url}/metrics", timeout=30).text
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            label = line.split('"')[1]
            out[label] = float(line.rsplit(" ", 1)[1])
    return out


def test_cascade_routes_unsure_tasks_to_the_fallback_server(backend_factory, llm_server, second_llm, redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    backend = backend_factory.start(name="cascade-backend", env={"PRELABEL_GUIDELINE": "search_intent",
                                                                 "PRELABEL_FEWSHOT_K": "0"})
    conn.delete(active_model_key(REF), "prelabel:stats:cascade", calibration_key(REF, "smollm2"),
                calibration_key(REF, "smollm2-cheap"))
    cheap_endpoint = llm_server.base_url.split("//")[1].split("/")[0]
    fallback_endpoint = second_llm.base_url.split("//")[1].split("/")[0]

    # Without a cascade: the scores the cheap model gives, to put the threshold among them.
    plain = _predict(backend, QUERIES)
    scores = sorted(p["score"] for p in plain if p["meta"]["status"] == "ok")
    assert len(set(scores)) > 1, scores
    threshold = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2

    conn.set(active_model_key(REF), json.dumps({
        "model": "smollm2-cheap", "base_url": llm_server.base_url, "promoted_at": "now",
        "cascade": {"threshold": threshold, "fallback_model": "smollm2-fallback",
                    "fallback_base_url": second_llm.base_url}}))
    results = _predict(backend, QUERIES, first_id=100)  # new ids: nothing cached by id, texts re-asked
    routes = {"cheap": 0, "fallback": 0}
    for prediction in results:
        provenance = prediction["meta"]["provenance"]
        cascade = provenance["cascade"]
        routes[cascade["route"]] += 1
        assert prediction["model_version"].startswith("smollm2-cheap>smollm2-fallback@"), prediction["model_version"]
        if cascade["route"] == "cheap":
            assert provenance["model"] == "smollm2-cheap" and provenance["endpoint"] == cheap_endpoint
            assert cascade["cheap_score"] >= threshold and prediction["meta"]["status"] == "ok"
        else:
            assert provenance["model"] == "smollm2-fallback" and provenance["endpoint"] == fallback_endpoint
            assert cascade["cheap_score"] < threshold or cascade["cheap_status"] != "ok"
        assert all(r["prelabel"]["route"] == cascade["route"] and r["prelabel"]["model"] == provenance["model"]
                   for r in prediction["result"])
    assert routes["cheap"] >= 1 and routes["fallback"] >= 1, routes
    assert _metric(backend, "prelabel_cascade_routes_total") == {"cheap": routes["cheap"],
                                                                 "fallback": routes["fallback"]}

    # A calibration map for the cheap model that says "never sure": everything goes to the fallback.
    never = CalibrationMap("platt", "smollm2-cheap", {"a": 1.0, "b": -20.0}, 50, id="cal-never")
    conn.set(calibration_key(REF, "smollm2-cheap"), never.encode())
    calibrated = _predict(backend, QUERIES[:3], first_id=200)
    assert all(p["meta"]["provenance"]["cascade"]["route"] == "fallback" for p in calibrated)
    assert all(p["meta"]["provenance"]["cascade"]["cheap_score"] < 0.01 for p in calibrated)
    conn.delete(active_model_key(REF), calibration_key(REF, "smollm2-cheap"))


def test_calibration_map_and_new_few_shot_examples_apply_without_restart(backend_factory, redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    pool_keys = list(fewshot_keys(REF))
    conn.delete(active_model_key(REF), calibration_key(REF, "smollm2"), *pool_keys)
    backend = backend_factory.start(name="learning-backend", env={"PRELABEL_GUIDELINE": "search_intent",
                                                                  "PRELABEL_FEWSHOT_K": "3"})
    first = _predict(backend, ["learn spanish free"], first_id=300)[0]
    assert first["meta"]["provenance"]["calibration"] == "uncalibrated"
    assert not [s for s in first["meta"]["provenance"]["fewshot"] if s.startswith("task:")]

    # A human labels two tasks (the worker's ANNOTATION_* job writes them to the shared pool).
    add_example(conn, REF, 301, {"text": "learn spanish free"}, {"intent": "educational"}, 500)
    add_example(conn, REF, 302, {"text": "learn french online free"}, {"intent": "educational"}, 500)
    cmap = CalibrationMap("platt", "smollm2", {"a": 0.5, "b": -1.0}, 40, id="cal-test")
    conn.set(calibration_key(REF, "smollm2"), cmap.encode())

    # Task 302 itself (its text slightly edited since it was labeled): never shown its own label.
    again = _predict(backend, ["learn french online free!!"], first_id=302)[0]
    used = again["meta"]["provenance"]["fewshot"]
    assert "task:301" in used, used
    assert "task:302" not in used, "a task is never shown its own label"
    other = _predict(backend, ["learn german free"], first_id=303)[0]
    assert {"task:301", "task:302"} <= set(other["meta"]["provenance"]["fewshot"])
    if other["meta"]["status"] == "ok":
        provenance = other["meta"]["provenance"]
        assert provenance["calibration"] == "cal-test"
        assert other["score"] == pytest.approx(cmap(provenance["raw_score"]), abs=1e-5)
    conn.delete(calibration_key(REF, "smollm2"), *pool_keys)


def test_reviewer_on_the_same_weights_is_reported_whatever_its_name(llm_server, second_llm, redis_url):
    """Two servers (or one) with the same GGUF under other names: the check asks the servers."""
    from prelabel.contract import REVIEWER_INDEPENDENCE_KEY as INDEPENDENCE_KEY
    from prelabel.jobs.reviewer_independence import reviewer_independence
    from prelabel.prediction.model_identity import SAME, compare, identify
    from prelabel.settings import Settings

    ours = identify(llm_server.base_url, llm_server.api_key, "smollm2")
    theirs = identify(second_llm.base_url, second_llm.api_key, "smollm2-reviewer")
    assert ours.probe and theirs.probe, (ours.error, theirs.error)
    verdict, evidence = compare(ours, theirs)
    assert verdict == SAME, evidence

    conn = redis_lib.Redis.from_url(redis_url)
    conn.delete(INDEPENDENCE_KEY)
    settings = Settings(llm_base_urls=[llm_server.base_url], llm_model="smollm2", reviewer_model="smollm2-reviewer",
                        reviewer_base_urls=[second_llm.base_url])
    assert reviewer_independence(settings, conn)["verdict"] == SAME
    strict = settings.model_copy(update={"reviewer_require_different_weights": True})
    with pytest.raises(ValueError, match="not an independent model"):
        reviewer_independence(strict, conn)
    conn.delete(INDEPENDENCE_KEY)


def test_reviewer_on_other_weights_is_reported_different(llm_server, harness_dir):
    from prelabel.prediction.model_identity import DIFFERENT, compare, identify
    from prelabel.stack.llm_server import find_reviewer_gguf

    gguf = find_reviewer_gguf()
    if gguf is None:
        pytest.skip("no second GGUF provisioned (PRELABEL_REVIEWER_GGUF / reviewer-model.path): "
                    "the local reviewer is the same weights, see the test above")
    other = start_llm_server(harness_dir / "llm-reviewer", gguf=gguf, alias="reviewer")
    try:
        verdict, evidence = compare(identify(llm_server.base_url, llm_server.api_key, "smollm2"),
                                    identify(other.base_url, other.api_key, "reviewer"))
    finally:
        other.process.stop()
    assert verdict == DIFFERENT, evidence
