"""The hostile-input corpus (``tests/hostile/``) and the listeners that watch where the backend calls.

Cases are data: one YAML file per category under ``tests/hostile/cases/``, each a list of requests
with what must come back. Large or repetitive values are written with a few macros, expanded when
the case is loaded:

- ``${name}`` inside any string: a value from ``tests/hostile/fixtures.yaml`` or from the running
  test (``${stranger}``, ``${ls}``, ``${listed}``: the listeners' URLs);
- ``{$repeat: [text, n]}``: the string ``text * n``; ``{$list: [item, n]}``: a list of n items;
- ``{$enumerate: [text, n]}``: ``text`` n times, its ``{i}`` replaced by 0, 1, ... n-1;
- ``{$nest: {depth: n, key: k, leaf: v}}``: ``{k: {k: ... v}}`` n levels deep (lists without ``key``);
- ``{$concat: [a, b, ...]}``: the strings joined; ``{$json: value}``: ``value`` as JSON text;
- ``{$basic: [user, password]}``: an HTTP basic ``Authorization`` value.

``${case}`` is the case's own id: task texts that contain it are unique, so the backend's
prediction cache never answers a case from another one.

``Listener`` is a tiny HTTP server that records every request it gets (method, target, headers)
and answers with a fixed status, e.g. a redirect. Pointed at by ``HTTP_PROXY`` it also sees every
call the backend makes to any host outside ``NO_PROXY``.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import yaml

CORPUS = Path(__file__).resolve().parents[1] / "hostile"


@dataclass(frozen=True)
class Call:
    method: str
    target: str
    headers: dict[str, str]


class Listener:
    """Records every request; answers ``status`` with ``headers`` (e.g. a redirect) and an empty JSON body."""

    def __init__(self, name: str, status: int = 404, headers: dict[str, str] | None = None) -> None:
        self.name = name
        self.status = status
        self.headers = dict(headers or {})
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _record(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(min(length, 1 << 20))
                with outer._lock:
                    outer.calls.append(Call(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                body = b"{}"
                self.send_response(outer.status)
                for key, value in outer.headers.items():
                    self.send_header(key, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_CONNECT = _record

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"listener-{name}", daemon=True)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Case:
    """One hostile request and what must come back."""

    id: str
    category: str
    method: str
    path: str
    json_body: Any = None
    has_json: bool = False
    raw: bytes | None = None
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    auth: str = "good"  # good | none | a raw Authorization header value
    signed: bool = False  # add the webhook secret header
    llm: list[str] = field(default_factory=list)
    expect: dict[str, Any] = field(default_factory=dict)
    # Requests sent first, in order ({path, json, method}), each answered below 500: the state the
    # case's own request meets (two instances' /setup before a /predict). Their metrics are not the case's.
    before: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> bytes | None:
        if self.raw is not None:
            return self.raw
        if self.has_json:
            limit = sys.getrecursionlimit()
            sys.setrecursionlimit(max(limit, 20_000))  # the corpus nests values up to 2,000 deep
            try:
                return json.dumps(self.json_body, ensure_ascii=False).encode()
            finally:
                sys.setrecursionlimit(limit)
        return None


def load_cases(values: dict[str, str], folder: Path = CORPUS / "cases") -> list[Case]:
    """Every case of every ``*.yaml`` in ``folder``, macros expanded with ``values`` + the fixtures."""
    fixtures = yaml.safe_load((CORPUS / "fixtures.yaml").read_text(encoding="utf-8"))
    names = dict(values)
    for key, value in fixtures.items():  # fixtures may refer to values and to earlier fixtures
        names[key] = expand(value, names)
    cases: list[Case] = []
    for path in sorted(folder.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        defaults = doc.get("defaults", {})
        for raw in doc["cases"]:
            spec = {**defaults, **raw, "expect": {**defaults.get("expect", {}), **raw.get("expect", {})}}
            case_names = {**names, "case": f"{path.stem}/{spec['id']}"}
            cases.append(_case(path.stem, expand(spec, case_names)))
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"duplicate case ids: {sorted(duplicates)}"
    return cases


def _case(category: str, spec: dict[str, Any]) -> Case:
    raw = None
    if "body" in spec:
        raw = spec["body"].encode("utf-8", "surrogatepass")
    elif "body_hex" in spec:
        raw = bytes.fromhex(spec["body_hex"])
    llm = [_llm_behaviour(item) for item in spec.get("llm", [])]
    return Case(
        id=f"{category}/{spec['id']}", category=category, method=spec.get("method", "POST"), path=spec["path"],
        json_body=spec.get("json"), has_json="json" in spec, raw=raw,
        content_type=spec.get("content_type", "application/json"), headers=dict(spec.get("headers") or {}),
        auth=spec.get("auth", "good"), signed=bool(spec.get("signed", False)), llm=llm,
        expect=dict(spec.get("expect") or {}), before=list(spec.get("before") or []),
    )


def _llm_behaviour(item: str | dict[str, Any]) -> str:
    """A fault-server script item: a behaviour name, ``{content: text}`` (the answer's content) or
    ``{reply: value}`` (the whole HTTP body: a string verbatim, anything else as JSON)."""
    if isinstance(item, str):
        return item
    if "reply" in item:
        reply = item["reply"]
        return "reply:" + (reply if isinstance(reply, str) else json.dumps(reply))
    return "content:" + str(item["content"])


def expand(value: Any, names: dict[str, Any]) -> Any:
    """``value`` with the macros described in the module docstring expanded (recursively)."""
    if isinstance(value, str):
        return _substitute(value, names)
    if isinstance(value, list):
        return [expand(item, names) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, arg), = value.items()
        if key == "$repeat":
            text, times = expand(arg, names)
            return str(text) * int(times)
        if key == "$enumerate":
            text, times = expand(arg, names)
            return "".join(str(text).replace("{i}", str(i)) for i in range(int(times)))
        if key == "$list":
            item, times = expand(arg, names)
            return [item] * int(times)
        if key == "$concat":
            return "".join(str(part) for part in expand(arg, names))
        if key == "$json":
            return json.dumps(expand(arg, names), ensure_ascii=False)
        if key == "$basic":
            user, password = expand(arg, names)
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if key == "$nest":
            spec = expand(arg, names)
            nested = spec.get("leaf")
            for _ in range(int(spec["depth"])):
                nested = {spec["key"]: nested} if "key" in spec else [nested]
            return nested
    return {expand(k, names): expand(v, names) for k, v in value.items()}


def _substitute(text: str, names: dict[str, Any]) -> Any:
    if text.startswith("${") and text.endswith("}") and text[2:-1] in names:
        return names[text[2:-1]]  # a whole-string reference keeps the value's type
    for key, value in names.items():
        token = "${" + key + "}"
        if token in text:
            text = text.replace(token, value if isinstance(value, str) else json.dumps(value))
    return text
