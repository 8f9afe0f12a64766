"""What the backend learned about a project at ``/setup``, shared with the worker through Redis.

Label Studio tells only the backend (in ``/setup``) which guideline a project uses and how to
call Label Studio back (its host and the project creator's token). The worker needs both to
pre-annotate and review in the background, so the backend keeps them here. The token stays in
Redis: it is never logged, never put in a job's arguments (RQ keeps those in plain sight). What
is recorded here is a claim, not a destination: ``prelabel.studio.access`` decides whether that
host may be called and with which token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from prelabel.contract import ProjectRef, project_key


@dataclass(frozen=True)
class ProjectRecord:
    guideline: str | dict | None = None
    hostname: str | None = None
    access_token: str | None = None

    def __repr__(self) -> str:  # the token must not reach logs through a repr
        return f"ProjectRecord(guideline={self.guideline!r}, hostname={self.hostname!r})"

    def encode(self) -> str:
        return json.dumps({"guideline": self.guideline, "hostname": self.hostname, "access_token": self.access_token})

    @classmethod
    def decode(cls, raw: bytes | str | None) -> ProjectRecord:
        data: dict[str, Any] = json.loads(raw) if raw else {}
        return cls(data.get("guideline"), data.get("hostname"), data.get("access_token"))


def load_project(conn: redis.Redis, project: ProjectRef) -> ProjectRecord:
    return ProjectRecord.decode(conn.get(project_key(project)))
