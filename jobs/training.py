"""When human labels start a fine-tuning run, and how it is queued.

The worker counts new human-verified labels per project; at ``PRELABEL_TRAIN_MIN_NEW_LABELS`` it
queues the flywheel (``prelabel.train.pipeline.run_flywheel``) on the training queue
(``TRAIN_QUEUE_NAME``), which ``prelabel worker`` consumes by default and a GPU trainer alone in a
deployment (compose: ``trainer``). The job is named by its import path, so the worker's event
handling does not import the training stack (torch, peft) and ``jobs`` does not depend on ``train``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue

from prelabel.contract import ProjectRef, train_label_count_key, train_status_key
from prelabel.jobs.queue import train_queue
from prelabel.settings import Settings, get_settings

FLYWHEEL_JOB = "prelabel.train.pipeline.run_flywheel"
FLYWHEEL_TIMEOUT = 24 * 3600  # export + LoRA training + merge + evaluation of two models


def enqueue_flywheel(queue: Queue, project: ProjectRef, **kwargs: Any) -> Any:
    """Queue the flywheel for one project; its status hash says 'queued' until the worker starts it."""
    job = queue.enqueue(FLYWHEEL_JOB, args=(project,), kwargs=kwargs, job_timeout=FLYWHEEL_TIMEOUT,
                        description=f"flywheel for project {project}")
    queue.connection.hset(train_status_key(project), mapping={
        "state": "queued", "job_id": job.id, "queued": datetime.now(UTC).isoformat(timespec="seconds")})
    return job


def note_verified_labels(client: Any, project: ProjectRef, count: int = 1,
                         threshold: int | None = None) -> bool:
    """Count new human-verified labels; True (and the count restarts) once ``threshold`` is reached."""
    threshold = threshold or get_settings().train_min_new_labels
    key = train_label_count_key(project)
    total = client.incrby(key, count)
    if total < threshold:
        return False
    client.decrby(key, total)
    return True


def start_training(settings: Settings, conn: redis.Redis, project: ProjectRef) -> dict[str, Any]:
    """Queue the export -> train -> merge -> eval -> promote pipeline (status in prelabel:train:<id>)."""
    job = enqueue_flywheel(train_queue(conn), project)
    return {"flywheel": "queued", "job_id": job.id}
