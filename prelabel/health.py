"""``prelabel-health``: container health checks (exit 0 when healthy).

* ``prelabel-health`` (the backend): ``/health`` says UP. Basic-auth aware, so a backend protected
  by PRELABEL_BASIC_AUTH_* is still reported healthy.
* ``prelabel-health --worker`` (a worker or the trainer, which serve no HTTP): an RQ worker of this
  host (container) is registered in Redis (its key expires without heartbeats) and its process
  runs. A worker busy with a day-long training job stays healthy; one that lost Redis does not.

Kept free of heavy imports (a check runs every few seconds).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import urllib.request


def backend_healthy() -> int:
    port = os.environ.get("PRELABEL_PORT", "9090")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health")
    user, password = os.environ.get("PRELABEL_BASIC_AUTH_USER"), os.environ.get("PRELABEL_BASIC_AUTH_PASSWORD")
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # loopback only
            return 0 if json.load(response).get("status") == "UP" else 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


def worker_healthy() -> int:
    import redis
    from rq.worker import Worker

    from prelabel.pids import pid_alive

    url = os.environ.get("REDIS_URL") or os.environ.get("PRELABEL_REDIS_URL")
    if not url:
        print("unhealthy: REDIS_URL is not set", file=sys.stderr)
        return 1
    host = socket.gethostname()
    try:
        conn = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        mine = [w for w in Worker.all(connection=conn) if w.hostname == host and pid_alive(w.pid)]
    except (redis.RedisError, OSError) as exc:
        print(f"unhealthy: Redis: {type(exc).__name__}", file=sys.stderr)
        return 1
    if not mine:
        print(f"unhealthy: no running worker of {host} is registered in Redis", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return worker_healthy() if "--worker" in args else backend_healthy()


if __name__ == "__main__":
    sys.exit(main())
