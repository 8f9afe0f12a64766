"""prelabel's own task fields (``prelabel_*`` in task data), written without losing anyone else's.

Label Studio keeps a task's data as one JSON object, and updating a task replaces it whole. A
job that writes back the data it read a while ago (ranking, spot check, review) erases every
field another job wrote in between. So each write here is field by field: under a lock per
project (a Redis lock when the caller has Redis, so workers in other processes wait too; a
process lock otherwise) the task is read again, only the given keys change, and the write is
read back; a write that a writer outside the lock (a person, an older prelabel) replaced is
made again, a few times at most.

The re-read goes through the Data Manager's task list, never ``GET /api/tasks/<id>``, which asks
the ML backend to pre-annotate a task without predictions first (see ``ProjectClient.tasks``).
"""

from __future__ import annotations

import json
import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from prelabel.contract import ProjectRef, task_fields_lock_key
from prelabel.errors import PrelabelError

if TYPE_CHECKING:
    import redis

ATTEMPTS = 5
LOCK_TIMEOUT_S = 30  # a crashed writer's lock expires
_LOCKS: dict[ProjectRef, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class TaskFieldsLost(PrelabelError, RuntimeError):
    """Our fields were replaced again and again by a writer that does not take the lock."""


def _lock(project: ProjectRef, conn: redis.Redis | None) -> AbstractContextManager[Any]:
    if conn is not None:
        return conn.lock(task_fields_lock_key(project), timeout=LOCK_TIMEOUT_S, blocking_timeout=LOCK_TIMEOUT_S)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(project, threading.Lock())


def current_data(sdk: Any, project_id: int, task_id: int) -> dict[str, Any]:
    """The task's data as Label Studio has it now."""
    query = json.dumps({"selectedItems": {"all": False, "included": [int(task_id)]}})
    for task in sdk.tasks.list(project=project_id, fields="all", query=query):
        found = task.model_dump() if hasattr(task, "model_dump") else dict(task)
        if int(found["id"]) == int(task_id):
            return dict(found.get("data") or {})
    raise KeyError(f"task {task_id} is not in project {project_id}")


def update_task_fields(sdk: Any, project: ProjectRef, task: dict[str, Any], fields: dict[str, Any],
                       conn: redis.Redis | None = None) -> bool:
    """Set ``fields`` in the task's data, keeping every other key as it is now; True when it changed.

    The one way prelabel writes a task's data (review status, priority, spot-check batch): the
    data the caller read earlier (``task["data"]``) is never written back, and on a change it
    is replaced by the data after the write, so the caller's copy stays current.
    """
    data = _write_fields(sdk, project, int(task["id"]), fields, conn)
    if data is None:
        return False
    task["data"] = data
    return True


def _write_fields(sdk: Any, project: ProjectRef, task_id: int, fields: dict[str, Any],
                  conn: redis.Redis | None) -> dict[str, Any] | None:
    """The task's data after setting ``fields`` in it, or None when they already had these values."""
    for _ in range(ATTEMPTS):
        with _lock(project, conn):
            data = current_data(sdk, project.id, task_id)
            if all(data.get(k) == v for k, v in fields.items()):
                return None
            sdk.tasks.update(id=str(task_id), data={**data, **fields})
            after = current_data(sdk, project.id, task_id)
        if all(after.get(k) == v for k, v in fields.items()):
            return after
    raise TaskFieldsLost(f"task {task_id}: {', '.join(fields)} replaced {ATTEMPTS} times by another writer")
