"""Load control of the real backend process against the fault server: a one-slot server is not
flooded, retries stay within the budget, a request-specific 400 changes nothing for later
requests, a rejected output shape is tried again later, and the state shows in /metrics.

The fault server stands in for the LLM only for overload and faults (its ``slots`` queue
requests like a one-slot llama.cpp); the happy paths against llama.cpp are in tests/e2e.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from prelabel.stack.llm_load import fetch_llm_load, format_llm_load
from tests.support.backend_proc import BackendClient, metric_value, start_backend, unique_text
from tests.support.fault_llm import FaultServer, running_fault_server

pytestmark = pytest.mark.timeout(180)

BASE_ENV = {"PRELABEL_LLM_MODEL": "fault", "PRELABEL_LLM_CONCURRENCY": "32", "PRELABEL_LLM_RETRY_MAX_WAIT": "0.2"}


def task(prefix: str) -> dict:
    return {"data": {"text": unique_text(prefix)}}


@pytest.fixture()
def serve(tmp_path) -> Iterator:
    started = []

    def _start(fault: FaultServer, **env: str) -> BackendClient:
        proc = start_backend(tmp_path, {**BASE_ENV, "OPENAI_BASE_URL": fault.base_url, **env},
                             name=f"backend-{len(started)}")
        started.append(proc)
        return BackendClient(proc, timeout=120)

    yield _start
    for proc in started:
        proc.stop()


def test_one_slot_server_gets_no_timeouts(serve) -> None:
    """32 calls allowed, a server that works on one at a time (300 ms each), 3 s per attempt:
    a fixed 32 in flight queues 20 requests and times out from the 10th on; adaptive does not."""
    with running_fault_server(latency_ms=300, slots=1) as fault:
        backend = serve(fault, PRELABEL_LLM_TIMEOUT="3")
        results = backend.predict_ok([task(f"one slot {i}") for i in range(20)])
        stats = fault.stats()
        text = backend.metrics_text()
    assert [r["meta"]["status"] for r in results] == ["ok"] * 20
    assert metric_value(text, "prelabel_llm_requests_total", outcome="timeout") == 0
    assert stats["requests"] == 20, stats  # no retries
    assert stats["waiting_max"] <= 4, stats  # the server's own queue stays short
    # the waiting happens in the backend's own queue (counted apart from the calls)
    assert max(r["meta"]["provenance"]["queue_ms"] for r in results) > 2000


def test_retries_stay_within_the_budget(serve) -> None:
    """Every call fails: without a budget 30 tasks x (1 + 4 retries) = 150 requests hit the server."""
    with running_fault_server() as fault:
        backend = serve(fault)
        fault.set_script(["500"] * 500)
        results = backend.predict_ok([task(f"budget {i}") for i in range(30)])
        requests = fault.stats()["requests"]
        text = backend.metrics_text()
    assert all(r["meta"]["status"] == "error" for r in results)
    assert requests <= 30 + 3 + 3, requests  # 30 first attempts + floor 3 + 10% of 30
    assert metric_value(text, "prelabel_llm_retries_denied_total", reason="server_error") >= 30 - 6
    assert any("retry budget" in r["meta"]["errors"]["llm"] for r in results)


def test_context_length_error_fails_that_request_only(serve) -> None:
    """A prompt over the server's window is that task's problem: needs_human ``context_too_long``,
    and the next request still asks for json_schema with logprobs (no sticky downgrade)."""
    with running_fault_server() as fault:
        backend = serve(fault)
        fault.set_script(["context_400"])
        [too_long] = backend.predict_ok([task("too long")])
        [after] = backend.predict_ok([task("after the long one")])
        request = fault.state.last_request
        stats = fault.stats()
        text = backend.metrics_text()
    assert too_long["meta"]["status"] == "needs_human" and too_long["result"] == []
    assert "context_too_long" in too_long["meta"]["errors"]["task"]
    assert stats["requests"] == 2, "the too-long prompt must not be re-sent in another shape"
    assert after["meta"]["status"] == "ok"
    assert request["response_format"]["type"] == "json_schema" and request["logprobs"] is True
    assert after["meta"]["provenance"]["structured_output"] == "json_schema"
    assert metric_value(text, "prelabel_needs_human_total", reason="context_too_long") == 1


def test_rejected_shape_steps_down_then_is_tried_again(serve) -> None:
    with running_fault_server() as fault:
        backend = serve(fault, PRELABEL_LLM_SHAPE_RETRY_S="2")
        fault.set_script(["schema_500"])
        [first] = backend.predict_ok([task("shape rejected")])
        stepped = fault.state.last_request
        [second] = backend.predict_ok([task("shape remembered")])
        remembered = fault.state.last_request
        time.sleep(2.2)
        [third] = backend.predict_ok([task("shape probed again")])
        probed = fault.state.last_request
        text = backend.metrics_text()
    assert [p["meta"]["status"] for p in (first, second, third)] == ["ok"] * 3
    assert first["meta"]["provenance"]["structured_output"] == "json_object"
    assert stepped["response_format"]["type"] == "json_object" and stepped["logprobs"] is True  # logprobs kept
    assert remembered["response_format"]["type"] == "json_object"
    assert probed["response_format"]["type"] == "json_schema"
    assert third["meta"]["provenance"]["structured_output"] == "json_schema"
    assert metric_value(text, "prelabel_llm_shape_stepdowns_total", part="mode") == 1


def test_load_state_is_in_metrics_and_status(serve) -> None:
    with running_fault_server(latency_ms=50) as fault:
        backend = serve(fault)
        backend.predict_ok([task(f"metrics {i}") for i in range(40)])
        text = backend.metrics_text()
        load = fetch_llm_load(backend.url)  # what `prelabel status` shows
    endpoint = f"127.0.0.1:{fault.port}"
    [client] = load["llm"]
    [row] = client["endpoints"]
    assert row["endpoint"] == endpoint and 4 < row["limit"] <= row["max_limit"] == 32
    assert row["structured_output"] == "json_schema" and row["logprobs"] is True
    assert 0 < client["retry_budget"]["calls_in_window"] <= 40  # its 10 s window may have moved on
    lines = format_llm_load(load)
    assert lines[0].startswith(f"llm fault @ {endpoint}: limit {row['limit']}/32, in flight 0")
    assert "retry budget" in lines[1]
    limit = metric_value(text, "prelabel_llm_concurrency_limit", model="fault", endpoint=endpoint)
    assert 4 < limit <= 32  # grew from the initial 4 on a server with flat latency
    assert metric_value(text, "prelabel_llm_base_latency_seconds", endpoint=endpoint) >= 0.05
    assert metric_value(text, "prelabel_llm_retry_budget_available", model="fault") >= 3
    assert metric_value(text, "prelabel_llm_queue_wait_seconds_count") == 40
