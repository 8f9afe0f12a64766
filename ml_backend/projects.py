"""What ``/setup`` said about each project: in the backend's memory, and in Redis for the worker.

The memory is bounded (project ids come from requests; a config may be 1 MB): an evicted
project, or one set up before a restart, is read back from Redis.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from prelabel.contract import ProjectRecord, ProjectRef, project_key
from prelabel.lru import LRU
from prelabel.settings import Settings

log = logging.getLogger(__name__)


class ProjectStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.memory: LRU[ProjectRef, ProjectRecord] = LRU(settings.project_cache_size, settings.project_cache_bytes,
                                                   ProjectRecord.size)

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
