"""Tasks ``/predict`` could not finish before Label Studio's deadline, predicted by the worker.

Label Studio waits ``ML_TIMEOUT_PREDICT`` (100 s) for ``/predict`` and then stores nothing. So the
backend answers before that (``PRELABEL_PREDICT_TIMEOUT - PRELABEL_PREDICT_MARGIN``) with the
predictions that are ready, answers ``[]`` (no prediction yet) for the others, and hands them to
the worker here; the worker writes their predictions into Label Studio through the SDK.

Nothing is lost or duplicated:

* each handed-off task gets a marker ``prelabel:handoff:<project>:<task>`` (SET NX): a task
  already handed off is not handed off again, and a later ``/predict`` (the user clicks
  *Retrieve Predictions* again) answers ``[]`` for it instead of predicting it a second time
  (``prediction.deadline.pending`` reads the markers);
* the job skips tasks that already have a prediction of this model and prompt, and writes with
  ``ProjectClient.upsert_prediction`` (one prediction per model family, whatever runs twice);
* when the job is done the markers expire after ``DONE_TTL`` seconds (long enough for a
  ``/predict`` in progress to see them), so a task whose prediction failed can be asked for again.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from prelabel.contract import ProjectRef, handoff_key
from prelabel.jobs.events import event_key
from prelabel.jobs.preannotation import preannotate
from prelabel.jobs.project_job import ProjectJob
from prelabel.jobs.queue import enqueue
from prelabel.settings import Settings

log = logging.getLogger(__name__)

DONE_TTL = 120


def hand_off(conn: redis.Redis, settings: Settings, project: ProjectRef, task_ids: list[int],
             label_config: str | None) -> list[int]:
    """Mark and queue the tasks not handed off yet; returns the ones queued now."""
    ttl = settings.job_timeout * (settings.job_retries + 1) + 3600
    job_id = f"handoff-{project.slug}-{event_key(sorted(task_ids))}"
    fresh = [tid for tid in task_ids if conn.set(handoff_key(project, tid), job_id, nx=True, ex=ttl)]
    if not fresh:
        return []
    try:
        enqueue(conn, settings, predict_handed_off, project, fresh, label_config, job_id=job_id,
                description=f"predict {len(fresh)} tasks /predict had no time for (project {project})")
    except Exception:
        conn.delete(*[handoff_key(project, tid) for tid in fresh])
        raise
    log.info("project %s: %d tasks handed to the worker (job %s)", project, len(fresh), job_id)
    return fresh


def predict_handed_off(project: ProjectRef | int, task_ids: list[int], label_config: str | None) -> dict[str, Any]:
    """The worker's job: predict the tasks and write each prediction into Label Studio (upsert)."""
    job = ProjectJob.open(project)
    counts = preannotate(job, task_ids, label_config)  # and their review and ranking, as for an import
    _expire(job.conn, job.ref, task_ids)  # a failed run keeps them marked while RQ retries it
    return counts


def _expire(conn: redis.Redis, project: ProjectRef, task_ids: list[int]) -> None:
    pipe = conn.pipeline()
    for tid in task_ids:
        pipe.expire(handoff_key(project, tid), DONE_TTL)
    pipe.execute()
