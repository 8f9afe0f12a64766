"""Bounded work per request (issue 27): what the hostile probe's worst request costs, and memory over many
configs and projects, against a real ``prelabel serve`` and the fault model server.

1. The probe's explosion: a task text of ``"a " * 9980 + "z"``, an NER config, and a 20-span answer
   whose spans all consist of ``a``s (each occurs thousands of times). Reported: the reply's size, its
   time, the task's status, and the worst ``/health`` latency while it ran (probed every 10 ms from
   a thread of this process).
2. Memory: the backend's RSS over 1,000 ``/predict`` calls with distinct configs (as many projects)
   and then 1,000 ``/setup`` calls with distinct configs and inline guidelines (as many projects).

Run from the repository root (the dev venv's Python)::

    python benchmarks/bounded_work.py --out benchmarks/results/bounded_work.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.backend_proc import start_backend
from tests.support.fault_llm import running_fault_server

NER = ('<View><Text name="text" value="$text"/><Labels name="ent" toName="text">'
       '<Label value="PER"/><Label value="ORG"/></Labels></View>')
SPANS = [{"text": " ".join(["a"] * n), "label": label} for n in range(1, 11) for label in ("PER", "ORG")]


def distinct_config(i: int) -> str:
    labels = "".join(f'<Choice value="config {i} label {j}" hint="hint {j} of config {i}"/>' for j in range(60))
    return f'<View><Text name="text" value="$text"/><Choices name="c{i}" toName="text">{labels}</Choices></View>'


class HealthProbe(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.worst, self.done = url, 0.0, threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as http:
            while not self.done.is_set():
                started = time.perf_counter()
                http.get("/health")
                self.worst = max(self.worst, time.perf_counter() - started)
                self.done.wait(0.01)


def explosion(url: str, fault: Any) -> dict[str, Any]:
    answer = json.dumps({"ent": SPANS})
    fault.reset()
    fault.set_script([f"content:{answer}"] * 2)
    probe = HealthProbe(url)
    probe.start()
    started = time.perf_counter()
    response = httpx.post(f"{url}/predict", timeout=300, json={
        "tasks": [{"data": {"text": "a " * 9980 + "z"}}], "label_config": NER})
    took = time.perf_counter() - started
    probe.done.set()
    probe.join()
    result = response.json()["results"][0]
    return {"http_status": response.status_code, "reply_bytes": len(response.content), "seconds": round(took, 2),
            "task_status": result["meta"]["status"], "regions": len(result["result"]),
            "errors": result["meta"]["errors"], "health_worst_ms": round(probe.worst * 1000, 1)}


def memory(url: str, pid: int, count: int) -> dict[str, Any]:
    process = psutil.Process(pid)
    mb = lambda: round(process.memory_info().rss / 2**20, 1)  # noqa: E731
    start, peak = mb(), mb()
    with httpx.Client(base_url=url, timeout=120) as http:
        for i in range(count):
            assert http.post("/predict", json={"tasks": [], "project": str(10_000 + i),
                                               "label_config": distinct_config(i)}).status_code == 200
            peak = max(peak, mb())
        after_configs = mb()
        for i in range(count):
            body = {"project": str(50_000 + i), "schema": distinct_config(count + i),
                    "extra_params": {"guideline": {"name": f"g{i}", "rules": [f"rule {i}: " + "x " * 2000]}}}
            response = http.post("/setup", json=body)
            assert response.status_code == 200, response.text[:300]
            peak = max(peak, mb())
    return {"configs": count, "projects": count, "rss_start_mb": start, "rss_after_configs_mb": after_configs,
            "rss_after_projects_mb": mb(), "rss_peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_fault_server(latency_ms=0) as fault:
        proc = start_backend(Path(tmp), {"OPENAI_BASE_URL": fault.base_url, "PRELABEL_LOG_LEVEL": "WARNING"},
                             name="bench")
        try:
            rows = {"explosion": explosion(proc.url, fault),
                    "memory": memory(proc.url, proc.process.pid, args.count)}
        finally:
            proc.stop()
    rows["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system()}
    text = json.dumps(rows, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
