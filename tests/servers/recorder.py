"""A tiny ML backend that records every request Label Studio sends (a thread, stdlib only).

Answers like a Label Studio ML backend:

* ``GET /health`` -> ``{"status": "UP", "model_class": "Recorder"}``
* ``POST /setup`` -> ``{"model_version": <model_version>}``
* ``POST /predict`` -> one prediction per task (``predict_mode`` changes that, see below)
* ``POST /webhook`` -> ``{}``
* anything else -> 404

``predict_mode``: ``"ok"`` (one prediction per task, with extra keys on the prediction and in
the region, to see what Label Studio keeps), ``"fewer"`` (one prediction less than tasks, at
least 1 task short), ``"one"`` (always a single prediction), ``"error"`` (HTTP 500),
``"empty"`` (``{"results": []}``).

``forward_to``: a real backend's URL. The recorder then sits in front of it: every request is
recorded on arrival, then sent on unchanged (method, path, body, content type, authorization)
and the backend's answer is returned, status and body as they are.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prelabel.stack.ports import free_port


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    at: float = field(default_factory=time.time)
    client_gone: bool = False
    answer: Any = None  # with ``forward_to``: the backend's answer (parsed JSON), once it came

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        if not value.lower().startswith("basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user, password


def default_prediction(
    task: dict, model_version: str, label_config_choice: str = "Positive"
) -> dict:
    return {
        "result": [
            {
                "from_name": "sentiment",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": [label_config_choice]},
                "score": 0.87,
                "meta": {"region_extra": "kept?"},
            }
        ],
        "score": 0.87,
        "model_version": model_version,
        "meta": {"provenance": "recorder", "task": task.get("id")},
        "extra_key": "dropped?",
    }


class RecordingBackend:
    def __init__(self, model_version: str = "rec-1", host: str = "127.0.0.1", forward_to: str | None = None):
        self.model_version = model_version
        self.forward_to = forward_to.rstrip("/") if forward_to else None
        self.predict_mode = "ok"
        self.setup_status = 200  # answer /setup with this HTTP status
        self.delays: dict[str, float] = {}  # path -> seconds to wait before answering
        self.make_prediction: Callable[[dict, str], dict] = default_prediction
        self.requests: list[Recorded] = []
        self._cond = threading.Condition()
        self.host = host
        self.port = free_port(host)
        self._server = ThreadingHTTPServer((host, self.port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> RecordingBackend:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="recorder", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RecordingBackend:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- queries ---------------------------------------------------------------------------
    def clear(self) -> None:
        with self._cond:
            self.requests.clear()

    def by_path(self, path: str) -> list[Recorded]:
        with self._cond:
            return [r for r in self.requests if r.path == path]

    def webhooks(self, action: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.by_path("/webhook")
            if action is None or (isinstance(r.body, dict) and r.body.get("action") == action)
        ]

    def wait_for(
        self,
        predicate: Callable[[list[Recorded]], Any],
        timeout: float = 30.0,
        what: str = "request",
    ) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(list(self.requests))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [
                        (
                            r.method,
                            r.path,
                            (r.body or {}).get("action") if isinstance(r.body, dict) else None,
                        )
                        for r in self.requests
                    ]
                    raise AssertionError(f"recorder: no {what} within {timeout} s; saw {seen}")
                self._cond.wait(left)

    def wait_path(self, path: str, count: int = 1, timeout: float = 30.0) -> list[Recorded]:
        return self.wait_for(
            lambda rs: (m := [r for r in rs if r.path == path]) and len(m) >= count and m,
            timeout,
            f"{count} x {path}",
        )

    def wait_webhook(self, action: str, timeout: float = 30.0) -> Recorded:
        return self.wait_for(
            lambda rs: next(
                (
                    r
                    for r in rs
                    if r.path == "/webhook"
                    and isinstance(r.body, dict)
                    and r.body.get("action") == action
                ),
                None,
            ),
            timeout,
            f"webhook {action}",
        )

    # -- HTTP ------------------------------------------------------------------------------
    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/health":
            return 200, {"status": "UP", "model_class": "Recorder"}
        if method == "POST" and path == "/setup":
            if self.setup_status != 200:
                return self.setup_status, {"error": "recorder told to fail /setup"}
            return 200, {"model_version": self.model_version}
        if method == "POST" and path == "/webhook":
            return 200, {}
        if method == "POST" and path == "/predict":
            tasks = (body or {}).get("tasks", [])
            mode = self.predict_mode
            if mode == "error":
                return 500, {"error": "recorder told to fail"}
            if mode == "empty":
                return 200, {"results": []}
            preds = [self.make_prediction(t, self.model_version) for t in tasks]
            if mode == "fewer":
                preds = preds[:-1] if len(preds) > 1 else preds
            elif mode == "one":
                preds = preds[:1]
            return 200, {"results": preds, "model_version": self.model_version}
        return 404, {"error": f"no route {method} {path}"}

    def _forward(self, method: str, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        sent = {k: v for k, v in headers.items() if k in ("content-type", "authorization", "user-agent")}
        request = urllib.request.Request(self.forward_to + path, data=raw if method == "POST" else None,
                                         headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError as exc:  # e.g. the backend answered 401 without reading the body and hung up
            return 502, json.dumps({"error": f"recorder: forwarding failed: {exc!r}"}).encode()

    def _handler_class(self):
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                path = self.path.split("?", 1)[0]
                rec = Recorded(
                    method, path, {k.lower(): v for k, v in self.headers.items()}, body, raw
                )
                with recorder._cond:  # recorded on arrival, before the answer
                    recorder.requests.append(rec)
                    recorder._cond.notify_all()
                delay = recorder.delays.get(path)
                if delay:
                    time.sleep(delay)
                if recorder.forward_to:
                    status, data = recorder._forward(method, self.path, raw, rec.headers)
                    with recorder._cond:
                        rec.answer = json.loads(data) if data.startswith((b"{", b"[")) else data
                        recorder._cond.notify_all()
                else:
                    status, payload = recorder._answer(method, path, body)
                    data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the caller gave up (timeout) and closed the connection
                    rec.client_gone = True

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        return Handler
