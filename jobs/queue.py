"""Putting work on the RQ queue: one job per event, at most once per event id.

Every job is retried with backoff, keeps its failure (with the reason) in RQ's failed registry,
and is written so that running it twice changes nothing the second time (the worker that picks a
crashed job up again re-runs it from the start).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis
from rq import Queue, Retry
from rq.job import Job, JobStatus

from prelabel.contract import QUEUE_NAME, TRAIN_QUEUE_NAME
from prelabel.redis_conn import connection as connection  # re-exported: the queue's callers take it from here
from prelabel.settings import Settings

RETRY_FACTORS = (1, 6, 30)
PENDING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def job_queue(conn: redis.Redis, name: str = QUEUE_NAME) -> Queue:
    return Queue(name, connection=conn)


def train_queue(conn: redis.Redis) -> Queue:
    """The flywheel's queue (``TRAIN_QUEUE_NAME``): consumed by workers that can train."""
    return job_queue(conn, TRAIN_QUEUE_NAME)


def enqueue(
    conn: redis.Redis, settings: Settings, func: Callable[..., Any], *args: Any, job_id: str, description: str,
    at_front: bool = False, delay: float = 0.0,
) -> Job:
    """Queue ``func(*args)`` with prelabel's retry, timeout and retention policy (``at_front``:
    ahead of every waiting job, for what a person is waiting on; ``delay``: seconds it waits in
    RQ's scheduled registry first, moved to the queue by a worker's scheduler)."""
    intervals = [settings.job_retry_backoff * f for f in RETRY_FACTORS[: max(1, settings.job_retries)]]
    retry = Retry(max=settings.job_retries, interval=intervals) if settings.job_retries else None
    options: dict[str, Any] = dict(job_id=job_id, description=description, retry=retry,
                                   job_timeout=settings.job_timeout, result_ttl=24 * 3600, failure_ttl=30 * 24 * 3600)
    if delay > 0:
        return job_queue(conn).enqueue_in(timedelta(seconds=delay), func, *args, **options)
    return job_queue(conn).enqueue(func, *args, at_front=at_front, **options)


def enqueue_once(
    conn: redis.Redis, settings: Settings, func: Callable[..., Any], *args: Any, job_id: str, description: str
) -> Job | None:
    """Queue a follow-up job unless one with this id is still waiting to run (debounce).

    Used for per-project refreshes (ranking, quality) that many events ask for: while one is
    pending, asking again adds nothing; once it ran, the next request queues a fresh one.
    """
    existing = Job.fetch_many([job_id], connection=conn)[0]
    if existing is not None:
        if existing.get_status(refresh=False) in PENDING:
            return None
        existing.delete()
    return enqueue(conn, settings, func, *args, job_id=job_id, description=description)
