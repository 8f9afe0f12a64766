"""Label Studio's webhook events as jobs: queued once per event, then handed to the job for
their purpose.

TASKS_CREATED  -> pre-annotate the new tasks in the background, then review them (``preannotation``)
ANNOTATION_*   -> remember the new human label, refresh ranking and quality, maybe retrain (``learning``)
START_TRAINING -> the training pipeline (export -> LoRA -> merge -> eval -> promote) (``training``)

Every job may run more than once for the same input (retries, a crashed worker's job picked up
again) and leaves Label Studio as if it ran once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import redis

from prelabel.contract import Event, ProjectRef, event_marker_key, job_config_key
from prelabel.jobs import events as ev
from prelabel.jobs.learning import forget_deleted_labels, learn_examples, on_human_label
from prelabel.jobs.preannotation import preannotate
from prelabel.jobs.project_job import ProjectJob
from prelabel.jobs.queue import enqueue
from prelabel.jobs.refresh import queue_refresh
from prelabel.jobs.training import start_training
from prelabel.settings import Settings


@dataclass(frozen=True)
class Enqueued:
    job_id: str
    duplicate: bool


def enqueue_event(conn: redis.Redis, settings: Settings, event: Event) -> Enqueued:
    """Queue the job for an event unless the same event was delivered before.

    The dedupe marker is set atomically (SET NX) *before* the job exists, so two deliveries
    racing each other still create one job; if queueing fails the marker is removed again so a
    later delivery is not lost.
    """
    job_id = event.job_id
    ttl = event.dedupe_ttl or settings.event_dedupe_ttl
    if not conn.set(event_marker_key(job_id), "1", nx=True, ex=ttl):
        return Enqueued(job_id, duplicate=True)
    try:
        enqueue(conn, settings, handle_event, _by_reference(conn, settings, event).as_dict(), job_id=job_id,
                description=f"{event.action} project {event.project_id}", at_front=event.action in ev.HUMAN)
    except Exception:
        conn.delete(event_marker_key(job_id))
        raise
    return Enqueued(job_id, duplicate=False)


def _by_reference(conn: redis.Redis, settings: Settings, event: Event) -> Event:
    """The event with its labeling config replaced by the config's hash (stored once, with a TTL)."""
    if not event.label_config:
        return event
    digest = hashlib.sha256(event.label_config.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    conn.set(job_config_key(digest), event.label_config, ex=settings.job_config_ttl)
    return replace(event, label_config=None, config_hash=digest)


def stored_config(conn: redis.Redis, event: Event) -> str | None:
    """The labeling config a queued event refers to; None (the worker asks Label Studio) when it
    carried none or its copy expired."""
    if event.label_config or not event.config_hash:
        return event.label_config
    raw = conn.get(job_config_key(event.config_hash))
    return raw.decode("utf-8", "surrogatepass") if isinstance(raw, bytes) else raw


def handle_event(event_data: dict[str, Any]) -> dict[str, Any]:
    """The worker's job for one queued event (``enqueue_event``)."""
    event = Event.from_dict(event_data)
    job = ProjectJob.open(ProjectRef(event.tenant, event.project_id) if event.tenant else event.project_id)
    label_config = stored_config(job.conn, event)
    if event.action == ev.TASKS_CREATED:
        return preannotate(job, event.task_ids, label_config)
    if event.action in (ev.ANNOTATION_CREATED, ev.ANNOTATION_UPDATED):
        learn_examples(job, event.task_ids, label_config)
        return on_human_label(job, event.annotation_ids)
    if event.action == ev.ANNOTATIONS_DELETED:
        forgotten = forget_deleted_labels(job, label_config)
        queue_refresh(job)
        return {"refresh": "queued", "fewshot_relearnt": forgotten}
    return start_training(job.settings, job.conn, job.ref)
