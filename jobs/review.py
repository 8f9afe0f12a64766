"""The second-model review job: a different model judges each pre-annotation, in time slices.

The review itself (prompt, verdict, correction) is prediction logic (``prediction.review``);
this job reads the pre-annotations from Label Studio, writes each review back as a prediction
and the ``prelabel_review`` field, and re-ranks the project when a slice is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prelabel.contract import (
    REVIEW_FIELD,
    REVIEW_STATS_KEY,
    STATUS_SEP,
    ModelVersion,
    ProjectRef,
    ReviewStatus,
    is_review,
    stamp_of,
    status_of,
)
from prelabel.errors import PrelabelError
from prelabel.jobs import events as ev
from prelabel.jobs.project_job import ProjectJob
from prelabel.jobs.queue import enqueue_once
from prelabel.jobs.refresh import queue_refresh
from prelabel.jobs.reviewer_independence import check_reviewer, reviewer_independence
from prelabel.label_config.schema import TaskDataError
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.predictor import ProjectContext
from prelabel.prediction.review import Review, proposed_answer, review_one, review_prediction
from prelabel.settings import reviewer_settings

log = logging.getLogger(__name__)


class ReviewRetry(PrelabelError, RuntimeError):
    """Some reviews failed for a transient reason; raising makes RQ retry the job later."""


def queue_review(job: ProjectJob, task_ids: list[int], label_config: str | None) -> None:
    enqueue_once(job.conn, job.settings, review_tasks, job.ref, task_ids, label_config,
                 job_id=f"review-{job.ref.slug}-{ev.event_key(task_ids)}",
                 description=f"review {len(task_ids)} tasks")


def review_tasks(project: ProjectRef | int, task_ids: list[int], label_config: str | None = None) -> dict[str, int]:
    """Review the tasks for one slice of time (``job_slice_s``); the rest become a new job at the
    back of the queue, so a human label's webhook (queued at the front) waits one slice, not the
    whole import's review."""
    job = ProjectJob.open(project)
    counts, transient, rest = asyncio.run(_review(job, task_ids, label_config))
    if rest:
        queue_review(job, rest, label_config)
    queue_refresh(job)
    if transient:
        raise ReviewRetry(f"{len(transient)} review(s) failed for a transient reason: tasks {transient[:10]}")
    return counts


async def _review(job: ProjectJob, task_ids: list[int], label_config: str | None
                  ) -> tuple[dict[str, int], list[int], list[int]]:
    """(counts by status, tasks whose review failed for a transient reason, tasks not reached).

    Tasks go out in waves as wide as the reviewer's current adaptive limit (no task waits long
    for a permit); after a wave that ends past the slice, the rest is left for the next job."""
    check_reviewer(job.settings)
    independence = await asyncio.to_thread(reviewer_independence, job.settings, job.conn)
    ctx = await asyncio.to_thread(job.context, label_config)
    llm = LLMClient(reviewer_settings(job.settings))
    counts: dict[str, int] = {}
    transient: list[int] = []
    try:
        async def one(task_id: int) -> None:
            status = await _review_task(job, llm, ctx, task_id, independence["verdict"])
            counts[str(status)] = counts.get(str(status), 0) + 1  # the plain value, also in the log line
            if status == ReviewStatus.REVIEW_ERROR:
                transient.append(task_id)

        ends = time.monotonic() + job.settings.job_slice_s
        rest = list(task_ids)
        while rest and (len(rest) == len(task_ids) or time.monotonic() < ends):
            width = llm.capacity()
            wave, rest = rest[:width], rest[width:]
            await asyncio.gather(*(one(tid) for tid in wave))
    finally:
        await llm.aclose()
    log.info("project %s: reviewed %d tasks: %s%s", job.project_id, len(task_ids) - len(rest), counts,
             f"; {len(rest)} left for the next job" if rest else "")
    return counts, sorted(transient), rest


async def _review_task(job: ProjectJob, llm: LLMClient, ctx: ProjectContext, task_id: int,
                       independence: str = "unknown") -> str:
    predictions = await asyncio.to_thread(job.ls.predictions, task_id)
    pre = _latest(p for p in predictions if not is_review(p.get("model_version") or ""))
    if pre is None:
        return "no_pre_annotation"
    family = ModelVersion(llm.model, ctx.prompt.version, review=True).family
    done = _latest(p for p in predictions if (p.get("model_version") or "").startswith(family))
    if done is not None and _reviewed(done) == (pre["id"], pre.get("model_version")) \
            and status_of(done["model_version"]) != ReviewStatus.REVIEW_ERROR:
        return "already_reviewed"
    threshold = job.settings.review_below
    if threshold is not None and (pre.get("score") or 0.0) >= threshold:
        return "skipped_confident"

    task = await asyncio.to_thread(job.ls.task, task_id)
    regions = [r for r in pre.get("result") or [] if isinstance(r, dict)]
    if STATUS_SEP in (pre.get("model_version") or "") or not regions:
        review = Review(ReviewStatus.NEEDS_HUMAN, "pre-annotation incomplete", model=llm.model)
    else:
        try:
            texts = ctx.schema.object_texts(task.get("data") or {})
        except TaskDataError as exc:
            review = Review(ReviewStatus.NEEDS_HUMAN, "task data unusable", errors=[str(exc)], model=llm.model)
        else:
            review = await review_one(llm, ctx, texts, proposed_answer(ctx, regions))
    prediction = review_prediction(family, pre, review, independence)
    outcome = await asyncio.to_thread(job.ls.upsert_prediction, task_id, prediction,
                                      lambda mv: mv.startswith(family))
    await asyncio.to_thread(job.ls.set_fields, task, {REVIEW_FIELD: review.status})
    if outcome != "unchanged":
        job.conn.hincrby(REVIEW_STATS_KEY, review.status, 1)
    if review.errors:
        log.info("task %s: review %s: %s", task_id, review.status, "; ".join(review.errors)[:300])
    return review.status


def _latest(predictions: Any) -> dict[str, Any] | None:
    items = list(predictions)
    return max(items, key=lambda p: p["id"]) if items else None


def _reviewed(prediction: dict[str, Any]) -> tuple[int, str | None] | None:
    """(id, model_version) of the pre-annotation a review judged: the pre-annotation is updated in
    place when a task is pre-annotated again, so its id alone does not say it is the same one."""
    for region in prediction.get("result") or []:
        review = stamp_of(region).get("review") or {}
        if "reviewed" in review:
            return review["reviewed"], review.get("reviewed_model_version")
    return None
