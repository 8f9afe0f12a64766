"""The harness itself: process groups are killed whole, start failures show the log tail, and the
backend factory wires env / port / health (checked with a trivial stand-in HTTP server: the
real ``prelabel serve`` is covered in test_harness_smoke.py). Fast; starts no real servers."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest

from prelabel.stack.ports import free_port, port_open
from prelabel.stack.processes import ManagedProcess, StartupError, child_env, running
from tests.servers.backend import BackendFactory

STANDIN_SERVER = textwrap.dedent("""
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    host, port = sys.argv[sys.argv.index("--host") + 1], int(sys.argv[sys.argv.index("--port") + 1])
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "UP", "env": dict(os.environ), "argv": sys.argv,
                               "cwd": os.getcwd()} if self.path == "/env" else {"status": "UP"}).encode()
            self.send_response(200); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    print("stand-in serving", host, port, flush=True)
    HTTPServer((host, port), H).serve_forever()
""")


def _wait_gone(pids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [
            p
            for p in pids
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def test_stop_kills_the_whole_process_group(tmp_path):
    proc = ManagedProcess(
        "tree", ["sh", "-c", "sleep 300 & sleep 300 & wait"], log_path=tmp_path / "tree.log"
    ).start()
    deadline = time.monotonic() + 10
    while len(psutil.Process(proc.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    kids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert len(kids) == 2
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)  # own process group
    proc.stop(grace=5)
    assert _wait_gone([proc.pid, *kids]) == []
    assert proc not in running()


def test_stop_escalates_to_sigkill(tmp_path):
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('rea' + 'dy', flush=True); time.sleep(300)"
    )
    proc = ManagedProcess(
        "stubborn", [sys.executable, "-c", script], log_path=tmp_path / "stubborn.log"
    ).start()
    proc.wait_until(lambda: "ready" in proc.log_tail(), timeout=30, what="ready")
    t0 = time.monotonic()
    proc.stop(grace=1)
    assert time.monotonic() - t0 < 8
    assert proc.returncode() == -signal.SIGKILL


def test_startup_failure_shows_the_log_tail(tmp_path):
    proc = ManagedProcess(
        "crasher",
        [sys.executable, "-c", "print('some clue', 6 * 7); raise SystemExit(3)"],
        log_path=tmp_path / "crash.log",
    ).start()
    with pytest.raises(StartupError) as exc:
        proc.wait_until(lambda: False, timeout=30, what="ready")
    msg = str(exc.value)
    assert "exited with code 3" in msg and "some clue 42" in msg and str(tmp_path) in msg


def test_startup_timeout_shows_the_log_tail(tmp_path):
    proc = ManagedProcess(
        "sleeper",
        [
            sys.executable,
            "-c",
            "print('waiting' + ' forever', flush=True); import time; time.sleep(300)",
        ],
        log_path=tmp_path / "sleep.log",
    ).start()
    try:
        with pytest.raises(StartupError, match="(?s)not ready after 1 s.*waiting forever"):
            proc.wait_until(lambda: "never" in proc.log_tail(), timeout=1, what="ready")
    finally:
        proc.stop()


def test_child_env_removes_venv_leaks_and_unsets(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("DROP_ME", "1")
    env = child_env("/opt/venv", {"DROP_ME": None, "ADDED": 5})
    assert "PYTHONPATH" not in env and "DROP_ME" not in env
    assert env["ADDED"] == "5" and env["PATH"].startswith("/opt/venv/bin")


def test_free_ports_are_distinct_and_free():
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    assert not any(port_open("127.0.0.1", p) for p in list(ports)[:3])


def test_backend_factory_with_a_stand_in_server(tmp_path, monkeypatch):
    monkeypatch.setenv("PRELABEL_SOMETHING_FROM_MY_SHELL", "leak")
    script = tmp_path / "standin.py"
    script.write_text(STANDIN_SERVER)
    factory = BackendFactory(
        workdir=tmp_path / "backends",
        command=[sys.executable, str(script), "serve", "--host", "{host}", "--port", "{port}"],
        llm=lambda: pytest.fail("LLM must not be resolved"),
        redis_url=lambda: pytest.fail("Redis must not be resolved"),
    )
    try:
        b = factory.start(
            env={
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                "REDIS_URL": "redis://127.0.0.1:9/0",
                "EXTRA": "x",
            }
        )
        seen = httpx.get(f"{b.url}/env", timeout=10).json()
        assert seen["env"]["EXTRA"] == "x"
        assert seen["env"]["OPENAI_BASE_URL"] == "http://127.0.0.1:9/v1"
        assert seen["env"]["PRELABEL_DATA_DIR"] == str(b.data_dir)
        assert "PRELABEL_SOMETHING_FROM_MY_SHELL" not in seen["env"]
        assert seen["argv"][-4:] == ["--host", "127.0.0.1", "--port", str(b.port)]
        assert Path(seen["cwd"]) == b.workdir
        assert "stand-in serving" in b.log_path.read_text()
        b2 = factory.start(env={"OPENAI_BASE_URL": "http://x/v1", "REDIS_URL": "redis://x"})
        assert b2.port != b.port and b2.log_path != b.log_path
    finally:
        factory.stop_all()
    assert not b.alive() and not b2.alive()
    assert factory.started == []


def test_backend_factory_failure_reports_log(tmp_path):
    factory = BackendFactory(
        workdir=tmp_path / "backends",
        command=[sys.executable, "-c", "print('cannot bind,', 'bye'); exit(2)"],
    )
    with pytest.raises(StartupError, match="(?s)exited with code 2.*cannot bind, bye"):
        factory.start(env={"OPENAI_BASE_URL": "http://x/v1", "REDIS_URL": "redis://x"}, timeout=30)


def test_backend_factory_resolves_session_servers_lazily(tmp_path):
    calls = []

    class FakeLLM:
        base_url, model, api_key, structured_output = "http://llm/v1", "m", "k", "json_object"

    script = tmp_path / "standin.py"
    script.write_text(STANDIN_SERVER)
    factory = BackendFactory(
        workdir=tmp_path / "b",
        command=[sys.executable, str(script), "--host", "{host}", "--port", "{port}"],
        llm=lambda: calls.append("llm") or FakeLLM(),
        redis_url=lambda: calls.append("redis") or "redis://r",
    )
    try:
        b = factory.start()
        env = httpx.get(f"{b.url}/env", timeout=10).json()["env"]
    finally:
        factory.stop_all()
    assert calls == ["llm", "redis"]
    assert (
        env["OPENAI_BASE_URL"],
        env["PRELABEL_LLM_MODEL"],
        env["OPENAI_API_KEY"],
        env["PRELABEL_STRUCTURED_OUTPUT"],
        env["REDIS_URL"],
    ) == ("http://llm/v1", "m", "k", "json_object", "redis://r")
    assert json.dumps(b.env)  # serialisable summary of what the backend got
