"""A local, fault-injecting, OpenAI-compatible chat-completions server.

For reliability tests and benchmarks only: it answers quickly and deterministically with JSON that
is valid for the schema the client sent, and it can be told to misbehave (429, 5xx, hangs,
malformed or out-of-label-set answers, non-JSON HTTP bodies). It never stands in for the real
llama.cpp / vLLM server on a happy path.

Run it as a process (from the repository root)::

    python -m tests.support.fault_llm --host 127.0.0.1 --port 8123 --latency-ms 200

or in-process, in a background thread::

    with running_fault_server(latency_ms=0) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x")
        srv.set_script(["429:2", "ok", "hang"])
        ...
        srv.stats()

Endpoints
---------
``POST /v1/chat/completions``  non-streaming chat completion. The answer is a deterministic
    instance (seeded by a hash of the messages) of the JSON schema in
    ``response_format.json_schema.schema`` (type ``json_schema``), ``response_format.schema``
    (type ``json_object``, llama.cpp style), a top-level ``json_schema`` (llama.cpp) or
    ``guided_json`` (vLLM); ``{}`` without a schema. ``logprobs: true`` adds
    ``choices[0].logprobs.content`` whose tokens concatenate to the content.
``GET /v1/models``             the one model name.

Model names: an answer names the model the request asked for, unless ``reported_model`` is set
(``--reported-model``): then every answer names that one, as hosted APIs answer ``gpt-4o-mini``
with ``gpt-4o-mini-2024-07-18``.
``POST /_control``             ``{"script": [...], "latency_ms": int, "slots": int | null}`` (each optional).
``GET /_stats``                ``{"requests", "served": {behaviour: n}, "in_flight", "in_flight_max",
                               "first_request_at", "last_answer_at" (epoch seconds), ...}``.
``GET /_last_request``         the body of the last well-formed chat request (or ``null``).
``POST /_reset``               clears the stats and the script (the latency is kept).
``GET /health``                ``{"status": "ok"}``.

Script behaviours (consumed one per chat request, in arrival order; ``ok`` once empty):
``ok``, ``429`` / ``429:N`` (``Retry-After: N``), ``500``, ``503``, ``hang`` (no answer for up to
600 s; released promptly on server shutdown or when the client disconnects, e.g. on its own
timeout), ``malformed`` (HTTP 200, content is truncated JSON),
``bad_label`` (valid JSON, every enum-constrained string is ``"__not_in_label_set__"``),
``garbage_http`` (HTTP 200 whose body is not JSON at all), ``content:<text>`` (HTTP 200 whose message
content is exactly ``<text>``: a hostile answer), ``status:<code>`` (an OpenAI-style error with that
HTTP status), ``context_400`` (HTTP 400: the prompt exceeds the context window, as
llama-cpp-python words it), ``schema_500`` (HTTP 500: the ``response_format`` type is not
supported, as llama-cpp-python answers ``json_schema``), ``reply:<text>`` (HTTP 200 whose whole body is
exactly ``<text>``: a malformed response shape). The injected latency applies to every
behaviour except ``hang``.

Slots (``--slots N`` / ``"slots": N``): the server works on at most N requests at a time, like a
llama.cpp server with N slots; the others wait in arrival order, and the latency is paid once a
slot is free, so queued requests take longer. A request whose client gave up while it waited is
still worked on when its turn comes (as llama.cpp does), so abandoned requests cost capacity.
``null`` (the default) = unlimited.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import re
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

try:  # orjson is a dependency of the project; fall back to json if it is missing
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads = orjson.loads
except ImportError:  # pragma: no cover

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    _loads = json.loads

BAD_LABEL = "__not_in_label_set__"
HANG_SECONDS = 600.0
DEFAULT_MODEL = "fault-llm"
CHOSEN_LOGPROB = -0.05
BEHAVIOURS = ("ok", "429", "500", "503", "hang", "malformed", "bad_label", "garbage_http", "content", "status",
              "context_400", "schema_500", "reply")
# What llama-cpp-python answers a prompt longer than its window, and a response_format it lacks.
CONTEXT_400 = ("Requested tokens (2600) exceed context window of 2048", "invalid_request_error",
               "context_length_exceeded")
SCHEMA_500 = (
    (
        "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
        "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]"
    ),
    "server_error",
    None,
)
_WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
)
_ALT_TOKENS = (
    '"',
    "{",
    "}",
    ",",
    ":",
    " ",
    "the",
    "a",
    "\n",
    "an",
    "is",
    "of",
    "to",
    "in",
    "and",
    "x",
    "_",
    "-",
    "0",
    "1",
    "2",
    "no",
)
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9]{2,19}")


# --------------------------------------------------------------------------------------------
# JSON-schema instance generation
# --------------------------------------------------------------------------------------------
class SchemaInstanceGenerator:
    """Deterministic generator of an instance that is valid for a (practical subset of a) JSON
    schema: ``$ref`` (local), ``allOf`` (merged), ``anyOf``/``oneOf`` (first branch), ``const``,
    ``enum``, ``type`` (or a list of types: the first non-null one), objects (every property),
    arrays (``items``/``prefixItems``, ``minItems``..``maxItems``, ``uniqueItems``), strings
    (``minLength``/``maxLength``, common ``format``\\ s; ``pattern`` is not honoured), integers and
    numbers (``minimum``/``maximum``, exclusive bounds, ``multipleOf``), booleans and null.

    With ``bad_enum=True`` every string picked from an ``enum`` becomes ``BAD_LABEL``.
    Strings are taken from ``words`` (e.g. the words of the user message) when given, so that
    span-style answers can be located in the task text.
    """

    MAX_DEPTH = 12

    def __init__(
        self,
        root: Any,
        rng: random.Random,
        *,
        bad_enum: bool = False,
        words: list[str] | None = None,
    ) -> None:
        self.root = root
        self.rng = rng
        self.bad_enum = bad_enum
        self.words = words or list(_WORDS)

    def generate(self) -> Any:
        return self._gen(self.root, 0)

    # -- helpers -----------------------------------------------------------------------------
    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict):
                node = node.get(part, {})
            elif isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    return {}
            else:
                return {}
        return node

    @staticmethod
    def _merge(schemas: list[Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for sub in schemas:
            if not isinstance(sub, dict):
                continue
            for key, value in sub.items():
                if key == "properties" and isinstance(value, dict):
                    merged.setdefault("properties", {}).update(value)
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(dict.fromkeys(merged.get("required", []) + value))
                elif (
                    key in ("minimum", "exclusiveMinimum", "minItems", "minLength")
                    and key in merged
                ):
                    merged[key] = max(merged[key], value)
                elif (
                    key in ("maximum", "exclusiveMaximum", "maxItems", "maxLength")
                    and key in merged
                ):
                    merged[key] = min(merged[key], value)
                else:
                    merged[key] = value
        return merged

    @staticmethod
    def _infer_type(schema: dict[str, Any]) -> str:
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema or "minItems" in schema:
            return "array"
        if "multipleOf" in schema:
            return "integer"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
        return "string"

    # -- generation --------------------------------------------------------------------------
    def _gen(self, schema: Any, depth: int) -> Any:
        if schema is True or schema is None or schema == {}:
            return self._string({})
        if schema is False or not isinstance(schema, dict):
            return None
        if depth > 4 * self.MAX_DEPTH:
            return None
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            target = self._resolve(schema["$ref"])
            return self._gen(self._merge([target, rest]) if rest else target, depth + 1)
        if "allOf" in schema:
            parts = [
                self._resolve(s["$ref"]) if isinstance(s, dict) and "$ref" in s else s
                for s in schema["allOf"]
            ]
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self._gen(self._merge([*parts, rest]), depth + 1)
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                first = schema[key][0]
                if isinstance(first, dict) and "$ref" in first:
                    first = self._resolve(first["$ref"])
                return self._gen(self._merge([rest, first]) if rest else first, depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            value = self.rng.choice(schema["enum"])
            if self.bad_enum and isinstance(value, str):
                return BAD_LABEL
            return value

        stype = schema.get("type")
        if isinstance(stype, list):
            non_null = [t for t in stype if t != "null"]
            stype = non_null[0] if non_null else "null"
        if stype is None:
            stype = self._infer_type(schema)

        if stype == "object":
            return self._object(schema, depth)
        if stype == "array":
            return self._array(schema, depth)
        if stype == "string":
            return self._string(schema)
        if stype == "integer":
            return self._integer(schema)
        if stype == "number":
            return self._number(schema)
        if stype == "boolean":
            return self.rng.random() < 0.5
        if stype == "null":
            return None
        return self._string(schema)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties") or {}
        required = list(schema.get("required") or [])
        deep = depth > self.MAX_DEPTH  # recursive schemas: only what is required
        keys = required if deep else list(dict.fromkeys([*props.keys(), *required]))
        out: dict[str, Any] = {}
        for key in keys:
            out[key] = self._gen(props.get(key, {}), depth + 1)
        min_props = schema.get("minProperties") or 0
        extra = schema.get("additionalProperties", True)
        i = 0
        while len(out) < min_props and extra is not False:
            out[f"extra_{i}"] = self._gen(extra if isinstance(extra, dict) else {}, depth + 1)
            i += 1
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        lo = int(schema.get("minItems") or 0)
        hi_raw = schema.get("maxItems")
        hi = int(hi_raw) if hi_raw is not None else max(lo, 1) + 2
        if depth > self.MAX_DEPTH:  # noqa: SIM108 - a nested conditional expression would read worse
            n = lo
        else:
            n = self.rng.randint(min(max(lo, 1), hi), hi) if hi >= lo else lo
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-04 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        unique = bool(schema.get("uniqueItems"))
        out: list[Any] = []
        seen: set[str] = set()
        attempts = 0
        while len(out) < n and attempts < 20 * (n + 1):
            attempts += 1
            idx = len(out)
            sub = prefix[idx] if idx < len(prefix) else items
            if sub is False:
                break
            value = self._gen(sub if sub is not None else {}, depth + 1)
            if unique:
                key = json.dumps(value, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
            out.append(value)
        return out

    def _string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        fixed = {
            "date-time": "2024-01-01T00:00:00Z",
            "date": "2024-01-01",
            "time": "00:00:00Z",
            "email": "fault@example.com",
            "uri": "http://example.com/fault",
            "url": "http://example.com/fault",
            "uuid": "00000000-0000-4000-8000-000000000000",
            "ipv4": "127.0.0.1",
        }
        if fmt in fixed:
            return fixed[fmt]
        value = self.rng.choice(self.words)
        min_len = int(schema.get("minLength") or 0)
        max_len = schema.get("maxLength")
        if len(value) < min_len:
            value = value + "x" * (min_len - len(value))
        if max_len is not None and len(value) > int(max_len):
            value = value[: int(max_len)]
        return value

    def _bounds(self, schema: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        lo_ex = hi_ex = False
        xmin, xmax = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if isinstance(xmin, bool):  # draft-04
            lo_ex = xmin
        elif xmin is not None and (lo is None or xmin >= lo):
            lo, lo_ex = xmin, True
        if isinstance(xmax, bool):
            hi_ex = xmax
        elif xmax is not None and (hi is None or xmax <= hi):
            hi, hi_ex = xmax, True
        return lo, hi, lo_ex, hi_ex

    def _integer(self, schema: dict[str, Any]) -> int:
        lo, hi, lo_ex, hi_ex = self._bounds(schema)
        ilo = (
            None
            if lo is None
            else (int(lo) + 1 if lo_ex and float(lo).is_integer() else int(-(-lo // 1)))
        )
        ihi = (
            None
            if hi is None
            else (int(hi) - 1 if hi_ex and float(hi).is_integer() else int(hi // 1))
        )
        if ilo is None and ihi is None:
            ilo, ihi = 0, 100
        elif ilo is None:
            ilo = ihi - 100
        elif ihi is None:
            ihi = ilo + 100
        ihi = max(ihi, ilo)
        mult = schema.get("multipleOf")
        if isinstance(mult, int) and mult > 0:
            first = -(-ilo // mult) * mult
            choices = list(range(first, ihi + 1, mult))[:200]
            if choices:
                return self.rng.choice(choices)
        return self.rng.randint(ilo, ihi)

    def _number(self, schema: dict[str, Any]) -> float | int:
        lo, hi, lo_ex, hi_ex = self._bounds(schema)
        if lo is None and hi is None:
            lo, hi = 0.0, 1.0
        elif lo is None:
            lo = hi - 1.0
        elif hi is None:
            hi = lo + 1.0
        lo, hi = float(lo), float(hi)
        mult = schema.get("multipleOf")
        if mult:
            k_lo = int(-(-lo // mult)) + (1 if lo_ex and (lo / mult).is_integer() else 0)
            k_hi = int(hi // mult) - (1 if hi_ex and (hi / mult).is_integer() else 0)
            if k_hi >= k_lo:
                return self.rng.randint(k_lo, k_hi) * mult
        if hi <= lo:
            return lo
        value = round(lo + (hi - lo) * self.rng.uniform(0.1, 0.9), 4)
        if not (lo < value < hi):
            value = (lo + hi) / 2.0
        return value


def schema_from_request(body: dict[str, Any]) -> Any | None:
    """The JSON schema the client asked the answer to follow, or None."""
    rf = body.get("response_format")
    if isinstance(rf, dict):
        rtype = rf.get("type")
        if rtype == "json_schema":
            js = rf.get("json_schema")
            if isinstance(js, dict):
                if "schema" in js:
                    return js["schema"]
                if "schema_" in js:
                    return js["schema_"]
        if rtype == "json_object" and "schema" in rf:
            return rf["schema"]
        if "schema" in rf:
            return rf["schema"]
    for key in ("json_schema", "guided_json"):
        value = body.get(key)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        if isinstance(value, dict):
            return value
    return None


def _message_text(messages: Any) -> str:
    parts: list[str] = []
    if not isinstance(messages, list):
        return ""
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for piece in content:
                if isinstance(piece, dict) and isinstance(piece.get("text"), str):
                    parts.append(piece["text"])
    return "\n".join(parts)


def _last_user_words(messages: Any) -> list[str]:
    if not isinstance(messages, list):
        return []
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            text = _message_text([msg])
            return list(dict.fromkeys(_WORD_RE.findall(text)))[:200]
    return []


def messages_seed(messages: Any) -> int:
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def generate_content(body: dict[str, Any], *, bad_enum: bool = False) -> str:
    """The JSON text answering this chat-completions request body."""
    schema = schema_from_request(body)
    if schema is None:
        return "{}"
    messages = body.get("messages")
    gen = SchemaInstanceGenerator(
        schema,
        random.Random(messages_seed(messages)),
        bad_enum=bad_enum,
        words=_last_user_words(messages),
    )
    return json.dumps(gen.generate(), ensure_ascii=False)


def logprobs_for(content: str, top_n: int) -> list[dict[str, Any]]:
    """Token logprobs whose tokens concatenate exactly to ``content`` (~3-character tokens)."""
    out = []
    for i in range(0, len(content), 3):
        token = content[i : i + 3]
        top = []
        if top_n > 0:
            top.append({"token": token, "logprob": CHOSEN_LOGPROB, "bytes": list(token.encode())})
            alts = [a for a in _ALT_TOKENS if a != token]
            for j, alt in enumerate(alts[: top_n - 1]):
                top.append({"token": alt, "logprob": -4.0 - 0.5 * j, "bytes": list(alt.encode())})
        out.append(
            {
                "token": token,
                "logprob": CHOSEN_LOGPROB,
                "bytes": list(token.encode()),
                "top_logprobs": top,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Server state and app
# --------------------------------------------------------------------------------------------
def parse_behaviour(item: Any) -> tuple[str, int | str | None]:
    """``"429:5"`` -> ``("429", 5)``; ``"content:{}"`` -> ``("content", "{}")``; raises ValueError on
    an unknown behaviour."""
    if isinstance(item, int):
        item = str(item)
    if not isinstance(item, str):
        raise TypeError(f"behaviour must be a string, got {item!r}")
    if item.startswith("content:"):  # the text is taken verbatim (whitespace and colons included)
        return "content", item[len("content:"):]
    if item.startswith("reply:"):
        return "reply", item[len("reply:"):]
    name, _, arg = item.strip().partition(":")
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {item!r}; known: {', '.join(BEHAVIOURS)}")
    if name == "status":
        if not arg.isdigit() or not 100 <= int(arg) <= 599:
            raise ValueError(f"bad status in {item!r}")
        return name, int(arg)
    if arg:
        if name != "429":
            raise ValueError(f"behaviour {name!r} takes no argument")
        try:
            n = int(arg)
        except ValueError:
            raise ValueError(f"bad Retry-After in {item!r}") from None
        if n < 0:
            raise ValueError(f"bad Retry-After in {item!r}")
        return name, n
    return name, None


class FaultState:
    """Everything the app mutates; only touched from the server's event loop."""

    def __init__(self, latency_ms: float = 0.0, model: str = DEFAULT_MODEL, slots: int | None = None,
                 reported_model: str | None = None) -> None:
        self.latency_ms = float(latency_ms)
        self.reported_model = reported_model
        self.slots = slots
        self._slot_sem: asyncio.Semaphore | None = None
        self.waiting = 0
        self.waiting_max = 0
        self.model = model
        self.script: deque[tuple[str, int | str | None]] = deque()
        self.requests = 0
        self.served: Counter[str] = Counter()
        self.in_flight = 0
        self.in_flight_max = 0
        self.started_at = time.time()
        self.last_request: dict[str, Any] | None = None
        self.first_request_at: float | None = None  # wall clock (time.time()) of chat requests
        self.last_answer_at: float | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def slot(self) -> asyncio.Semaphore | contextlib.nullcontext:
        """The slot a request must hold while it is worked on (no limit without ``slots``)."""
        if self.slots is None:
            return contextlib.nullcontext()
        if self._slot_sem is None:
            self._slot_sem = asyncio.Semaphore(self.slots)
        return self._slot_sem

    def set_slots(self, slots: int | None) -> None:
        if slots is not None and slots < 1:
            raise ValueError("slots must be >= 1 or null")
        self.slots = slots
        self._slot_sem = None  # requests already waiting keep the old semaphore

    @property
    def stopping(self) -> asyncio.Event:
        if self._stopping is None:
            self._stopping = asyncio.Event()
        return self._stopping

    def set_script(self, script: list[Any] | None, latency_ms: float | None = None) -> None:
        try:  # validate all first
            parsed = [parse_behaviour(item) for item in (script or [])]
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        if script is not None:
            self.script = deque(parsed)
        if latency_ms is not None:
            if latency_ms < 0:
                raise ValueError("latency_ms must be >= 0")
            self.latency_ms = float(latency_ms)

    def reset(self) -> None:
        self.script.clear()
        self.requests = 0
        self.served = Counter()
        self.in_flight_max = self.in_flight
        self.waiting_max = self.waiting
        self.started_at = time.time()
        self.last_request = None
        self.first_request_at = self.last_answer_at = None

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "served": dict(self.served),
            "in_flight": self.in_flight,
            "in_flight_max": self.in_flight_max,
            "script_remaining": len(self.script),
            "latency_ms": self.latency_ms,
            "slots": self.slots,
            "waiting": self.waiting,
            "waiting_max": self.waiting_max,
            "first_request_at": self.first_request_at,
            "last_answer_at": self.last_answer_at,
        }


