"""Self-healing: tasks that an LLM outage or a lost webhook left without a pre-annotation get one.

An error prediction (``…#error``: the LLM was unreachable, crashed or timed out) must not block a
later good one. The worker therefore runs a reconcile job per project:

* every ``reconcile_interval`` seconds, the tasks whose latest attempt failed for an LLM error
  (``prelabel:errored:<project>``, written by the batch pre-annotation);
* every ``reconcile_scan_interval`` seconds (and when a worker starts), a scan of the project in
  Label Studio for tasks without any prelabel pre-annotation or whose latest one is an error:
  this covers webhooks refused with 503 while Redis was down, and errors from before this
  record existed. The same scan queues the review of pre-annotated tasks never reviewed and a
  ranking when a pre-annotated task has no priority (after-care of a ``/predict`` answer lost
  with Redis, a webhook refused before the backend wired its project).

One task is tried first; when the LLM still fails, the round ends there (no call storm against
a dead server). Tasks with a human annotation (or a skip) are never touched, nor tasks a ``/predict``
handed to the worker at Label Studio's deadline (``jobs.handoff``); predictions are updated in
place, never duplicated.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq.job import Job, JobStatus

from prelabel.contract import (
    PROJECT_KEY_PATTERN,
    REVIEW_FIELD,
    ProjectRef,
    TaskStatus,
    errored_key,
    is_own_preannotation,
    is_review,
    project_of_key,
    scanned_key,
    status_of,
)
from prelabel.jobs.preannotation import LABELED_BY_A_PERSON, preannotate
from prelabel.jobs.project_job import ProjectJob
from prelabel.jobs.queue import PENDING, connection, enqueue
from prelabel.jobs.refresh import queue_refresh
from prelabel.jobs.review import queue_review
from prelabel.jobs.worker_stats import RECONCILE_ROUNDS
from prelabel.prediction import outcomes
from prelabel.prediction.deadline import pending
from prelabel.ranking.project import PRIORITY_FIELD
from prelabel.settings import Settings
from prelabel.studio.client import human_touched

log = logging.getLogger(__name__)

NEW_TASK_GRACE = timedelta(minutes=2)
def needs_preannotation(task: dict[str, Any], now: datetime | None = None) -> bool:
    """No human touched it, and it has no prelabel pre-annotation or its latest one is an error.

    A task without any pre-annotation counts only once it is older than ``NEW_TASK_GRACE``: a
    task just imported waits for its own TASKS_CREATED job, which is on its way.
    """
    if human_touched(task):
        return False
    own = [p for p in task.get("predictions") or [] if is_own_preannotation(p.get("model_version") or "")]
    if not own:
        return _age(task, now) >= NEW_TASK_GRACE
    latest = max(own, key=lambda p: p.get("id") or 0)
    return status_of(latest.get("model_version")) == TaskStatus.ERROR


def _age(task: dict[str, Any], now: datetime | None) -> timedelta:
    created = task.get("created_at")
    if isinstance(created, str):
        try:
            created = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            created = None
    if not isinstance(created, datetime):
        return NEW_TASK_GRACE  # no date: treat as old enough
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) - created


def reconcile_project(project: ProjectRef | int, scan: bool | None = None) -> dict[str, Any]:
    """Pre-annotate this project's tasks that an LLM error or a lost event left without a label."""
    job = ProjectJob.open(project)
    project_id = job.project_id
    scan_key = scanned_key(job.ref)
    if scan is None:  # a full scan once per scan interval, whichever worker gets there first
        scan = bool(job.conn.set(scan_key, "1", nx=True, ex=job.settings.reconcile_scan_interval))
    found = {t["id"]: t for t in job.ls.tasks()} if scan else {}
    errored = set(outcomes.errored_tasks(job.conn, job.ref))
    if errored - set(found):  # as Label Studio has them now: a human may have labeled one since
        found |= {t["id"]: t for t in job.ls.tasks(sorted(errored - set(found)))}
    if errored - set(found):  # deleted tasks
        job.conn.srem(errored_key(job.ref), *(errored - set(found)))
    aftercare = _queue_missing_aftercare(job, found) if scan else {}
    candidates = {task_id for task_id, task in found.items() if needs_preannotation(task)}
    candidates -= pending(job.conn, job.ref, sorted(candidates))  # the worker has them already
    if not candidates:
        RECONCILE_ROUNDS.labels("aftercare" if any(aftercare.values()) else "nothing").inc()
        return {"candidates": 0, **aftercare}
    first, *rest = sorted(candidates)
    probe = preannotate(job, [first], None)
    if probe.get(TaskStatus.ERROR):
        log.info("project %s: %d task(s) still wait for the LLM (it fails again)", project_id, len(candidates))
        RECONCILE_ROUNDS.labels("still_failing").inc()
        return {"candidates": len(candidates), "healed": 0, "still_failing": len(candidates)}
    counts = preannotate(job, rest, None) if rest else {}
    total = {k: probe.get(k, 0) + counts.get(k, 0) for k in set(probe) | set(counts)}
    tried = len(candidates) - total.get(LABELED_BY_A_PERSON, 0)  # a person labeled some meanwhile
    healed = tried - counts.get(TaskStatus.ERROR, 0)
    log.info("project %s: reconcile pre-annotated %d task(s) again: %s", project_id, tried, total)
    RECONCILE_ROUNDS.labels("healed" if healed else "still_failing").inc()
    return {"candidates": len(candidates), "healed": healed, "still_failing": counts.get(TaskStatus.ERROR, 0),
            **aftercare}


