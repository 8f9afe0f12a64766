"""What the queue is doing, for ``prelabel jobs`` and the backend's ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.worker import Worker

from prelabel.contract import REVIEW_STATS_KEY, as_text
from prelabel.jobs.queue import job_queue


@dataclass
class FailedJob:
    id: str
    description: str
    reason: str
    ended_at: str | None


@dataclass
class QueueStatus:
    queued: int
    running: int
    scheduled: int
    finished: int
    failed: int
    workers: list[dict[str, Any]] = field(default_factory=list)
    running_jobs: list[dict[str, str]] = field(default_factory=list)
    failed_jobs: list[FailedJob] = field(default_factory=list)
    reviews: dict[str, int] = field(default_factory=dict)


def _reason(job: Job) -> str:
    """The last line of the job's exception: what went wrong, without the traceback."""
    text = (job.exc_info or "").strip()
    return text.splitlines()[-1] if text else "unknown"


def queue_status(conn: redis.Redis, failed_limit: int = 20) -> QueueStatus:
    queue = job_queue(conn)
    started = StartedJobRegistry(queue=queue)
    failed = FailedJobRegistry(queue=queue)
    status = QueueStatus(
        queued=queue.count,
        running=started.count,
        scheduled=ScheduledJobRegistry(queue=queue).count,
        finished=FinishedJobRegistry(queue=queue).count,
        failed=failed.count,
    )
    for worker in Worker.all(connection=conn):
        status.workers.append({"name": worker.name, "state": str(worker.get_state()),
                               "host": worker.hostname, "pid": worker.pid,
                               "current_job": worker.get_current_job_id()})
    for job in Job.fetch_many(started.get_job_ids(cleanup=False), connection=conn):
        if job is not None:
            status.running_jobs.append({"id": job.id, "description": job.description or ""})
    failed_ids = failed.get_job_ids(0, failed_limit - 1, desc=True) if failed_limit else []
    for job in Job.fetch_many(failed_ids, connection=conn):
        if job is not None:
            ended = job.ended_at.isoformat(timespec="seconds") if job.ended_at else None
            status.failed_jobs.append(FailedJob(job.id, job.description or "", _reason(job), ended))
    status.reviews = {as_text(k): int(v) for k, v in conn.hgetall(REVIEW_STATS_KEY).items()}
    return status


class QueueCollector:
    """Prometheus collector: the queue's state read from Redis at scrape time.

    The worker runs in other processes, so its counts live in Redis; the backend's /metrics
    reads them when scraped rather than keeping copies that would drift.
    """

    def __init__(self) -> None:
        self.conn: redis.Redis | None = None

    def collect(self) -> Iterator[Metric]:
        if self.conn is None:
            return
        up = GaugeMetricFamily("prelabel_queue_up", "1 when the job queue's Redis answers.")
        try:
            status = queue_status(self.conn, failed_limit=0)
        except RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("prelabel_jobs", "Jobs in the queue by state.", labels=["state"])
        for state in ("queued", "running", "scheduled", "finished", "failed"):
            jobs.add_metric([state], getattr(status, state))
        yield jobs
        workers = GaugeMetricFamily("prelabel_workers", "Registered RQ workers.")
        workers.add_metric([], len(status.workers))
        yield workers
        reviews = CounterMetricFamily("prelabel_reviews", "Second-model reviews written, by status.",
                                      labels=["status"])
        for name, count in sorted(status.reviews.items()):
            reviews.add_metric([name], count)
        yield reviews


QUEUE_COLLECTOR = QueueCollector()
REGISTRY.register(QUEUE_COLLECTOR)
