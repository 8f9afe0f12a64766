#!/usr/bin/env python
"""Adaptive concurrency vs fixed concurrency 1, 4 and 32, on a one-slot and on a wide LLM server.

The LLM is the fault server (``tests/support/fault_llm.py``) told to behave like

* a **one-slot server**: one request worked on at a time, ``--one-slot-ms`` each (default 2 s),
  the others queue inside the server (llama.cpp with one slot; a request whose client gave up
  is still worked on);
* a **wide server**: 64 slots, ``--wide-ms`` each (default 200 ms) (vLLM on a GPU).

For each server and each setting the backend (``prelabel serve``, a fresh process and Redis per
run) gets one ``/predict`` with the run's tasks, the way Label Studio sends a selection. Settings:
``adaptive`` (the default: PRELABEL_LLM_ADAPTIVE=true, PRELABEL_LLM_CONCURRENCY=32 as the upper
bound) and ``fixed N`` (PRELABEL_LLM_ADAPTIVE=false, PRELABEL_LLM_CONCURRENCY=N). Every run uses
the default attempt timeout (60 s) and retry policy.

Figures per run: tasks/s, tasks labelled, LLM timeouts, retries and retries denied by the budget
(from the backend's /metrics), requests the server got, the most requests queued inside the
server, the adaptive limit at the end. Slow fixed settings on the wide server get fewer tasks
(their throughput is steady: one request per slot per latency); the table says how many.

Targets (the issue's): adaptive within 10% of the best fixed setting's tasks/s on both servers,
zero timeouts on the one-slot server, retries <= 10% of LLM calls.

    ~/.cache/prelabel/venv-dev/bin/python benchmarks/load_control.py [--one-slot-tasks 40] \\
        [--wide-tasks 1500] [--one-slot-ms 2000] [--wide-ms 200] [--json-out PATH]

Exit status 0 when every target is met. The machine is shared: compare runs made when it is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.predict_throughput import DEFAULT_PRELABEL, Bench, Proc, free_port, log, make_tasks
from tests.support.backend_proc import metric_value

SETTINGS = (("adaptive", None), ("fixed 1", 1), ("fixed 4", 4), ("fixed 32", 32))


class LoadBench(Bench):
    def start_backend_with(self, name: str, env: dict[str, str]) -> None:
        port = free_port()
        data_dir = self.tmp / f"data-{name.replace(' ', '-')}-{len(self.data_dirs)}"
        data_dir.mkdir()
        self.data_dirs.append(data_dir)
        full = self._env()
        full.update({"OPENAI_BASE_URL": f"{self.fault_url}/v1", "PRELABEL_LLM_MODEL": "bench",
                     "PRELABEL_DATA_DIR": str(data_dir), "PRELABEL_LOG_LEVEL": "WARNING", **env})
        argv = [str(self.args.prelabel), "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = Proc(name, argv, full, data_dir, self.tmp / f"backend-{name.replace(' ', '-')}.log")
        self.procs.append(proc)
        self.backend = proc
        self.backend_url = f"http://127.0.0.1:{port}"
        self._wait_ready(proc, f"{self.backend_url}/health", self.args.startup_timeout)
        self.sampler.watch(proc.ps, data_dir)

    def metrics(self) -> str:
        return self.http.get(f"{self.backend_url}/metrics").text

    def one_run(self, server: str, setting: str, fixed: int | None, tasks: int) -> dict[str, Any]:
        env = {"PRELABEL_LLM_ADAPTIVE": "true", "PRELABEL_LLM_CONCURRENCY": "32"} if fixed is None else \
            {"PRELABEL_LLM_ADAPTIVE": "false", "PRELABEL_LLM_CONCURRENCY": str(fixed)}
        self.start_backend_with(f"{server}-{setting}", env)
        try:
            self.fault_control(script=[])
            self.http.post(f"{self.fault_url}/_reset")
            before = self.metrics()
            batch = make_tasks(f"{server}-{setting}", tasks, self.nonce)
            elapsed, info = self.predict(batch, f"{server} / {setting}")
            after = self.metrics()
            stats = self.fault_stats()
        finally:
            self.stop_backend()
            time.sleep(0.5)
        def delta(name: str, **labels: str) -> float:
            return metric_value(after, name, **labels) - metric_value(before, name, **labels)
        limit = metric_value(after, "prelabel_llm_concurrency_limit")
        check = info["check"]
        return {
            "server": server, "setting": setting, "tasks": tasks, "wall_s": round(elapsed, 2),
            "tasks_per_s": round(tasks / elapsed, 3), "ok": check["status"].get("ok", 0),
            "status": check["status"], "llm_requests": stats["requests"],
            "timeouts": int(delta("prelabel_llm_requests_total", outcome="timeout")),
            "retries": int(delta("prelabel_llm_retries_total")),
            "retries_denied": int(delta("prelabel_llm_retries_denied_total")),
            "server_queue_max": stats["waiting_max"], "server_in_flight_max": stats["in_flight_max"],
            "final_limit": int(limit) if fixed is None else fixed,
        }

    def run_all(self) -> list[dict[str, Any]]:
        a = self.args
        self.sampler.start()
        self.start_fault()
        rows: list[dict[str, Any]] = []
        servers = (("one-slot", 1, a.one_slot_ms, {s: a.one_slot_tasks for s, _ in SETTINGS}),
                   ("wide", 64, a.wide_ms, {"adaptive": a.wide_tasks, "fixed 32": a.wide_tasks,
                                            "fixed 4": a.wide_slow_tasks * 4, "fixed 1": a.wide_slow_tasks}))
        for server, slots, latency, counts in servers:
            self.fault_control(latency_ms=latency, slots=slots)
            for setting, fixed in SETTINGS:
                rows.append(self.one_run(server, setting, fixed, counts[setting]))
                log(json.dumps(rows[-1]))
        return rows


def verdicts(rows: list[dict[str, Any]]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for server in ("one-slot", "wide"):
        mine = [r for r in rows if r["server"] == server]
        adaptive = next(r for r in mine if r["setting"] == "adaptive")
        best = max((r for r in mine if r["setting"] != "adaptive"), key=lambda r: r["tasks_per_s"])
        out[f"{server}: adaptive >= 90% of best fixed ({best['setting']})"] = \
            adaptive["tasks_per_s"] >= 0.9 * best["tasks_per_s"]
        out[f"{server}: adaptive labelled every task"] = adaptive["ok"] == adaptive["tasks"]
        out[f"{server}: adaptive retries <= 10% of LLM calls"] = \
            adaptive["retries"] <= 0.1 * max(1, adaptive["llm_requests"])
    one_slot = next(r for r in rows if r["server"] == "one-slot" and r["setting"] == "adaptive")
    out["one-slot: adaptive has zero timeouts"] = one_slot["timeouts"] == 0
    return out


def print_table(rows: list[dict[str, Any]], v: dict[str, bool]) -> None:
    head = ("server", "setting", "tasks", "wall s", "tasks/s", "ok", "LLM calls", "timeouts", "retries",
            "denied", "queue in server (max)", "limit at end")
    keys = ("server", "setting", "tasks", "wall_s", "tasks_per_s", "ok", "llm_requests", "timeouts", "retries",
            "retries_denied", "server_queue_max", "final_limit")
    table = [head] + [tuple(str(r[k]) for k in keys) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("-" * (sum(widths) + 2 * len(widths)))
    print()
    for name, ok in v.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one-slot-tasks", type=int, default=40)
    parser.add_argument("--one-slot-ms", type=float, default=2000.0)
    parser.add_argument("--wide-tasks", type=int, default=1500, help="tasks for adaptive and fixed 32")
    parser.add_argument("--wide-slow-tasks", type=int, default=50, help="fixed 1 (x4 for fixed 4) on wide")
    parser.add_argument("--wide-ms", type=float, default=200.0)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--prelabel", type=Path, default=None)
    parser.add_argument("--startup-timeout", type=float, default=90.0)
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args(argv)
    args.prelabel = args.prelabel or (DEFAULT_PRELABEL if DEFAULT_PRELABEL.exists()
                                      else Path(sys.executable).with_name("prelabel"))
    args.fault_port = args.backend_port = 0
    args.latency_ms = args.one_slot_ms
    bench = LoadBench(args)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.time()
    try:
        rows = bench.run_all()
    except KeyboardInterrupt:
        return 130
    finally:
        bench.cleanup()
    v = verdicts(rows)
    print_table(rows, v)
    result = {"runs": rows, "verdicts": v, "all_pass": all(v.values()), "environment": {
        "python": platform.python_version(), "cpus": os.cpu_count(), "prelabel": str(args.prelabel),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}}
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