def needs_review(task: dict[str, Any]) -> bool:
    """No human touched it, its latest prelabel pre-annotation is not an error (reconcile redoes
    those, and their review follows), and it was never reviewed: no review prediction and no
    ``prelabel_review`` field (a prediction from ``/predict`` whose after-care was lost)."""
    if human_touched(task) or (task.get("data") or {}).get(REVIEW_FIELD):
        return False
    predictions = task.get("predictions") or []
    if any(is_review(p.get("model_version")) for p in predictions):
        return False
    own = [p for p in predictions if is_own_preannotation(p.get("model_version") or "")]
    return bool(own) and status_of(max(own, key=lambda p: p.get("id") or 0).get("model_version")) != TaskStatus.ERROR


def needs_ranking(task: dict[str, Any]) -> bool:
    """A task no person labeled that has a prelabel pre-annotation but no priority yet."""
    own = any(is_own_preannotation(p.get("model_version") or "") for p in task.get("predictions") or [])
    return own and not human_touched(task) and PRIORITY_FIELD not in (task.get("data") or {})


def _queue_missing_aftercare(job: Any, found: dict[int, dict[str, Any]]) -> dict[str, int]:
    """Queue the review of pre-annotated tasks never reviewed, and a ranking when some task has none."""
    review = sorted(tid for tid, task in found.items() if needs_review(task))
    rank = sum(needs_ranking(task) for task in found.values())
    if review:
        queue_review(job, review, None)  # ranks the project when it is done
    elif rank:
        queue_refresh(job)
    if review or rank:
        log.info("project %s: reconcile queued the review of %d and the ranking of %d task(s)",
                 job.project_id, len(review), rank)
    return {"review_queued": len(review), "unranked": rank}


def known_projects(conn: redis.Redis) -> list[ProjectRef]:
    """Projects the backend was set up for (their records hold how to reach Label Studio)."""
    refs = []
    for key in conn.scan_iter(match=PROJECT_KEY_PATTERN, count=500):
        project = project_of_key(key)
        if project is not None:
            refs.append(project)
    return sorted(refs)


def queue_reconcile(conn: redis.Redis, settings: Settings, project: ProjectRef, scan: bool | None = None) -> bool:
    """Queue the project's reconcile job unless one is waiting or running (``scan``: force or skip
    the full scan; None: once per scan interval)."""
    job_id = f"reconcile-{project.slug}"
    existing = Job.fetch_many([job_id], connection=conn)[0]
    if existing is not None:
        if existing.get_status(refresh=False) in PENDING | {JobStatus.STARTED}:
            return False
        existing.delete()
    enqueue(conn, settings, reconcile_project, project, scan, job_id=job_id,
            description="reconcile pre-annotations")
    return True


class ReconcileTicker:
    """A worker's background thread: queue every known project's reconcile job periodically."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prelabel-reconcile", daemon=True)

    def start(self) -> ReconcileTicker:
        if self.settings.reconcile_interval > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        conn = connection(self.settings)
        scan: bool | None = True  # a worker that starts looks at everything once
        try:
            while True:
                try:
                    for project in known_projects(conn):
                        queue_reconcile(conn, self.settings, project, scan)
                    scan = None
                except redis.RedisError as exc:  # Redis restarting: try again next tick
                    log.warning("reconcile: Redis unavailable (%s)", type(exc).__name__)
                if self._stop.wait(self.settings.reconcile_interval):
                    return
        finally:
            conn.close()
