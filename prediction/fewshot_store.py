"""A project's human-labeled few-shot examples, in Redis, shared by the backend and the workers.

Human labels must reach the prompts as they arrive, in every process that pre-annotates: the
backend's ``/predict`` and the workers' batch jobs. So the pool lives in Redis:

* written by the worker on every ``ANNOTATION_CREATED`` / ``_UPDATED`` event (the task's latest
  human answer replaces what the pool had for it; a task without one leaves the pool) and by the
  backend at ``/setup`` (the project's existing labeled tasks);
* deduplicated by text: two tasks with the same (normalised) text keep one example, the newest;
* bounded: ``fewshot_pool_max`` examples per project, the oldest dropped first;
* versioned: every change bumps a counter, so a process rebuilds its TF-IDF pool only when the
  version it holds is stale (one Redis GET per batch otherwise, never a restart);
* never shown to the task itself: each example carries ``task:<id>`` and ``FewShotPool.select``
  leaves out the example of the task being predicted (and any example with the same text).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from redis.exceptions import RedisError

from prelabel.contract import ProjectRef, fewshot_keys
from prelabel.prediction.fewshot import FewShotPool
from prelabel.prediction.predictor import ProjectContext
from prelabel.prediction.prompt import Example
from prelabel.text import normalise

log = logging.getLogger(__name__)

def _digest(texts: dict[str, str]) -> str:
    return hashlib.sha256(normalise("\n".join(texts.values())).encode()).hexdigest()[:24]


def add_example(conn: Any, project: ProjectRef, task_id: int, texts: dict[str, str], answer: dict[str, Any],
                limit: int) -> None:
    """Put (or replace) a task's human answer into the project's pool (sync Redis client)."""
    pool, order, tasks, version = fewshot_keys(project)
    digest = _digest(texts)
    old = conn.hget(tasks, task_id)
    pipe = conn.pipeline()
    if old is not None and old.decode() != digest:
        _drop(conn, pipe, project, old.decode(), task_id)
    pipe.hset(pool, digest, json.dumps({"task": task_id, "texts": texts, "answer": answer}))
    pipe.zadd(order, {digest: time.time()})
    pipe.hset(tasks, task_id, digest)
    pipe.incr(version)
    pipe.execute()
    excess = conn.zcard(order) - limit
    if excess > 0:
        oldest = [d.decode() for d in conn.zrange(order, 0, excess - 1)]
        pipe = conn.pipeline()
        pipe.hdel(pool, *oldest)
        pipe.zrem(order, *oldest)
        pipe.incr(version)
        pipe.execute()


def remove_task(conn: Any, project: ProjectRef, task_id: int) -> None:
    """The task has no human answer any more: its example leaves the pool."""
    _, _, tasks, version = fewshot_keys(project)
    old = conn.hget(tasks, task_id)
    if old is None:
        return
    pipe = conn.pipeline()
    _drop(conn, pipe, project, old.decode(), task_id)
    pipe.hdel(tasks, task_id)
    pipe.incr(version)
    pipe.execute()


def pool_answers(conn: Any, project: ProjectRef) -> dict[int, dict[str, Any]]:
    """The pool's tasks and the human answer each one holds there."""
    keys = fewshot_keys(project)
    out: dict[int, dict[str, Any]] = {}
    for task, digest in conn.hgetall(keys.tasks).items():
        raw = conn.hget(keys.pool, digest)
        entry = json.loads(raw) if raw is not None else {}
        out[int(task)] = entry.get("answer") or {}
    return out


def _drop(conn: Any, pipe: Any, project: ProjectRef, digest: str, task_id: int) -> None:
    """Queue the removal of ``digest``'s example if it is still this task's (a newer task with the
    same text may have taken it over)."""
    pool, order, _, _ = fewshot_keys(project)
    raw = conn.hget(pool, digest)
    if raw is not None and json.loads(raw).get("task") == task_id:
        pipe.hdel(pool, digest)
        pipe.zrem(order, digest)


def pool_size(conn: Any, project: ProjectRef) -> int:
    return int(conn.hlen(fewshot_keys(project).pool))


class ProjectPools:
    """Per-process cache of built pools, keyed by project and config, rebuilt on a new version."""

    def __init__(self, max_projects: int = 64) -> None:
        self._pools: OrderedDict[tuple[ProjectRef, str], tuple[bytes | None, FewShotPool]] = OrderedDict()
        self.max_projects = max_projects

    async def pool(self, client: Any, project: ProjectRef | None, ctx: ProjectContext) -> FewShotPool | None:
        """The context's pool plus the project's human examples (None: no project, or none yet)."""
        if client is None or project is None:
            return None
        pool_key, _, _, version_key = fewshot_keys(project)
        try:
            version = await client.get(version_key)
        except RedisError as exc:  # few-shot examples help; their absence must not fail a prediction
            log.warning("project %s: few-shot pool unavailable: %s", project, type(exc).__name__)
            return None
        if version is None:
            return None
        key = (project, ctx.schema.config_hash)
        cached = self._pools.get(key)
        if cached is not None and cached[0] == version:
            self._pools.move_to_end(key)
            return cached[1]
        objects = {c.object_name for c in ctx.schema.fields}
        controls = {c.name for c in ctx.schema.fields}
        examples = []
        for raw in (await client.hgetall(pool_key)).values():
            item = json.loads(raw)
            # Only examples of this config's shape (a project's config may have changed since).
            if set(item["texts"]) == objects and set(item["answer"]) <= controls:
                examples.append(Example(item["texts"], item["answer"], source=f"task:{item['task']}"))
        examples.sort(key=lambda e: e.source)
        pool = ctx.pool_with(examples)
        self._pools[key] = (version, pool)
        while len(self._pools) > self.max_projects:
            self._pools.popitem(last=False)
        return pool
