"""The hostile-input corpus against the real ``prelabel serve`` process, with every outbound call watched.

The cases are data (``tests/hostile/cases/*.yaml``, loaded by ``tests.support.hostile``): auth
headers, bodies, project ids, ``/setup`` hostnames, labeling configs, guidelines, webhooks, LLM
answers and LLM faults. One parametrised test sends each case to one backend process, which is
configured with every kind of secret and is watched by four local listeners:

- ``ls``: the configured Label Studio (``LABEL_STUDIO_URL``); only ``LABEL_STUDIO_API_KEY`` may
  arrive there, only on ``/api/`` paths. It answers with a redirect to ``stranger``.
- ``listed``: the one other allowed origin (``PRELABEL_LABEL_STUDIO_HOSTS``); only the token a
  request brought for it may arrive there. It answers with a redirect to ``evil.example``.
- ``stranger``: a host nobody allowed. Any request to it fails the test.
- ``proxy``: ``HTTP_PROXY``/``HTTPS_PROXY`` of the backend, so a call to any other host (cloud
  metadata, ``evil.example``, ``localhost``...) lands here. Any request to it fails the test.

Besides each case's own expectations, every case must hold: ``/health`` answers within
``HEALTH_CASE_BUDGET_S`` while the case runs, the reply is at most ``MAX_REPLY_BYTES``, no 5xx,
no secret in the response,
a 4xx is a JSON ``{"error": <one line>, "reason"}`` counted in ``prelabel_bad_requests_total``,
no internal error, no label outside the config, nothing sent where it must not go. After the
corpus: ``/health`` stays under 100 ms while hostile patterns are checked, memory stays bounded
over 1,000 distinct configs, and the totals are asserted (and printed with ``-s``).
"""

from __future__ import annotations

import base64
import json
import statistics
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import pytest

from prelabel.label_config.schema import LS_CONTROL_TAGS
from tests.support.backend_proc import BackendClient, metric_value, start_backend
from tests.support.fault_llm import FaultServer, running_fault_server
from tests.support.hostile import Call, Case, Listener, load_cases

pytestmark = pytest.mark.timeout(300)

USER, PASSWORD = "corpus", "pw-hostile-PASS-2718"
LLM_KEY = "sk-hostile-LLMKEY-5150"
LS_KEY = "ls-configured-KEY-8086"
WEBHOOK_SECRET = "whsec-hostile-3141"
LISTED_TOKEN = "req-listed-TOKEN-4242"
STRANGER_TOKEN = "req-stranger-TOKEN-1337"
SECRETS = (PASSWORD, LLM_KEY, LS_KEY, WEBHOOK_SECRET, LISTED_TOKEN, STRANGER_TOKEN)
MAX_TASKS = 20
BAD = "prelabel_bad_requests_total"
REFUSED = "prelabel_label_studio_refused_total"
NEEDS_HUMAN = "prelabel_needs_human_total"
HEALTH_BUDGET_S = 0.1
# Every case: /health answers within this while the case runs (a probe thread in this process,
# which also runs the fault server, so looser than HEALTH_BUDGET_S), and the reply stays small.
HEALTH_CASE_BUDGET_S = 2.0
MAX_REPLY_BYTES = 1 << 20
MEMORY_CONFIGS = 1000

TOTALS: Counter[str] = Counter()
RAN: list[str] = []


