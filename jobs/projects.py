"""What the backend learned about a project at ``/setup``, read back by the worker.

Label Studio tells only the backend (in ``/setup``) which guideline a project uses and how to
call Label Studio back (its host and the project creator's token). The worker needs both to
pre-annotate and review in the background, so the backend stores a ``contract.ProjectRecord``.
The token stays in Redis: it is never logged, never put in a job's arguments (RQ keeps those in
plain sight). What is recorded is a claim, not a destination: ``prelabel.studio.access`` decides
whether that host may be called and with which token.
"""

from __future__ import annotations

import redis

from prelabel.contract import ProjectRecord, ProjectRef, project_key


def load_project(conn: redis.Redis, project: ProjectRef) -> ProjectRecord:
    return ProjectRecord.decode(conn.get(project_key(project)))
