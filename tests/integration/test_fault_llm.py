"""Unit tests of the fault-injecting OpenAI-compatible server (tests/support/fault_llm.py).

Driven with the real ``openai.AsyncOpenAI`` client (``max_retries=0``); no Label Studio, Redis or
LLM needed. Only loopback traffic.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) may not put the root there
    sys.path.insert(0, str(REPO))

from tests.support.fault_llm import (
    BAD_LABEL,
    FaultServer,
    generate_content,
    parse_behaviour,
    running_fault_server,
)

INTENT_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {
            "type": "string",
            "enum": ["navigational", "informational", "transactional", "other"],
        },
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["intent"],
    "additionalProperties": False,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "intent": INTENT_SCHEMA,
    "multi_label_unique": {
        "type": "object",
        "properties": {
            "topics": {
                "type": "array",
                "items": {"type": "string", "enum": ["a", "b", "c", "d"]},
                "minItems": 2,
                "maxItems": 3,
                "uniqueItems": True,
            },
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "flag": {"type": "boolean"},
        },
        "required": ["topics", "rating"],
    },
    "ner_with_refs": {  # pydantic-style: $defs + $ref, anyOf with null, exclusive bounds
        "$defs": {
            "Span": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 1, "maxLength": 40},
                    "label": {"enum": ["PER", "ORG", "LOC"]},
                    "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                },
                "required": ["text", "label"],
            }
        },
        "type": "object",
        "properties": {
            "entities": {"type": "array", "items": {"$ref": "#/$defs/Span"}, "maxItems": 4},
            "note": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]},
            "kind": {"oneOf": [{"const": "ner"}, {"const": "other"}]},
            "count": {"type": ["integer", "null"], "minimum": 10, "maximum": 12},
        },
        "required": ["entities", "kind"],
    },
    "per_control": {  # one property per control tag, nested objects
        "type": "object",
        "properties": {
            "sentiment": {
                "type": "object",
                "properties": {
                    "choices": {
                        "type": "array",
                        "items": {"enum": ["pos", "neg"]},
                        "minItems": 1,
                        "maxItems": 1,
                    },
                },
                "required": ["choices"],
            },
            "rating": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer", "minimum": 1, "maximum": 10, "multipleOf": 3}
                },
            },
            "comment": {"type": "string", "format": "date-time"},
        },
        "required": ["sentiment", "rating"],
    },
}


@pytest.fixture(scope="module")
def server() -> FaultServer:
    with running_fault_server(latency_ms=0) as srv:
        yield srv


@pytest.fixture()
def srv(server: FaultServer) -> FaultServer:
    server.reset()
    server.set_latency(0)
    return server


def _client(srv: FaultServer, timeout: float = 10.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=srv.base_url, api_key="test", max_retries=0, timeout=timeout)


def _messages(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Classify the query. Answer in JSON."},
        {"role": "user", "content": text},
    ]


async def _chat(
    client: openai.AsyncOpenAI,
    text: str,
    schema: dict | None = None,
    mode: str = "json_schema",
    **kw: Any,
) -> Any:
    extra: dict[str, Any] = {}
    if schema is not None and mode == "json_schema":
        extra["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        }
    elif schema is not None and mode == "json_object":
        extra["response_format"] = {"type": "json_object", "schema": schema}
    return await client.chat.completions.create(
        model="bench-model", messages=_messages(text), **extra, **kw
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --------------------------------------------------------------------------------------------
# schema-valid answers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["json_schema", "json_object"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_answers_are_valid_for_the_requested_schema(srv: FaultServer, name: str, mode: str) -> None:
    schema = SCHEMAS[name]

    async def go() -> list[Any]:
        async with _client(srv) as client:
            return await asyncio.gather(
                *[
                    _chat(client, f"query number {i} about Paris hotels", schema, mode)
                    for i in range(25)
                ]
            )

    responses = run(go())
    contents = set()
    for resp in responses:
        assert resp.model == "bench-model"
        assert resp.choices[0].finish_reason == "stop"
        assert resp.usage is not None and resp.usage.completion_tokens > 0
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        content = resp.choices[0].message.content
        value = json.loads(content)
        jsonschema.validate(value, schema)
        assert set(value) >= set(schema.get("required", []))
        contents.add(content)
    assert len(contents) > 1, "different messages should give varied (seeded) answers"


def test_answers_are_deterministic_per_messages(srv: FaultServer) -> None:
    async def go() -> list[str]:
        async with _client(srv) as client:
            out = []
            for text in ("same text", "same text", "other text"):
                resp = await _chat(client, text, SCHEMAS["ner_with_refs"])
                out.append(resp.choices[0].message.content)
            return out

    a, b, _ = run(go())
    assert a == b


def test_strings_come_from_the_user_message(srv: FaultServer) -> None:
    body = {
        "messages": _messages("Angela Merkel visited Siemens in Munich"),
        "response_format": {
            "type": "json_schema",
            "json_schema": {"schema": SCHEMAS["ner_with_refs"]},
        },
    }
    value = json.loads(generate_content(body))
    for ent in value["entities"]:
        assert ent["text"] in "Angela Merkel visited Siemens in Munich"


def test_no_schema_answers_empty_object(srv: FaultServer) -> None:
    async def go() -> Any:
        async with _client(srv) as client:
            return await _chat(client, "anything")

    resp = run(go())
    assert resp.choices[0].message.content == "{}"


def test_models_lists_the_model(srv: FaultServer) -> None:
    async def go() -> Any:
        async with _client(srv) as client:
            return await client.models.list()

    page = run(go())
    assert [m.id for m in page.data] == [srv.model]


# --------------------------------------------------------------------------------------------
# logprobs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("top", [None, 0, 1, 5])
def test_logprob_tokens_concatenate_to_content(srv: FaultServer, top: int | None) -> None:
    async def go() -> Any:
        async with _client(srv) as client:
            kw: dict[str, Any] = {"logprobs": True}
            if top is not None:
                kw["top_logprobs"] = top
            return await _chat(client, "a query with ünïcödé text", SCHEMAS["ner_with_refs"], **kw)

    resp = run(go())
    choice = resp.choices[0]
    content = choice.message.content
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == content
    for tok in tokens:
        assert 1 <= len(tok.token) <= 3
        assert tok.logprob < 0
        assert bytes(tok.bytes).decode() == tok.token
        assert len(tok.top_logprobs) == (top or 0)
        if top:
            assert tok.top_logprobs[0].token == tok.token
            assert tok.top_logprobs[0].logprob == tok.logprob
            assert len({t.token for t in tok.top_logprobs}) == top
            assert all(t.logprob <= tok.logprob for t in tok.top_logprobs)


def test_no_logprobs_unless_asked(srv: FaultServer) -> None:
    async def go() -> Any:
        async with _client(srv) as client:
            return await _chat(client, "q", INTENT_SCHEMA)

    assert run(go()).choices[0].logprobs is None


# --------------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------------
def test_429_with_and_without_retry_after(srv: FaultServer) -> None:
    srv.set_script(["429:7", "429"])

    async def go() -> list[BaseException]:
        errors = []
        async with _client(srv) as client:
            for _ in range(2):
                with pytest.raises(openai.RateLimitError) as info:
                    await _chat(client, "q", INTENT_SCHEMA)
                errors.append(info.value)
        return errors

    with_header, without = run(go())
    assert with_header.status_code == 429
    assert with_header.response.headers["retry-after"] == "7"
    assert with_header.body["type"] == "rate_limit_error"  # OpenAI error body
    assert "retry-after" not in without.response.headers
    assert srv.stats()["served"] == {"429": 2}


@pytest.mark.parametrize("code", [500, 503])
def test_5xx(srv: FaultServer, code: int) -> None:
    srv.set_script([str(code)])

    async def go() -> BaseException:
        async with _client(srv) as client:
            with pytest.raises(openai.InternalServerError) as info:
                await _chat(client, "q", INTENT_SCHEMA)
            # the script is consumed: the next call is ok
            ok = await _chat(client, "q", INTENT_SCHEMA)
            jsonschema.validate(json.loads(ok.choices[0].message.content), INTENT_SCHEMA)
            return info.value

    err = run(go())
    assert err.status_code == code
    assert err.body["type"] == "server_error"
    assert srv.stats()["served"] == {str(code): 1, "ok": 1}


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_hang_times_out_on_the_client(srv: FaultServer) -> None:
    srv.set_script(["hang"])

    async def go() -> float:
        async with _client(srv, timeout=0.5) as client:
            t0 = time.perf_counter()
            with pytest.raises(openai.APITimeoutError):
                await _chat(client, "q", INTENT_SCHEMA)
            return time.perf_counter() - t0

    elapsed = run(go())
    assert 0.4 < elapsed < 3.0
    # the client went away: the server side of the hang is released, not leaked
    _wait_for(lambda: srv.stats()["in_flight"] == 0)
    assert srv.stats()["served"] == {"hang": 1}


def _background_calls(base_url: str, n: int, timeout: float) -> tuple[threading.Thread, list]:
    results: list = []

    async def fire() -> None:
        async with openai.AsyncOpenAI(
            base_url=base_url, api_key="x", max_retries=0, timeout=timeout
        ) as client:
            results.extend(
                await asyncio.gather(
                    *[_chat(client, "q", INTENT_SCHEMA) for _ in range(n)], return_exceptions=True
                )
            )

    thread = threading.Thread(target=lambda: asyncio.run(fire()), daemon=True)
    thread.start()
    return thread, results


def test_hang_is_released_promptly_on_shutdown() -> None:
    srv = FaultServer().start()
    try:
        srv.set_script(["hang"] * 5)
        thread, results = _background_calls(srv.base_url, 5, timeout=60)
        _wait_for(lambda: srv.stats()["in_flight"] == 5)
        t0 = time.perf_counter()
    finally:
        srv.stop()
    assert time.perf_counter() - t0 < 3.0
    thread.join(10)
    assert not thread.is_alive()
    assert len(results) == 5
    # nobody got a real answer: the clients see an error or a dropped connection
    assert all(isinstance(r, openai.APIError) for r in results), results


def test_malformed_is_not_json(srv: FaultServer) -> None:
    srv.set_script(["malformed"])

    async def go() -> Any:
        async with _client(srv) as client:
            return await _chat(client, "q", INTENT_SCHEMA, logprobs=True)

    resp = run(go())
    content = resp.choices[0].message.content
    assert content.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    assert "".join(t.token for t in resp.choices[0].logprobs.content) == content
    assert srv.stats()["served"] == {"malformed": 1}


def test_bad_label_is_json_outside_the_label_set(srv: FaultServer) -> None:
    srv.set_script(["bad_label", "bad_label"])

    async def go() -> list[Any]:
        async with _client(srv) as client:
            return [
                await _chat(client, "q", INTENT_SCHEMA),
                await _chat(client, "q", SCHEMAS["per_control"]),
            ]

    intent, per_control = (json.loads(r.choices[0].message.content) for r in run(go()))
    assert intent["intent"] == BAD_LABEL
    assert per_control["sentiment"]["choices"] == [BAD_LABEL]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(intent, INTENT_SCHEMA)
    # everything but the enums still follows the schema
    assert 0 <= intent["confidence"] <= 1
    assert srv.stats()["served"] == {"bad_label": 2}


def test_garbage_http_body_is_not_json(srv: FaultServer) -> None:
    srv.set_script(["garbage_http"])

    async def go() -> tuple[int, bytes]:
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.post(
                f"{srv.base_url}/chat/completions", json={"model": "m", "messages": _messages("q")}
            )
            return r.status_code, r.content

    status, content = run(go())
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(content)

    # what an openai client sees: a bare JSON decode error, *not* an openai.APIError
    srv.set_script(["garbage_http"])

    async def via_openai() -> None:
        async with _client(srv) as client:
            with pytest.raises(ValueError) as info:
                await _chat(client, "q", INTENT_SCHEMA)
            assert not isinstance(info.value, openai.APIError)

    run(via_openai())


def test_script_order_stats_control_and_reset_over_http(srv: FaultServer) -> None:
    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=srv.url, trust_env=False) as http:
            r = await http.post(
                "/_control", json={"script": ["500", "429:1", "ok", "bad_label"], "latency_ms": 0}
            )
            assert r.status_code == 200 and r.json()["script_remaining"] == 4
            bad = await http.post("/_control", json={"script": ["teapot"]})
            assert bad.status_code == 400 and "teapot" in bad.json()["error"]
            assert (await http.post("/_control", json={"script": ["500:3"]})).status_code == 400
            # a rejected script leaves the previous one untouched
            assert (await http.get("/_stats")).json()["script_remaining"] == 4

            statuses = []
            async with _client(srv) as client:
                for _ in range(6):
                    try:
                        resp = await _chat(client, "q", INTENT_SCHEMA)
                        value = json.loads(resp.choices[0].message.content)
                        statuses.append("bad" if value["intent"] == BAD_LABEL else 200)
                    except openai.APIStatusError as exc:
                        statuses.append(exc.status_code)
            assert statuses == [500, 429, 200, "bad", 200, 200]
            stats = (await http.get("/_stats")).json()
            assert stats["requests"] == 6
            assert stats["served"] == {"500": 1, "429": 1, "ok": 3, "bad_label": 1}
            assert stats["in_flight_max"] == 1
            last = (await http.get("/_last_request")).json()
            assert last["model"] == "bench-model" and last["messages"] == _messages("q")
            assert last["response_format"]["json_schema"]["schema"] == INTENT_SCHEMA

            await http.post("/_control", json={"script": ["503"]})
            r = await http.post("/_reset")
            assert r.status_code == 200
            return (await http.get("/_stats")).json()

    after = run(go())
    assert after["requests"] == 0 and after["served"] == {} and after["script_remaining"] == 0
    assert httpx.get(f"{srv.url}/_last_request", trust_env=False).json() is None


def test_parse_behaviour() -> None:
    assert parse_behaviour("429:3") == ("429", 3)
    assert parse_behaviour("ok") == ("ok", None)
    assert parse_behaviour(503) == ("503", None)
    for bad in ("429:x", "429:-1", "hang:2", "nope", None):
        with pytest.raises((ValueError, TypeError)):
            parse_behaviour(bad)


# --------------------------------------------------------------------------------------------
# concurrency
# --------------------------------------------------------------------------------------------
def test_concurrent_calls_overlap(srv: FaultServer) -> None:
    """The server holds every call at once (counted by the server itself, not timed by the client:
    the wall-clock figure is benchmarks/fault_llm_concurrency.py's, a loaded machine would fail a bound).
    The latency is long enough that a busy client still has every call sent before the first returns."""

    async def go(n: int) -> None:
        async with _client(srv) as client:
            responses = await asyncio.gather(
                *[_chat(client, f"query {i}", INTENT_SCHEMA, logprobs=True) for i in range(n)]
            )
        for resp in responses:
            jsonschema.validate(json.loads(resp.choices[0].message.content), INTENT_SCHEMA)

    srv.set_latency(1000)
    run(go(64))
    assert srv.stats()["in_flight_max"] == 64

    srv.reset()
    srv.set_latency(2000)
    run(go(300))  # "hundreds" in flight
    assert srv.stats()["in_flight_max"] >= 250


# --------------------------------------------------------------------------------------------
# as a process
# --------------------------------------------------------------------------------------------
def test_runs_as_a_module_and_stops_on_sigterm_with_a_hang_in_flight() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.fault_llm",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--latency-ms",
            "5",
            "--model",
            "proc-model",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("fault_llm ready: http://127.0.0.1:"), line
        base_url = line.split()[-1]
        root = base_url.rsplit("/v1", 1)[0]

        async def go() -> None:
            async with openai.AsyncOpenAI(
                base_url=base_url, api_key="x", max_retries=0, timeout=5
            ) as client:
                models = await client.models.list()
                assert [m.id for m in models.data] == ["proc-model"]
                resp = await _chat(client, "q", INTENT_SCHEMA, mode="json_object")
                jsonschema.validate(json.loads(resp.choices[0].message.content), INTENT_SCHEMA)
            async with httpx.AsyncClient(trust_env=False) as http:
                await http.post(f"{root}/_control", json={"script": ["hang"]})

        run(go())
        thread, results = _background_calls(base_url, 1, timeout=60)

        def hanging() -> bool:
            with httpx.Client(trust_env=False) as http:
                return http.get(f"{root}/_stats").json()["in_flight"] == 1

        _wait_for(hanging)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it captured
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
        assert time.perf_counter() - t0 < 4.0
        thread.join(10)
        assert len(results) == 1 and isinstance(results[0], openai.APIError), results
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
