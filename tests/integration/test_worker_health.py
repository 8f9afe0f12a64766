"""``prelabel-health --worker``: the compose health check of a worker (and of the trainer), which
serve no HTTP. Healthy while a worker process of this host is registered in Redis, unhealthy
before it started and after it stopped; the backend's check (GET /health on :9090) would call a
port nothing listens on and report the worker unhealthy forever."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from prelabel.stack.processes import ManagedProcess, child_env
from tests.servers import dev_bin
from tests.servers.redis_server import start_redis


def _health(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = child_env(None, {"REDIS_URL": redis_url, "PRELABEL_PORT": "1"})  # nothing listens on port 1
    return subprocess.run([dev_bin("prelabel-health"), *args], env=env, capture_output=True, text=True, timeout=60)


def test_worker_health_follows_the_worker_process(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")  # its own Redis: no other test's worker registered there
    assert server.process is not None
    try:
        before = _health(server.url, "--worker")
        assert before.returncode == 1 and "no running worker" in before.stderr
        worker = ManagedProcess("worker", [dev_bin("prelabel"), "worker", "--queues", "prelabel-train"],
                                log_path=tmp_path / "worker.log",
                                env=child_env(None, {"REDIS_URL": server.url, "PRELABEL_DATA_DIR": str(tmp_path)}),
                                cwd=tmp_path).start()
        try:
            worker.wait_until(lambda: _health(server.url, "--worker").returncode == 0, timeout=60,
                              what="prelabel-health --worker reporting the worker healthy")
            assert _health(server.url).returncode == 1  # the backend's HTTP check does not fit a worker
        finally:
            worker.stop()
        deadline = time.monotonic() + 30
        while _health(server.url, "--worker").returncode == 0:
            assert time.monotonic() < deadline, "still healthy after the worker stopped"
            time.sleep(0.5)
    finally:
        server.process.stop()
    assert "Redis" in _health(server.url, "--worker").stderr  # Redis gone: unhealthy, one line
