"""Interactive answers run under their own latency budget and use the cache (real backend process,
fault-injecting LLM server for the slow answers)."""

from __future__ import annotations

import time

import pytest

from tests.support.backend_proc import BackendClient, start_backend, unique_text
from tests.support.fault_llm import running_fault_server

pytestmark = pytest.mark.timeout(120)

SCREEN = {"context": {"result": []}}  # what the labeling screen sends when nothing constrains the answer


def test_interactive_budget_and_cache(tmp_path) -> None:
    with running_fault_server(latency_ms=4000) as fault:
        proc = start_backend(tmp_path, {"OPENAI_BASE_URL": fault.base_url, "PRELABEL_INTERACTIVE_BUDGET": "1",
                                        "PRELABEL_LLM_TIMEOUT": "30"}, name="backend-budget")
        try:
            client = BackendClient(proc)
            task = {"id": 1, "data": {"text": unique_text("budget")}}
            started = time.monotonic()
            [late] = client.predict_ok([task], params=SCREEN)
            assert time.monotonic() - started < 3.5  # the annotator is not kept waiting for the 4 s answer
            assert late["meta"]["status"] == "error"
            assert late["meta"]["errors"]["task"].startswith("interactive_timeout")
            assert late["meta"]["provenance"]["interactive"] is True and late["result"] == []
            assert client.metric("prelabel_needs_human_total", reason="interactive_timeout") == 1

            started = time.monotonic()
            [batch] = client.predict_ok([task])  # no context: the budget does not apply
            assert time.monotonic() - started >= 4 and batch["meta"]["status"] == "ok"
            assert "interactive" not in batch["meta"]["provenance"]

            fault.set_latency(0)
            other = {"id": 2, "data": {"text": unique_text("budget")}}
            [first] = client.predict_ok([other], params=SCREEN)
            served = fault.stats()["requests"]
            [again] = client.predict_ok([other], params=SCREEN)
            assert first["meta"]["provenance"]["cached"] is False and again["meta"]["provenance"]["cached"] is True
            assert fault.stats()["requests"] == served  # the second answer came from the cache
            cached_at = again["result"][0]["prelabel"]["time"]
            assert again["result"] == [{**r, "prelabel": {**r["prelabel"], "time": cached_at, "cached": True}}
                                       for r in first["result"]]
        finally:
            proc.stop()


def test_interactive_budget_never_outlasts_label_studios_deadline(tmp_path) -> None:
    """A budget longer than Label Studio waits is cut to its deadline (predict_timeout - margin)."""
    with running_fault_server(latency_ms=4000) as fault:
        proc = start_backend(tmp_path, {"OPENAI_BASE_URL": fault.base_url, "PRELABEL_INTERACTIVE_BUDGET": "60",
                                        "PRELABEL_PREDICT_TIMEOUT": "2.5", "PRELABEL_PREDICT_MARGIN": "1",
                                        "PRELABEL_LLM_TIMEOUT": "30"}, name="backend-budget-cap")
        try:
            client = BackendClient(proc)
            started = time.monotonic()
            [late] = client.predict_ok([{"id": 3, "data": {"text": unique_text("cap")}}], params=SCREEN)
            assert time.monotonic() - started < 2.5  # answered before Label Studio gives up, not after 4 s
            assert late["meta"]["errors"]["task"].startswith("interactive_timeout")
        finally:
            proc.stop()
