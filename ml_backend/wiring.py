"""Making sure each project's webhook reaches ``/webhook`` with the backend's credentials.

Done in the background (``/setup`` and ``/predict`` never wait for it), once per process and
project when it worked; after a failure again on the next request (Label Studio repeats
``/setup``). Only the Label Studio that ``/setup`` named is ever called.
"""

from __future__ import annotations

import asyncio
import logging

import redis
from redis.exceptions import RedisError

from prelabel.contract import ProjectRecord, ProjectRef
from prelabel.lru import Once
from prelabel.ml_backend.auth import webhook_headers
from prelabel.settings import Settings
from prelabel.studio import webhook_wiring
from prelabel.studio.access import Access, AccessRefused, origin_of
from prelabel.studio.tenancy import access_for

log = logging.getLogger(__name__)

_unwired_logged = Once(1024)  # (project, reason) whose "webhook not wired" warning was logged


class WebhookWirer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wired: set[ProjectRef] = set()  # projects whose webhook this process wired (or is wiring)

    def claim(self, pid: ProjectRef) -> bool:
        """True when ``pid`` needs wiring now (claimed before the task starts: concurrent requests
        wire once)."""
        if pid in self._wired:
            return False
        self._wired.add(pid)
        return True

    def access(self, pid: ProjectRef, record: ProjectRecord) -> Access | None:
        """Label Studio where the project lives, when the backend may call it: never a fallback to
        another Label Studio than the one ``/setup`` named (its project ids are another's)."""
        try:
            access = access_for(self.settings, pid, record.hostname, record.access_token)
            if record.hostname and record.hostname.strip() and origin_of(record.hostname) != origin_of(access.url):
                return None
        except AccessRefused:
            return None
        return access

    async def wire(self, conn: redis.Redis, pid: ProjectRef, record: ProjectRecord) -> None:
        headers = webhook_headers(self.settings)
        access = self.access(pid, record)
        if headers is None:
            result = webhook_wiring.unwired(pid.id, "no_secret")
        elif access is None:
            result = webhook_wiring.unwired(pid.id, "no_access", None, next(iter(headers)))
        else:
            result = await asyncio.to_thread(
                lambda: webhook_wiring.wire_webhook(access.client(timeout=10), pid.id, headers))
        if result.ok:
            if result.state == "wired":
                log.info("project %s: webhook %s now carries the backend's credentials", pid, result.webhook_id)
        else:
            self._wired.discard(pid)
            if _unwired_logged.first((pid, result.reason)):
                log.warning("project %s: webhook not wired (%s): Label Studio events will be refused. %s",
                            pid, result.reason, result.step)
        try:
            await asyncio.to_thread(webhook_wiring.record, conn, pid, result)
        except RedisError as exc:
            log.error("project %s: webhook state not recorded: %s", pid, type(exc).__name__)
