"""``prelabel worker``: RQ workers for the prelabel queue, with crashed jobs picked up again.

RQ notices a dead worker's job only after its heartbeat expires (about a minute) and its
next maintenance run. A worker starting on the same host can tell at once that the process
that held a job is gone, so it hands such jobs back to the queue before it starts working
(a retry when the job has retries left, RQ's failed registry otherwise).

Each worker process runs one job at a time in-process (``SimpleWorker``): the jobs are
I/O-bound and already concurrent inside (asyncio), and killing the worker kills its job, so
nothing runs on unseen. Scale with more processes (``--processes``) or more containers.

Each worker also queues, periodically, a reconcile job per project (``jobs/reconcile.py``): tasks
that an LLM outage or a lost webhook left without a pre-annotation get one once the LLM answers.

A worker consumes both queues by default (``WORKER_QUEUES``); ``--queues`` narrows it, e.g. a
training worker on a GPU machine that takes only ``prelabel-train`` (compose: ``trainer``) and
light workers that take only ``prelabel``.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.worker import Worker

from prelabel.contract import QUEUE_NAME, WORKER_QUEUES, as_text
from prelabel.jobs.queue import connection, job_queue
from prelabel.jobs.reconcile import ReconcileTicker
from prelabel.jobs.worker_stats import JOBS, Flusher
from prelabel.migrate import migrate_tenancy
from prelabel.pids import pid_alive
from prelabel.redis_conn import embedded_redis_stopped_on_exit
from prelabel.settings import Settings

log = logging.getLogger(__name__)


def _holder_is_dead(conn: redis.Redis, worker_name: str) -> bool:
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker_name, connection=conn)
    if worker is None:
        return True  # its registration expired: no heartbeat for a while
    return worker.hostname == socket.gethostname() and not pid_alive(worker.pid)


def release_dead_scheduler_lock(conn: redis.Redis) -> bool:
    """Free the queue's scheduler lock when the scheduler holding it died on this host.

    Retries wait in RQ's scheduled registry until a scheduler moves them to the queue; a
    killed worker's scheduler keeps its lock for about a minute, and a new worker only tries
    to take it every two minutes, so without this retries would stall for up to three.
    """
    lock_key = RQScheduler.get_locking_key(QUEUE_NAME)
    holder = conn.get(lock_key)
    if holder is None:
        return False
    info = conn.hgetall(SCHEDULER_KEY_TEMPLATE % as_text(holder))
    host = as_text(info.get(b"hostname") or b"")
    pid = int(info.get(b"pid") or 0)
    # Delete only if it is still that holder's lock (a live scheduler may have taken it since).
    if host == socket.gethostname() and pid and not pid_alive(pid) and conn.eval(_DELETE_IF_EQUAL, 1, lock_key, holder):
        log.warning("released the scheduler lock of a dead scheduler (pid %d)", pid)
        return True
    return False


_DELETE_IF_EQUAL = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def requeue_orphans(conn: redis.Redis, queues: tuple[str, ...] = (QUEUE_NAME,)) -> list[str]:
    """Hand the jobs of workers that died mid-job back to RQ's abandoned-job handling."""
    orphans: list[str] = []
    for name in queues:
        registry = StartedJobRegistry(queue=job_queue(conn, name))
        found = []
        for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
            try:
                execution = Execution.fetch(execution_id, job_id, connection=conn)
            except ValueError:  # execution record gone: RQ's own cleanup handles the entry
                continue
            if _holder_is_dead(conn, execution.worker_name):
                conn.zadd(registry.key, {execution.composite_key: 0})  # expire it now
                found.append(job_id)
        if found:
            registry.cleanup()
        orphans += found
    if orphans:
        log.warning("requeued %d job(s) of dead workers: %s", len(orphans), ", ".join(orphans))
    return orphans