def _error(
    status: int, message: str, etype: str, code: str | None, headers: dict[str, str] | None = None
) -> Response:
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return Response(
        _dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def create_app(state: FaultState) -> Starlette:
    counter = {"n": 0}

    async def _hang(request: Request) -> None:
        """Wait up to HANG_SECONDS; released early by server shutdown or client disconnect."""
        await request.body()
        waiters = {
            asyncio.ensure_future(state.stopping.wait()),
            asyncio.ensure_future(request.receive()),  # http.disconnect once the client leaves
        }
        try:
            await asyncio.wait(waiters, timeout=HANG_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def chat(request: Request) -> Response:
        state.requests += 1
        if state.first_request_at is None:
            state.first_request_at = time.time()
        behaviour, arg = state.script.popleft() if state.script else ("ok", None)
        state.in_flight += 1
        state.in_flight_max = max(state.in_flight_max, state.in_flight)
        try:
            if behaviour == "hang":
                await _hang(request)
                state.served["hang"] += 1
                return _error(503, "fault server: hang released", "server_error", "hang")
            raw = await request.body()
            slot = state.slot
            state.waiting += 1
            state.waiting_max = max(state.waiting_max, state.waiting)
            try:
                await slot.__aenter__()
            finally:
                state.waiting -= 1
            try:
                if state.latency_ms > 0:
                    await asyncio.sleep(state.latency_ms / 1000.0)
            finally:
                await slot.__aexit__(None, None, None)
            if behaviour == "429":
                state.served["429"] += 1
                headers = {"Retry-After": str(arg)} if arg is not None else None
                return _error(
                    429,
                    "Rate limit reached (injected by fault server)",
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    headers,
                )
            if behaviour in ("500", "503"):
                state.served[behaviour] += 1
                msg = "Internal server error" if behaviour == "500" else "Service unavailable"
                return _error(
                    int(behaviour), f"{msg} (injected by fault server)", "server_error", None
                )
            if behaviour == "status":
                state.served["status"] += 1
                assert isinstance(arg, int)
                return _error(arg, f"HTTP {arg} (injected by fault server)", "invalid_request_error", None)
            if behaviour == "context_400":
                state.served[behaviour] += 1
                return _error(400, *CONTEXT_400)
            if behaviour == "schema_500":
                state.served[behaviour] += 1
                return _error(500, *SCHEMA_500)
            if behaviour == "reply":
                state.served["reply"] += 1
                return Response(str(arg).encode("utf-8", "surrogatepass"), status_code=200,
                                media_type="application/json")
            if behaviour == "garbage_http":
                state.served["garbage_http"] += 1
                return Response(
                    b"<html><body>502 Bad Gateway</body></html> upstream garbage \x00",
                    status_code=200,
                    media_type="application/json",
                )
            try:
                body = _loads(raw)
                if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                    raise TypeError("body must be an object with a 'messages' list")
            except (TypeError, ValueError) as exc:
                state.served["bad_request"] += 1
                return _error(400, f"invalid request: {exc}", "invalid_request_error", None)
            state.last_request = body

            content = generate_content(body, bad_enum=(behaviour == "bad_label"))
            if behaviour == "content":
                content = str(arg)
            if behaviour == "malformed":
                content = content[: max(1, len(content) // 2)]
                content = content.removesuffix("}")
            state.served[behaviour] += 1
            counter["n"] += 1
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
            if body.get("logprobs"):
                top_n = body.get("top_logprobs") or 0
                top_n = max(0, min(int(top_n), 20)) if isinstance(top_n, int) else 0
                choice["logprobs"] = {"content": logprobs_for(content, top_n), "refusal": None}
            n_completion = (len(content) + 2) // 3
            n_prompt = max(1, len(_message_text(body["messages"])) // 4)
            payload = {
                "id": f"chatcmpl-fault-{counter['n']}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": state.reported_model or body.get("model") or state.model,
                "system_fingerprint": "fault-llm",
                "choices": [choice],
                "usage": {
                    "prompt_tokens": n_prompt,
                    "completion_tokens": n_completion,
                    "total_tokens": n_prompt + n_completion,
                },
            }
            return Response(_dumps(payload), media_type="application/json")
        finally:
            state.in_flight -= 1
            state.last_answer_at = time.time()

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": state.model,
                        "object": "model",
                        "created": int(state.started_at),
                        "owned_by": "fault-llm",
                    }
                ],
            }
        )

    async def control(request: Request) -> Response:
        try:
            body = _loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise TypeError("body must be a JSON object")
            script = body.get("script")
            if script is not None and not isinstance(script, list):
                raise TypeError("'script' must be a list")
            latency = body.get("latency_ms")
            if latency is not None and not isinstance(latency, (int, float)):
                raise TypeError("'latency_ms' must be a number")
            if "slots" in body:
                slots = body["slots"]
                if slots is not None and (not isinstance(slots, int) or isinstance(slots, bool)):
                    raise TypeError("'slots' must be an integer or null")
                state.set_slots(slots)
            state.set_script(script, latency)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True, **state.stats()})

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def last_request(request: Request) -> Response:
        return JSONResponse(state.last_request)

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True, **state.stats()})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/_control", control, methods=["POST"]),
        Route("/_stats", stats, methods=["GET"]),
        Route("/_last_request", last_request, methods=["GET"]),
        Route("/_reset", reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.fault = state
    return app


class _UvicornServer(uvicorn.Server):
    """Releases hanging requests before uvicorn waits for connections to finish."""

    def __init__(self, config: uvicorn.Config, state: FaultState, announce: bool = False) -> None:
        super().__init__(config)
        self.fault_state = state
        self.announce = announce
        self.bound_port: int | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        with contextlib.suppress(Exception):
            self.bound_port = self.servers[0].sockets[0].getsockname()[1]
        if self.announce and self.started:
            print(f"fault_llm ready: http://{self.config.host}:{self.bound_port}/v1", flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.fault_state.stopping.set()
        await super().shutdown(sockets=sockets)


def _config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
        backlog=4096,
        timeout_keep_alive=30,
    )


# --------------------------------------------------------------------------------------------
# In-process server
# --------------------------------------------------------------------------------------------
class FaultServer:
    """The fault server running in a background thread with its own event loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0,
        model: str = DEFAULT_MODEL,
        slots: int | None = None,
        reported_model: str | None = None,
    ) -> None:
        self.host = host
        self.state = FaultState(latency_ms=latency_ms, model=model, slots=slots, reported_model=reported_model)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        self._server = _UvicornServer(_config(create_app(self.state), host, self.port), self.state)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def model(self) -> str:
        return self.state.model

    def start(self, timeout: float = 10.0) -> FaultServer:
        def run() -> None:
            try:
                loop = asyncio.new_event_loop()
                self._loop = loop
                asyncio.set_event_loop(loop)
                loop.run_until_complete(self._server.serve(sockets=[self._sock]))
            except BaseException as exc:  # reported to start()
                self._error = exc
            finally:
                if self._loop is not None:
                    self._loop.close()

        self._thread = threading.Thread(target=run, name=f"fault-llm-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"fault server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fault server did not start in time")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._sock.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server loop (state is only mutated there)."""
        if self._loop is None or not self._loop.is_running():
            return fn(*args)

        async def wrapper() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    def set_script(self, script: list[str], latency_ms: float | None = None) -> None:
        self._call(self.state.set_script, list(script), latency_ms)

    def set_latency(self, latency_ms: float) -> None:
        self._call(self.state.set_script, None, latency_ms)

    def set_slots(self, slots: int | None) -> None:
        self._call(self.state.set_slots, slots)

    def reset(self) -> None:
        self._call(self.state.reset)

    def stats(self) -> dict[str, Any]:
        return self._call(self.state.stats)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_fault_server(
    latency_ms: float = 0, *, host: str = "127.0.0.1", port: int = 0, model: str = DEFAULT_MODEL,
    slots: int | None = None, reported_model: str | None = None,
) -> Iterator[FaultServer]:
    """Start a fault server in a background thread; stop it (releasing hangs) on exit."""
    server = FaultServer(host=host, port=port, latency_ms=latency_ms, model=model, slots=slots,
                         reported_model=reported_model).start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fault_llm",
        description="Fault-injecting OpenAI-compatible server (tests and benchmarks only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123, help="0 picks a free port")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay added to every answer (default 0)"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="name listed by /v1/models")
    parser.add_argument("--reported-model", default=None,
                        help="model name every answer reports (default: the one the request asked for)")
    parser.add_argument("--slots", type=int, default=None, help="requests worked on at once (default unlimited)")
    parser.add_argument(
        "--script", default="", help="initial comma-separated fault script, e.g. '429:1,500,ok'"
    )
    args = parser.parse_args(argv)

    state = FaultState(latency_ms=args.latency_ms, model=args.model, slots=args.slots,
                       reported_model=args.reported_model)
    if args.script:
        state.set_script([s for s in args.script.split(",") if s.strip()])
    server = _UvicornServer(_config(create_app(state), args.host, args.port), state, announce=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
