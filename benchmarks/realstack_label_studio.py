#!/usr/bin/env python
"""Retrieve Predictions through a real Label Studio against the local llama.cpp model.

Starts, in a temp dir, everything ``prelabel up`` runs (Label Studio 1.23.2, llama-cpp-python
with SmolLM2-135M at n_ctx 2048 and one slot, a Redis, the backend and one worker), then for each
case creates a project, imports the tasks, runs the Data Manager's *Retrieve Predictions* once
(the real ``retrieve_tasks_predictions`` action) and waits until every task has a prediction.

Cases:
* ``search_intent``: ``--tasks`` (200) web queries (the template's samples, numbered), 6 labels;
* ``banking77``: ``--banking-tasks`` (30) BANKING77 test queries, 77 labels (shortlisted);
* ``slow_model``: ``--slow-tasks`` (1000) tasks against a model far too slow for the deadline:
  the fault server with one slot and ``--slow-ms`` (100) per request (100 s of model time), with
  the backend's deadline at ``PRELABEL_PREDICT_TIMEOUT=30`` (a second backend and worker, own
  Redis database). The fault server stands in for the model only here, to make it slow on purpose.

Reported per case: seconds until Retrieve Predictions returned and how many predictions Label
Studio had stored by then, seconds until every task had one (the rest written by the worker),
predictions per task (must be exactly 1), statuses (ok / needs_human with the reasons the
backend counted), context-length errors sent to the server and structured-output step-downs
(must be 0; from the backend's /metrics), LLM calls.

    ~/.cache/prelabel/venv-dev/bin/python benchmarks/realstack_label_studio.py [--tasks 200] \\
        [--banking-tasks 30] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prelabel.stack.label_studio import start_label_studio
from prelabel.stack.llm_server import start_llm_server
from prelabel.stack.processes import ManagedProcess, child_env
from tests.servers import dev_bin
from tests.servers.backend import BackendFactory
from tests.servers.redis_server import start_redis
from tests.support.backend_proc import metric_value
from tests.support.fault_llm import running_fault_server

REPO = Path(__file__).resolve().parents[1]
BANKING = REPO / "benchmarks" / "datasets" / "banking77"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def search_intent_tasks(n: int) -> tuple[str, list[str]]:
    config = (REPO / "label_config" / "templates" / "search_intent.xml").read_text()
    samples = [json.loads(line)["text"] for line in
               (REPO / "label_config" / "templates" / "search_intent.sample.jsonl").read_text().splitlines() if line]
    return config, [f"{samples[i % len(samples)]} ({i})" for i in range(n)]


def banking_tasks(n: int) -> tuple[str, list[str]]:
    with (BANKING / "test.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    step = max(1, len(texts) // n)
    return (BANKING / "config.xml").read_text(), texts[::step][:n]


def run_case(ls, backend, name: str, config: str, texts: list[str], timeout: float) -> dict[str, Any]:
    client = ls.sdk(timeout=600)  # Retrieve Predictions is synchronous: up to Label Studio's 100 s and more
    before = httpx.get(backend.url + "/metrics", timeout=10).text
    project = client.projects.create(title=f"realstack {name}", label_config=config)
    client.projects.import_tasks(id=project.id, request=[{"text": t} for t in texts])
    client.ml.create(project=project.id, url=backend.url, title="prelabel", is_interactive=False)
    started = time.perf_counter()
    client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                          selected_items={"all": True, "excluded": []})
    returned = time.perf_counter() - started
    in_time = len(list(client.predictions.list(project=project.id)))
    log(f"{name}: Retrieve Predictions returned after {returned:.1f}s with {in_time}/{len(texts)} stored")
    deadline = time.monotonic() + timeout
    while True:
        predictions = [p.model_dump() for p in client.predictions.list(project=project.id)]
        if len({p["task"] for p in predictions}) >= len(texts) or time.monotonic() > deadline:
            break
        time.sleep(2)
    done = time.perf_counter() - started
    time.sleep(3)  # a duplicate arriving late would show now
    predictions = [p.model_dump() for p in client.predictions.list(project=project.id)]
    after = httpx.get(backend.url + "/metrics", timeout=10).text

    def delta(metric: str, **labels: str) -> int:
        return int(metric_value(after, metric, **labels) - metric_value(before, metric, **labels))

    per_task: dict[int, int] = {}
    statuses: dict[str, int] = {}
    for p in predictions:
        per_task[p["task"]] = per_task.get(p["task"], 0) + 1
        status = p["model_version"].partition("#")[2] or "ok"
        statuses[status] = statuses.get(status, 0) + 1
    reasons = {}
    for line in after.splitlines():
        if line.startswith("prelabel_needs_human_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            reasons[reason] = delta("prelabel_needs_human_total", reason=reason)
    return {
        "case": name, "tasks": len(texts), "retrieve_returned_s": round(returned, 1),
        "stored_when_returned": in_time, "all_predicted_s": round(done, 1),
        "tasks_with_prediction": len(per_task), "max_predictions_per_task": max(per_task.values(), default=0),
        "lost": len(texts) - len(per_task), "statuses": statuses,
        "needs_human_reasons_backend": {k: v for k, v in reasons.items() if v},
        "handed_to_worker": delta("prelabel_predict_handoff_total"),
        "context_errors_sent": delta("prelabel_llm_requests_total", outcome="context_too_long"),
        "bad_requests": delta("prelabel_llm_requests_total", outcome="bad_request"),
        "shape_stepdowns": delta("prelabel_llm_shape_stepdowns_total"),
        "backend_llm_calls": delta("prelabel_llm_requests_total"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--banking-tasks", type=int, default=30)
    parser.add_argument("--slow-tasks", type=int, default=1000, help="0 skips the slow-model case")
    parser.add_argument("--slow-ms", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for all predictions per case")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="prelabel-realstack-"))
    procs: list[Any] = []
    started = time.time()
    try:
        log("starting Label Studio, llama.cpp (n_ctx 2048), Redis")
        ls = start_label_studio(tmp / "ls")
        procs.append(ls.process)
        llm = start_llm_server(tmp / "llm", n_ctx=2048)
        procs.append(llm.process)
        redis = start_redis(tmp / "redis")
        procs.append(redis.process)
        factory = BackendFactory(workdir=tmp / "backends", llm=lambda: llm, redis_url=lambda: redis.url)
        backend = factory.start(label_studio=ls, name="backend", env={"PRELABEL_LOG_LEVEL": "INFO"})
        worker = ManagedProcess("worker", [dev_bin("prelabel"), "worker"], log_path=tmp / "worker.log",
                                env=child_env(None, backend.env), cwd=backend.workdir).start()
        procs += [backend.process, worker]
        rows = []
        if args.slow_tasks:
            with running_fault_server(latency_ms=args.slow_ms, slots=1, model="slow") as fault:
                slow = factory.start(label_studio=ls, name="backend-slow", env={
                    "OPENAI_BASE_URL": fault.base_url, "PRELABEL_LLM_MODEL": "slow", "PRELABEL_LOG_LEVEL": "INFO",
                    "PRELABEL_PREDICT_TIMEOUT": "30", "REDIS_URL": redis.url.rsplit("/", 1)[0] + "/1"})
                slow_worker = ManagedProcess("worker-slow", [dev_bin("prelabel"), "worker"],
                                             log_path=tmp / "worker-slow.log", env=child_env(None, slow.env),
                                             cwd=slow.workdir).start()
                procs += [slow.process, slow_worker]
                config, _ = search_intent_tasks(0)
                rows.append(run_case(ls, slow, "slow_model", config,
                                     [f"slow model task {i}" for i in range(args.slow_tasks)], args.timeout))
                rows[-1]["model_requests"] = fault.stats()["requests"]
                log(json.dumps(rows[-1]))
                slow_worker.stop()
                slow.process.stop()
        for name, (config, texts) in (("search_intent", search_intent_tasks(args.tasks)),
                                      ("banking77", banking_tasks(args.banking_tasks))):
            if texts:
                rows.append(run_case(ls, backend, name, config, texts, args.timeout))
                log(json.dumps(rows[-1]))
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    checks = {f"{r['case']}: nothing lost, nothing duplicated": r["lost"] == 0 and r["max_predictions_per_task"] == 1
              for r in rows}
    checks.update({f"{r['case']}: no context-length error sent, no step-down":
                   r["context_errors_sent"] == 0 and r["shape_stepdowns"] == 0 for r in rows})
    checks.update({f"{r['case']}: every task valid or needs_human (no error)":
                   set(r["statuses"]) <= {"ok", "needs_human"} for r in rows})
    for r in rows:
        print(f"{r['case']}: {r['tasks']} tasks; Retrieve Predictions returned in {r['retrieve_returned_s']}s with "
              f"{r['stored_when_returned']} stored; all predicted after {r['all_predicted_s']}s; {r['statuses']}; "
              f"needs_human reasons {r['needs_human_reasons_backend']}; handed to the worker {r['handed_to_worker']}; "
              f"context errors sent {r['context_errors_sent']}; step-downs {r['shape_stepdowns']}")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    out = {"cases": rows, "checks": checks, "all_pass": all(checks.values()),
           "environment": {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                                          time.localtime(started)),
                           "duration_s": round(time.time() - started, 1)}}
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return 0 if out["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