def _values(ports: dict[str, int]) -> dict[str, Any]:
    return {
        **{name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
        **{f"{name}_port": str(port) for name, port in ports.items()},
        "user": USER, "password": PASSWORD, "webhook_secret": WEBHOOK_SECRET, "configured_key": LS_KEY,
        "listed_token": LISTED_TOKEN, "stranger_token": STRANGER_TOKEN,
        "basic_b64": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    }


CASE_IDS = [case.id for case in load_cases(_values({"ls": 1, "listed": 2, "stranger": 3}))]


@dataclass
class World:
    client: BackendClient
    fault: FaultServer
    listeners: dict[str, Listener]
    cases: dict[str, Case] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # listener -> calls already checked

    def new_calls(self, name: str) -> list[Call]:
        calls = self.listeners[name].snapshot()
        fresh = calls[self.seen.get(name, 0):]
        self.seen[name] = len(calls)
        return fresh


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_fault_server(latency_ms=0) as fault, Listener("stranger") as stranger, \
            Listener("proxy", status=502) as proxy, \
            Listener("ls", status=302, headers={"Location": f"{stranger.url}/steal?from=ls"}) as ls, \
            Listener("listed", status=307, headers={"Location": "http://evil.example/steal?from=listed"}) as listed:
        no_proxy = f"{fault.base_url.removesuffix('/v1')},{ls.url},{listed.url},{stranger.url}"
        proc = start_backend(tmp_path_factory.mktemp("hostile"), {
            "OPENAI_BASE_URL": fault.base_url, "OPENAI_API_KEY": LLM_KEY,
            "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": LS_KEY,
            "PRELABEL_LABEL_STUDIO_HOSTS": listed.url,
            "PRELABEL_BASIC_AUTH_USER": USER, "PRELABEL_BASIC_AUTH_PASSWORD": PASSWORD,
            "PRELABEL_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PRELABEL_MAX_REQUEST_BYTES": str(1 << 20), "PRELABEL_MAX_TASKS_PER_REQUEST": str(MAX_TASKS),
            "PRELABEL_MAX_TEXT_CHARS": "5000", "PRELABEL_LLM_TIMEOUT": "3", "PRELABEL_LLM_MAX_RETRIES": "1",
            "PRELABEL_LLM_RETRY_MAX_WAIT": "0.2", "PRELABEL_CONTEXT_CACHE_SIZE": "32",
            # Each fault case counts its own retries; the budget shared across calls (which would
            # let earlier cases' retries deny later ones) is tested in tests/test_load_control.py.
            "PRELABEL_LLM_RETRY_BUDGET_MIN": "1000",
            "PRELABEL_PROJECT_CACHE_SIZE": "64", "PRELABEL_LOG_JSON": "false",
            "PRELABEL_MAX_ANSWER_BYTES": str(1 << 20), "PRELABEL_MAX_CONFIG_BYTES": str(512 * 1024),
            # Every HTTP call to a host outside NO_PROXY goes to the proxy listener.
            "HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url, "ALL_PROXY": proxy.url,
            "http_proxy": proxy.url, "https_proxy": proxy.url, "all_proxy": proxy.url,
            "NO_PROXY": no_proxy, "no_proxy": no_proxy,
        }, name="backend-hostile", auth=(USER, PASSWORD))
        listeners = {"ls": ls, "listed": listed, "stranger": stranger, "proxy": proxy}
        ports = {name: listeners[name].port for name in ("ls", "listed", "stranger")}
        cases = {case.id: case for case in load_cases(_values(ports))}
        try:
            yield World(BackendClient(proc, auth=(USER, PASSWORD)), fault, listeners, cases)
        finally:
            proc.stop()


# --- the corpus -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_hostile_case(world: World, case_id: str) -> None:
    case = world.cases[case_id]
    expect = case.expect
    world.fault.reset()
    world.fault.set_latency(0)
    if case.llm:
        world.fault.set_script(case.llm)
    _send_before(world, case)
    before = world.client.metrics_text()
    started = time.perf_counter()
    with HealthProbe(world.client.url) as probe:
        response = _send(world, case)
    elapsed = time.perf_counter() - started
    RAN.append(case_id)
    TOTALS["requests"] += 1
    TOTALS["health_worst_during_case_ms"] = max(TOTALS["health_worst_during_case_ms"], round(probe.worst * 1000))
    TOTALS["largest_reply_bytes"] = max(TOTALS["largest_reply_bytes"], len(response.content))
    assert probe.worst < expect.get("health_s", HEALTH_CASE_BUDGET_S), \
        f"/health took {probe.worst * 1000:.0f} ms during the case"
    assert len(response.content) <= expect.get("max_reply_bytes", MAX_REPLY_BYTES), \
        f"a reply of {len(response.content)} bytes"
    TOTALS["5xx"] += response.status_code >= 500
    leaked = _secrets_in(response.text + json.dumps(dict(response.headers)))
    TOTALS["secrets_in_responses"] += len(leaked)

    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert not leaked, f"secrets in the response: {leaked}"
    assert response.status_code == expect["status"], (response.status_code, response.text[:500])
    after = _settled_metrics(world, case)
    _check_answer(case, response, before, after)
    _check_metrics(case, before, after)
    if "max_seconds" in expect:
        assert elapsed <= expect["max_seconds"], f"took {elapsed:.1f} s"
    if expect.get("llm_requests") is not None:
        assert world.fault.stats()["requests"] == expect["llm_requests"], world.fault.stats()
    _check_outbound(world, case)
    if expect.get("not_in_log"):
        log = world.client.backend.log_text()
        assert not [text for text in expect["not_in_log"] if text in log], "request input logged verbatim"


def _send(world: World, case: Case) -> httpx.Response:
    headers = dict(case.headers)
    if case.auth == "good":
        headers.setdefault("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    elif case.auth != "none":
        headers["Authorization"] = case.auth
    if case.signed:
        headers.setdefault("X-Prelabel-Secret", WEBHOOK_SECRET)
    body = case.body()
    if body is not None and case.content_type is not None:
        headers["Content-Type"] = case.content_type
    # A list value sends the header once per item (duplicated headers).
    pairs = [(name, item) for name, value in headers.items()
             for item in (value if isinstance(value, list) else [value])]
    return httpx.request(case.method, world.client.url + case.path, content=body, headers=pairs, timeout=120)


def _send_before(world: World, case: Case) -> None:
    """The case's preceding requests, then a pause until the listeners are quiet (their background
    Label Studio calls belong to the case's ``calls``)."""
    for step in case.before:
        response = httpx.request(step.get("method", "POST"), world.client.url + step["path"], json=step.get("json"),
                                 auth=(USER, PASSWORD), timeout=60)
        assert response.status_code == step.get("status", 200), (step["path"], response.text[:300])
    if case.before:
        heard = -1
        while heard != (heard := sum(len(listener.snapshot()) for listener in world.listeners.values())):
            time.sleep(0.3)


class HealthProbe:
    """Probes ``/health`` every 20 ms on a thread while a case runs: the worst latency it saw."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, auth=(USER, PASSWORD), timeout=60) as http:
            while not self._done.is_set():
                started = time.perf_counter()
                http.get("/health")
                self.worst = max(self.worst, time.perf_counter() - started)
                self._done.wait(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=120)


def _settled_metrics(world: World, case: Case) -> str:
    """Metrics once the case's background work (Label Studio calls after /setup) is done."""
    wanted = case.expect.get("calls")
    if case.path.startswith("/setup") or wanted:
        deadline = time.monotonic() + 5
        while wanted and time.monotonic() < deadline and any(
                len(world.listeners[name].snapshot()) - world.seen.get(name, 0) < n for name, n in wanted.items()):
            time.sleep(0.05)
        time.sleep(0.3)  # anything late would show up now
    return world.client.metrics_text()


def _check_answer(case: Case, response: httpx.Response, before: str, after: str) -> None:
    expect = case.expect
    for text in expect.get("absent", []):
        assert text not in response.text
    if case.method == "HEAD" or not response.headers.get("content-type", "").startswith("application/json"):
        assert response.status_code < 400, "every error is JSON"
        return
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
        assert "\n" not in body["error"] and len(body["error"]) <= 500, "the reason must be one short line"
        assert isinstance(body.get("reason"), str), body
        if "reason" in expect:
            assert body["reason"] == expect["reason"], body
        if "error_contains" in expect:
            assert expect["error_contains"] in body["error"], body
        if expect.get("counted", True):
            endpoint = expect.get("endpoint") or _endpoint(case.path)
            delta = metric_value(after, BAD, endpoint=endpoint, reason=body["reason"]) \
                - metric_value(before, BAD, endpoint=endpoint, reason=body["reason"])
            assert delta == 1, f"rejection counted {delta} times under ({endpoint}, {body['reason']})"
        return
    for key, value in (expect.get("body") or {}).items():
        assert body.get(key) == value, body
    if case.path.startswith("/predict") and "results" in body:
        _check_predictions(case, body["results"])


def _check_predictions(case: Case, results: list[dict[str, Any]]) -> None:
    expect = case.expect
    tasks = case.json_body["tasks"]
    assert len(results) == len(tasks), "one prediction per task, in order"
    statuses = [r["meta"]["status"] for r in results]
    if expect.get("results") is not None:
        assert statuses == expect["results"], [(r["meta"]["status"], r["meta"]["errors"]) for r in results]
    if expect.get("results_any") is not None:
        assert set(statuses) <= set(expect["results_any"]) and len(statuses) == expect["results_count"]
    allowed = _labels(case.json_body.get("label_config") or expect.get("config") or "")
    outside = [(region["from_name"], value) for r in results for region in r["result"]
               for value in _region_labels(region) if value not in allowed.get(region["from_name"], set())]
    TOTALS["labels_outside_config"] += len(outside)
    assert not outside, f"labels outside the config: {outside}"


def _check_metrics(case: Case, before: str, after: str) -> None:
    expect = case.expect

    def delta(sample: str, **labels: str) -> float:
        return metric_value(after, sample, **labels) - metric_value(before, sample, **labels)

    assert delta(NEEDS_HUMAN, reason="internal_error") == 0, "an internal error: a bug, not a rejection"
    for reason, count in (expect.get("needs_human") or {}).items():
        assert delta(NEEDS_HUMAN, reason=reason) == count, reason
    for tag, count in (expect.get("unsupported") or {}).items():
        assert delta("prelabel_unsupported_controls_total", tag=tag) == count, tag
    if "refused" in expect:
        assert delta(REFUSED, reason=expect["refused"]) >= 1, "the refused hostname was not counted"
    else:
        assert delta(REFUSED) == 0, "a Label Studio call was refused that should not have been"


def _check_outbound(world: World, case: Case) -> None:
    """Nothing to the stranger or through the proxy; each token only to its own host, our paths only."""
    stranger, proxy = world.new_calls("stranger"), world.new_calls("proxy")
    ls, listed = world.new_calls("ls"), world.new_calls("listed")
    bad = [("stranger", c) for c in stranger] + [("proxy", c) for c in proxy]
    bad += [("ls", c) for c in ls if c.headers.get("authorization") != f"Token {LS_KEY}"
            or not c.target.startswith("/api/")]
    bad += [("listed", c) for c in listed if c.headers.get("authorization") != f"Token {LISTED_TOKEN}"
            or not c.target.startswith("/api/")]
    TOTALS["outbound_unlisted"] += len(bad)
    TOTALS["outbound_allowed"] += len(ls) + len(listed) - sum(1 for where, _ in bad if where in ("ls", "listed"))
    assert not bad, f"outbound calls that must not happen: {bad}"
    wanted = case.expect.get("calls")
    if wanted:
        assert {"ls": len(ls), "listed": len(listed)} == {"ls": wanted.get("ls", 0), "listed": wanted.get("listed", 0)}


def _endpoint(path: str) -> str:
    first = path.split("?", 1)[0].strip("/").split("/", 1)[0]
    return first if first in ("predict", "setup", "webhook") else "other"


def _labels(config: str) -> dict[str, set[str]]:
    """Control name -> the label values its config allows (Choices/Labels)."""
    if not config.strip():
        return {}
    root = ET.fromstring(config.lstrip("\ufeff"))
    allowed: dict[str, set[str]] = {}
    for element in root.iter():
        if element.tag.split("}")[-1] in ("Choices", "Labels") and element.get("name"):
            allowed[element.get("name", "")] = {child.get("value", "") for child in element}
    return allowed


def _region_labels(region: dict[str, Any]) -> list[str]:
    value = region.get("value") or {}
    return list(value.get("choices") or []) + list(value.get("labels") or [])


def _secrets_in(text: str) -> list[str]:
    return [secret[:8] + "..." for secret in SECRETS if secret in text]


# --- /health while patterns are checked -------------------------------------------------------------
# Probes /health from a process of its own (this one also runs the fault LLM server, whose work
# would delay the probes here): one probe every 10 ms until stdin closes, then the latencies.
PROBE = """
import json, sys, threading, time, httpx
url, user, password = sys.argv[1:4]
done, latencies = threading.Event(), []
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
with httpx.Client(base_url=url, auth=(user, password), timeout=30) as http:
    http.get("/health")
    print("ready", flush=True)
    while not done.is_set():
        started = time.perf_counter()
        assert http.get("/health").status_code == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.01)
print(json.dumps(latencies), flush=True)
"""


def test_health_answers_fast_while_hostile_patterns_are_checked(world: World) -> None:
    """``(a+)+$`` against 40 "a"s and a "!": Python's re would take ~2**40 steps per check and
    stall the event loop; the backend checks it in linear time, so /health keeps answering."""
    case = world.cases["guidelines/pattern-catastrophic-runs-in-linear-time"]
    rounds = 10
    world.fault.reset()
    world.fault.set_script([case.llm[0]] * (2 * rounds), latency_ms=50)  # first answer + corrective retry
    before = world.client.metrics_text()
    probe = subprocess.Popen([sys.executable, "-c", PROBE, world.client.url, USER, PASSWORD],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout is not None and probe.stdout.readline().strip() == "ready"
        for i in range(rounds):  # one task at a time: what the loop does between probes is the check
            tasks = [{"data": {"text": f"health probe {i} {time.time()}"}}]
            response = world.client.post("/predict", json={**case.json_body, "tasks": tasks})
            assert response.status_code == 200, response.text[:500]
            assert response.json()["results"][0]["meta"]["status"] == "needs_human"
        out, _ = probe.communicate("", timeout=60)
    finally:
        if probe.poll() is None:
            probe.kill()
    world.fault.set_latency(0)
    latencies = json.loads(out.strip().splitlines()[-1])
    checked = metric_value(world.client.metrics_text(), NEEDS_HUMAN, reason="constraint") \
        - metric_value(before, NEEDS_HUMAN, reason="constraint")
    assert checked == rounds, "every answer went through the hostile pattern"
    TOTALS["health_probes"] = len(latencies)
    TOTALS["health_max_ms"] = round(max(latencies) * 1000, 1)
    TOTALS["health_median_ms"] = round(statistics.median(latencies) * 1000, 1)
    assert len(latencies) >= 10, "the probes did not overlap the hostile requests"
    assert max(latencies) < HEALTH_BUDGET_S, f"/health took {max(latencies) * 1000:.0f} ms"


# --- memory over many distinct configs ----------------------------------------------------------------
def _distinct_config(i: int) -> str:
    labels = "".join(f'<Choice value="config {i} label {j}" hint="hint {j} of config {i}"/>' for j in range(60))
    return f'<View><Text name="text" value="$text"/><Choices name="c{i}" toName="text">{labels}</Choices></View>'


def test_memory_stays_bounded_over_1000_distinct_configs(world: World) -> None:
    """Each distinct config is built (~165 KB once parsed, for ~4 KB of XML) and kept in an LRU of
    ``PRELABEL_CONTEXT_CACHE_SIZE`` (32 here): after 1,000 of them, for as many projects, the
    backend holds what it held after 200. Unbounded, the last 800 would add ~130 MB."""
    process = psutil.Process(world.client.backend.process.pid)
    start = peak = process.memory_info().rss
    rss_after_warmup = 0
    with httpx.Client(base_url=world.client.url, auth=(USER, PASSWORD), timeout=60) as http:
        for i in range(MEMORY_CONFIGS):
            body = {"tasks": [], "project": str(10_000 + i), "label_config": _distinct_config(i)}
            response = http.post("/predict", json=body)
            assert response.status_code == 200, response.text[:300]
            peak = max(peak, process.memory_info().rss)
            if i == 199:
                rss_after_warmup = process.memory_info().rss
    end = process.memory_info().rss
    growth_mb = (end - rss_after_warmup) / 2**20
    TOTALS["memory_configs"] = MEMORY_CONFIGS
    TOTALS["memory_start_mb"] = round(start / 2**20)
    TOTALS["memory_peak_mb"] = round(peak / 2**20)
    TOTALS["memory_growth_last_800_mb"] = round(growth_mb, 1)
    assert growth_mb < 25, f"memory grew {growth_mb:.0f} MB over the last 800 distinct configs"
    assert (peak - start) / 2**20 < 100, f"peak {peak / 2**20:.0f} MB, {(peak - start) / 2**20:.0f} MB over start"


# --- totals -------------------------------------------------------------------------------------------
def test_corpus_totals(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last (file order): the issue's totals, over everything this module sent."""
    time.sleep(0.5)
    _check_outbound(world, Case("totals", "totals", "GET", "/"))
    metrics = world.client.metrics_text()
    log = world.client.backend.log_text()
    TOTALS["secrets_in_metrics"] = len(_secrets_in(metrics))
    TOTALS["secrets_in_log"] = len(_secrets_in(log))
    forged = [line for line in log.splitlines() if line.startswith(("2026-01-01", "INFO", "X-Injected"))]
    tags = {s.labels["tag"] for family in _families(metrics) for s in family.samples
            if s.name == "prelabel_unsupported_controls_total"}
    kinds = Counter(case_id.split("/", 1)[0] for case_id in RAN)
    summary = {"kinds": len(RAN), "by_category": dict(sorted(kinds.items())), **TOTALS}
    with capsys.disabled():
        print("\nhostile corpus totals: " + json.dumps(summary))
    assert TOTALS["5xx"] == 0
    assert TOTALS["outbound_unlisted"] == 0
    assert TOTALS["secrets_in_responses"] + TOTALS["secrets_in_metrics"] + TOTALS["secrets_in_log"] == 0
    assert TOTALS["labels_outside_config"] == 0
    assert not forged, f"log lines forged by request input: {forged[:3]}"
    assert tags <= _LS_TAGS | {"other"}, f"metric label values outside the closed set: {tags - _LS_TAGS}"
    if len(RAN) == len(CASE_IDS):
        assert len(RAN) >= 213, "the corpus must cover at least the 213 kinds of the probe"


def _families(metrics: str):  # prometheus_client's parser types
    from prometheus_client.parser import text_string_to_metric_families

    return text_string_to_metric_families(metrics)


_LS_TAGS = set(LS_CONTROL_TAGS.values())
