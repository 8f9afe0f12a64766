"""How fast ``POST /webhook`` is acknowledged (the work happens later, in the worker).

    ~/.cache/prelabel/venv-dev/bin/python benchmarks/webhook_ack.py [--events 2000]

Starts a real ``prelabel serve`` on embedded Redis with a webhook secret, then sends
Label Studio-shaped events over keep-alive connections the way Label Studio does (one at a time
per request that caused them) and from 8 senders at once; prints p50 / p99 / max latency of the
acknowledgement, checks every event was queued exactly once (then re-sends them all: every
answer must be "duplicate"). Target: p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.backend_proc import start_backend

SECRET = "bench-secret"


def event(i: int) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": 1, "title": "bench"},
            "annotation": {"id": i, "task": i, "result": [{"from_name": "intent", "to_name": "text",
                                                              "type": "choices", "value": {"choices": ["a"]}}],
                           "updated_at": "2026-11-24T10:00:00Z", "was_cancelled": False},
            "task": {"id": i, "data": {"text": f"query number {i}"}}}


def send(client: httpx.Client, body: dict) -> tuple[float, str]:
    started = time.perf_counter()
    response = client.post("/webhook", json=body, headers={"X-Prelabel-Secret": SECRET})
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response.json()["status"]


def report(name: str, samples: list[tuple[float, str]], expect: str) -> float:
    latencies = sorted(ms for ms, _ in samples)
    statuses = {s for _, s in samples}
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(f"{name:28s} n={len(latencies):5d}  p50 {statistics.median(latencies):6.2f} ms  p99 {p99:6.2f} ms  "
          f"max {latencies[-1]:6.2f} ms  statuses {sorted(statuses)}  "
          f"{'PASS' if p99 < 50 and statuses == {expect} else 'FAIL'}")
    return p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prelabel-webhook-bench-"))
    backend = start_backend(work, {"PRELABEL_WEBHOOK_SECRET": SECRET, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    try:
        with httpx.Client(base_url=backend.url, timeout=10) as client:
            for i in range(50):  # warm-up, not measured
                send(client, event(10_000_000 + i))
            sequential = [send(client, event(i)) for i in range(args.events)]
        half = args.events // 2

        def burst(offset: int) -> list[tuple[float, str]]:
            with httpx.Client(base_url=backend.url, timeout=10) as client:
                return [send(client, event(offset + i)) for i in range(half // 8)]

        with ThreadPoolExecutor(8) as pool:
            concurrent = [s for part in pool.map(burst, [args.events + k * half for k in range(8)]) for s in part]
        with httpx.Client(base_url=backend.url, timeout=10) as client:
            replays = [send(client, event(i)) for i in range(args.events)]
        report("sequential (queued)", sequential, "queued")
        report("8 senders at once (queued)", concurrent, "queued")
        report("same events again", replays, "duplicate")
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