class CountingWorker(SimpleWorker):
    """A ``SimpleWorker`` that counts each job (kind, outcome) and, after each, hands its counters
    to the backend's ``/metrics`` (``worker_stats``)."""

    flusher = Flusher()
    stop_asked = False  # RQ itself records a stop request only when it comes during a job

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job; a Redis that goes away while the job ends costs that job's bookkeeping (RQ
        expires it from the started registry later), never the worker: it waits for Redis like an
        idle worker does, instead of quitting on the unhandled ConnectionError."""
        try:
            super().execute_job(job, queue)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("job %s: Redis went away while it ended (%s); the worker carries on", job.id, exc)
        try:
            status = job.get_status(refresh=True)  # finished, failed, scheduled (a retry), ...
            JOBS.labels((job.func_name or "unknown").rsplit(".", 1)[-1], status.value if status else "unknown").inc()
            self.flusher.flush(self.connection)
        except redis.RedisError as exc:
            log.warning("job %s: its counters are not recorded (Redis unavailable: %s)", job.id, exc)


def run_worker(settings: Settings, burst: bool = False, maintenance_interval: int = 60,
               queues: tuple[str, ...] = WORKER_QUEUES) -> None:
    """One worker process, until SIGTERM/Ctrl-C (warm shutdown: the current job finishes)."""
    with embedded_redis_stopped_on_exit():
        conn = connection(settings)
        # the reconcile ticker re-queues pre-annotation work: only for workers of the main queue
        ticker = None if burst or QUEUE_NAME not in queues else ReconcileTicker(settings)
        try:
            migrate_tenancy(conn, settings)  # keys of an older version, before any job reads them
            requeue_orphans(conn, queues)
            release_dead_scheduler_lock(conn)
            if ticker:
                ticker.start()
            work_until_stopped(
                lambda: CountingWorker([job_queue(conn, name) for name in queues], connection=conn,
                                       maintenance_interval=maintenance_interval),
                conn, burst=burst, logging_level=settings.log_level.upper())
        finally:
            if ticker:
                ticker.stop()
            conn.close()


def work_until_stopped(make_worker: Callable[[], SimpleWorker], conn: redis.Redis, *, burst: bool, logging_level: str,
                       retry_s: float = 2.0) -> None:
    """RQ's work loop until a stop request (SIGTERM, Ctrl-C) or, with ``burst``, an empty queue.

    RQ quits its loop on any unexpected error between two jobs: Redis gone while it writes the
    worker's heartbeat or checks for suspension (a Redis restart), and its own teardown then
    fails the same way. The worker process would end, with jobs still to come; here it waits
    until Redis answers and starts a new loop instead."""
    while True:
        worker = make_worker()
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level=logging_level)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("worker %s: Redis went away as its loop ended (%s)", worker.name, exc)
        if burst or getattr(worker, "stop_asked", False):
            return
        log.warning("worker %s: RQ's loop ended without a stop request (Redis gone?); a new one starts "
                    "once Redis answers", worker.name)
        try:
            time.sleep(retry_s)  # never a busy loop, whatever ended RQ's
            while not _answers(conn):
                time.sleep(retry_s)
        except StopRequested:  # SIGTERM / Ctrl-C while waiting (RQ's handler raises it when idle)
            return


def _answers(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False


def run_workers(settings: Settings, processes: int, burst: bool = False, maintenance_interval: int = 60,
                queues: tuple[str, ...] = WORKER_QUEUES) -> None:
    """``processes`` worker processes; the first one owns the embedded Redis if there is one."""
    if processes <= 1:
        run_worker(settings, burst, maintenance_interval, queues)
        return
    with embedded_redis_stopped_on_exit():
        from prelabel.redis_conn import redis_url

        env_url = redis_url(settings)  # start the embedded server once, share its socket
        children = [
            multiprocessing.get_context("spawn").Process(
                target=run_worker, args=(settings.model_copy(update={"redis_url": env_url}), burst,
                                         maintenance_interval, queues),
            )
            for _ in range(processes)
        ]
        for child in children:
            child.start()
        try:
            for child in children:
                child.join()
        finally:
            for child in children:
                if child.is_alive():
                    child.terminate()
                    child.join(10)
