"""Every prediction gets the same after-care: a review and a place in the ranking.

A task pre-annotated from a ``TASKS_CREATED`` event is reviewed and ranked by the job that wrote
its prediction (``preannotation.preannotate``). A task can also get its prediction from ``/predict``:
tasks imported before the model was connected (no event for them ever comes), *Retrieve
Predictions* in the Data Manager, Label Studio asking when a task is opened. Label Studio stores
those predictions itself, after ``/predict`` answered, so the backend queues their after-care
here, a few seconds later, without holding the answer:

* once per task and prediction version (``aftercare_key``, SET NX): Label Studio asking again
  for the same prediction queues nothing; a task reached by both paths is reviewed once per
  version anyway (``review._review_task`` skips a prediction already reviewed);
* the job reviews the tasks whose prediction Label Studio has stored by then (the review job
  ranks the project when it is done) and looks again, later, for the others, a few times;
* interactive calls (the labeling screen's suggestions, which Label Studio does not store) never
  come here.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from prelabel.contract import ProjectRef, aftercare_key, is_own_preannotation, is_review
from prelabel.jobs.events import event_key
from prelabel.jobs.project_job import ProjectJob
from prelabel.jobs.queue import enqueue
from prelabel.jobs.review import queue_review
from prelabel.settings import Settings
from prelabel.studio.client import human_touched

log = logging.getLogger(__name__)

DELAY_S = 3.0  # Label Studio stores a /predict answer right after receiving it
ATTEMPTS = 4  # looks for a prediction not stored yet, DELAY_S * attempt apart
MARKER_TTL = 7 * 24 * 3600


def queue_aftercare(conn: redis.Redis | None, settings: Settings, project: ProjectRef | None, tasks: list[Any],
                    predictions: list[Any]) -> list[int]:
    """Queue the review and ranking of the tasks ``/predict`` answered with a prediction that Label
    Studio stores; returns the task ids queued now (not those queued before for this version)."""
    if conn is None or project is None:
        return []
    fresh: dict[int, str] = {}  # task id -> the prediction version marked now
    for task, prediction in zip(tasks, predictions):
        if not (isinstance(task, dict) and isinstance(task.get("id"), int) and isinstance(prediction, dict)):
            continue  # not a Label Studio task, or handed to the worker (which reviews what it writes)
        version = str(prediction.get("model_version") or "")
        if is_own_preannotation(version) and conn.set(aftercare_key(project, task["id"], version), "1", nx=True,
                                                       ex=MARKER_TTL):
            fresh[task["id"]] = version
    if fresh:
        try:
            _enqueue(conn, settings, project, sorted(fresh), 1)
        except Exception:  # not queued: a later /predict of the same version must try again
            conn.delete(*[aftercare_key(project, tid, version) for tid, version in fresh.items()])
            raise
    return sorted(fresh)


def _enqueue(conn: redis.Redis, settings: Settings, project: ProjectRef, task_ids: list[int], attempt: int) -> None:
    enqueue(conn, settings, aftercare, project, task_ids, attempt,
            job_id=f"aftercare-{project.slug}-{event_key(task_ids)}-{attempt}",
            description=f"review and rank {len(task_ids)} tasks predicted through /predict",
            delay=DELAY_S * attempt)


def has_own_preannotation(task: dict[str, Any]) -> bool:
    return any(is_own_preannotation(p.get("model_version")) and not is_review(p.get("model_version"))
               for p in task.get("predictions") or [])


def aftercare(project: ProjectRef | int, task_ids: list[int], attempt: int = 1) -> dict[str, int]:
    """The worker's job: review (then rank) the tasks whose prediction Label Studio stored."""
    job = ProjectJob.open(project)
    tasks = list(job.ls.tasks(task_ids))
    stored = sorted(t["id"] for t in tasks if not human_touched(t) and has_own_preannotation(t))
    missing = sorted(t["id"] for t in tasks if not human_touched(t) and not has_own_preannotation(t))
    if stored:
        queue_review(job, stored, None)
    if missing and attempt < ATTEMPTS:
        _enqueue(job.conn, job.settings, job.ref, missing, attempt + 1)
    elif missing:
        log.info("project %s: %d task(s) answered by /predict have no stored prediction; the reconcile scan "
                 "looks again", job.ref, len(missing))
    return {"review_queued": len(stored), "not_stored_yet": len(missing)}
