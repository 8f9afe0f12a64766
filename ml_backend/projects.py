"""Which project a request is about, and what ``/setup`` said about it.

A project is a ``ProjectRef``: its id within one Label Studio instance (``studio.tenancy``: the
stamp Label Studio sends with the id says which). What ``/setup`` said is kept in the backend's
memory and in Redis for the worker. The memory is bounded (project ids come from requests; a
config may be 1 MB): an evicted project, or one set up before a restart, is read back from Redis.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from prelabel.contract import ProjectRecord, ProjectRef, project_key
from prelabel.lru import LRU
from prelabel.ml_backend import protocol
from prelabel.settings import Settings
from prelabel.studio.tenancy import Tenants

log = logging.getLogger(__name__)


class ProjectStore:
    def __init__(self, settings: Settings, tenants: Tenants) -> None:
        self.settings = settings
        self.tenants = tenants
        self.memory: LRU[ProjectRef, ProjectRecord] = LRU(settings.project_cache_size, settings.project_cache_bytes,
                                                   ProjectRecord.size)

    async def ref_at_setup(self, conn: redis.Redis | None, pid: int, stamp: str | None,
                           hostname: str | None) -> ProjectRef:
        """The project a ``/setup`` is about; its stamp is remembered for ``/predict`` and
        webhooks. Redis away: the hostname alone decides (logged)."""
        try:
            return await run_in_threadpool(self.tenants.at_setup, conn, pid, stamp, hostname)
        except RedisError as exc:
            log.error("project %s: its Label Studio instance not remembered (%s)", pid, type(exc).__name__)
            return self.tenants.at_setup(None, pid, stamp, hostname)

    async def ref_of(self, conn: redis.Redis | None, raw: str | int | None) -> ProjectRef | None:
        """The project of a ``/predict`` (or ``/projects/<id>``): the instance its stamp was set up
        for, else the configured one. With listed instances a Redis failure is a 503 (a wrong guess
        would mix two instances' projects); without, nothing is looked up (single-instance)."""
        pid = protocol.project_id(raw)
        if pid is None:
            return None
        stamp = protocol.project_stamp(raw)
        if not self.tenants.needs_lookup(stamp):  # no thread hop on the single-instance /predict path
            return ProjectRef(self.tenants.default, int(pid))
        return ProjectRef(await run_in_threadpool(self.tenants.lookup, conn, stamp), int(pid))

    async def remember(self, client: Any, pid: ProjectRef, record: ProjectRecord) -> None:
        """Keep ``record`` and share it with the worker (which runs this project's background jobs)."""
        self.memory.put(pid, record)
        try:
            await client.set(project_key(pid), record.encode(), ex=self.settings.project_ttl or None)
        except RedisError as exc:  # /setup must still answer: interactive predictions work without it
            log.error("project %s: could not store its settings for the worker: %s", pid, exc)

    async def get(self, client: Any, pid: ProjectRef | None) -> ProjectRecord | None:
        """What /setup said about ``pid``: from memory, else (evicted, restarted) from Redis."""
        if pid is None:
            return None
        record = self.memory.get(pid)
        if record is None and client is not None:
            try:
                raw = await client.get(project_key(pid))
            except RedisError:
                return None
            if raw:
                record = ProjectRecord.decode(raw)
                self.memory.put(pid, record)
        return record
