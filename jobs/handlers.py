"""The job functions the worker runs: one per webhook event, and the follow-ups they queue.

TASKS_CREATED  -> pre-annotate the new tasks in the background, then review them
ANNOTATION_*   -> remember the new human label, refresh ranking and quality, maybe retrain
START_TRAINING -> the training pipeline (export -> LoRA -> merge -> eval -> promote), its status in Redis

Every function here may run more than once for the same input (retries, a crashed worker's job
picked up again) and leaves Label Studio as if it ran once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from prelabel.contract import (
    REVIEW_FIELD,
    REVIEW_STATS_KEY,
    REVIEWER_INDEPENDENCE_KEY,
    STATUS_SEP,
    ModelVersion,
    ProjectRef,
    ReviewStatus,
    is_review,
    new_labels_key,
    stamp_of,
    status_of,
    with_status,
)
from prelabel.errors import PrelabelError
from prelabel.jobs import events as ev
from prelabel.jobs import outcomes
from prelabel.jobs.events import Event
from prelabel.jobs.projects import ProjectRecord, load_project
from prelabel.jobs.queue import connection, enqueue_once, stored_config, train_queue
from prelabel.jobs.review import Review, proposed_answer, review_one
from prelabel.jobs.training import enqueue_flywheel, note_verified_labels
from prelabel.label_config import guideline_store
from prelabel.label_config.schema import TaskDataError
from prelabel.prediction.confidence import FALLBACK_SCORE
from prelabel.prediction.fewshot_store import ProjectPools
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.model_router import ModelRouter
from prelabel.prediction.predictor import ContextBuilder, ProjectContext, open_predictor
from prelabel.settings import Settings, get_settings, reviewer_settings
from prelabel.studio.client import ProjectClient, human_touched
from prelabel.studio.tenancy import access_for, as_ref

log = logging.getLogger(__name__)

# The count, in a pre-annotation job's result, of tasks a person had labeled (left alone).
LABELED_BY_A_PERSON = "labeled_by_a_person"


class ReviewRetry(PrelabelError, RuntimeError):
    """Some reviews failed for a transient reason; raising makes RQ retry the job later."""


@dataclass
class ProjectJob:
    """What every job of one project needs: settings, Redis, the project record, Label Studio."""

    settings: Settings
    conn: redis.Redis
    ref: ProjectRef  # the project's Redis keys (its Label Studio and id)
    record: ProjectRecord
    ls: ProjectClient

    @property
    def project_id(self) -> int:
        """The project's id in its Label Studio."""
        return self.ref.id

    @classmethod
    def open(cls, project: ProjectRef | int, settings: Settings | None = None) -> ProjectJob:
        """``project``: a reference, or a bare id (a job queued before tenancy: the configured LS's)."""
        settings = settings or get_settings()
        ref = as_ref(settings, project)
        conn = connection(settings)
        record = load_project(conn, ref)
        active = guideline_store.active_guideline(guideline_store.active(conn, ref))
        if active is not None:  # `prelabel prompts use` wins over the backend's extra params
            record = dataclasses.replace(record, guideline=active)
        # never another Label Studio than the project's: AccessRefused fails the job, said why
        sdk = access_for(settings, ref, record.hostname, record.access_token).client()
        return cls(settings, conn, ref, record, ProjectClient(sdk, ref, conn))

    def context(self, label_config: str | None) -> ProjectContext:
        return ContextBuilder(self.settings).context(label_config or self.ls.label_config(), self.record.guideline)


# --- entry point of every webhook job --------------------------------------------------------
def handle_event(event_data: dict[str, Any]) -> dict[str, Any]:
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


# --- pre-annotation ----------------------------------------------------------------------------
def preannotate(job: ProjectJob, task_ids: list[int], label_config: str | None) -> dict[str, Any]:
    """Pre-annotate tasks in the background (projects too big for an interactive /predict)."""
    counts, labeled = asyncio.run(_preannotate(job, task_ids, label_config))
    rest = [tid for tid in task_ids if tid not in labeled]
    if rest:
        queue_review(job, rest, label_config)
    return counts


async def _preannotate(job: ProjectJob, task_ids: list[int], label_config: str | None
                       ) -> tuple[dict[str, int], set[int]]:
    """(counts, ids of tasks a person already labeled: imported with annotations, left alone)."""
    counts: dict[str, int] = {}
    labeled: set[int] = set()
    results: dict[int, outcomes.Outcome] = {}
    async with open_predictor(job.settings) as default:
        router = ModelRouter(default)
        predictor = await router.for_project(job.ref)
        if not label_config:
            label_config = await asyncio.to_thread(job.ls.label_config)
        ctx = predictor.context(label_config, job.record.guideline)
        pool = await ProjectPools().pool(predictor.cache.client if predictor.cache else None, job.ref, ctx)
        family = predictor.model_version(ctx)
        step = max(1, job.settings.llm_concurrency * 2)
        for start in range(0, len(task_ids), step):
            chunk = task_ids[start:start + step]
            tasks = await asyncio.to_thread(list, job.ls.tasks(chunk))  # the generator runs in the thread
            people = {task["id"] for task in tasks if human_touched(task)}
            todo = [task for task in tasks if task["id"] not in people and not _done(task, family)]
            counts["already_done"] = counts.get("already_done", 0) + len(tasks) - len(people) - len(todo)
            labeled |= people
            predictions = await predictor.predict(todo, ctx, pool)
            # a person may have labeled a task while the LLM answered (an outage can last minutes):
            # look again just before writing, and leave those tasks alone
            again = await asyncio.to_thread(list, job.ls.tasks([task["id"] for task in todo]))
            late = {task["id"] for task in again if human_touched(task)}
            labeled |= late
            for task, prediction in zip(todo, predictions):
                if task["id"] in late:
                    continue
                outcome = outcomes.prediction_outcome(prediction)  # recorded first: LS keeps no reasons
                outcomes.record(job.conn, job.ref, {task["id"]: outcome})
                await asyncio.to_thread(job.ls.upsert_prediction, task["id"], prediction,
                                        lambda mv: mv.startswith(family))
                status = str(outcome.status)  # the plain value: counts are logged and stored as job results
                counts[status] = counts.get(status, 0) + 1
                results[task["id"]] = outcome
        await router.aclose()
    if labeled:
        counts[LABELED_BY_A_PERSON] = len(labeled)
    log.info("project %s: %d task(s): %s%s%s", job.project_id, len(task_ids),
             outcomes.Tally.of(results.values()).summary(),
             f"; {counts['already_done']} already done" if counts.get("already_done") else "",
             f"; {len(labeled)} labeled by a person (left alone)" if labeled else "")
    return counts, labeled


def _done(task: dict[str, Any], family: str) -> bool:
    """The task already has a complete pre-annotation of this model and prompt."""
    return any(p.get("model_version") == family for p in task.get("predictions") or [])


# --- second-model review ---------------------------------------------------------------------
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


def check_reviewer(settings: Settings) -> None:
    """The reviewer must be a different model or a different endpoint than the pre-annotator."""
    reviewer = reviewer_settings(settings)
    if reviewer.llm_model == settings.llm_model and reviewer.llm_base_urls == settings.llm_base_urls:
        raise ValueError(
            "the reviewer must differ from the pre-annotator: set PRELABEL_REVIEWER_MODEL and/or "
            "PRELABEL_REVIEWER_BASE_URLS"
        )


def reviewer_independence(settings: Settings, conn: redis.Redis) -> dict[str, Any]:
    """Do the two servers serve different weights? Asked of the servers (``model_identity``),
    remembered in Redis for an hour; with ``reviewer_require_different_weights`` a reviewer that
    is the same weights under another name stops the review job with that reason."""
    from prelabel.prediction.model_identity import SAME, compare, identify

    reviewer = reviewer_settings(settings)
    raw = conn.get(REVIEWER_INDEPENDENCE_KEY)
    found = json.loads(raw) if raw else None
    pair = [settings.llm_model, settings.llm_base_urls[0], reviewer.llm_model, reviewer.llm_base_urls[0]]
    if found is None or found.get("pair") != pair:
        ours = identify(settings.llm_base_urls[0], settings.llm_api_keys[0].get_secret_value(), settings.llm_model)
        theirs = identify(reviewer.llm_base_urls[0], reviewer.llm_api_keys[0].get_secret_value(), reviewer.llm_model)
        verdict, evidence = compare(ours, theirs)
        found = {"pair": pair, "verdict": verdict, "evidence": evidence, "time": _now(),
                 "pre_annotator": ours.as_dict() | {"probe": None}, "reviewer": theirs.as_dict() | {"probe": None}}
        conn.set(REVIEWER_INDEPENDENCE_KEY, json.dumps(found), ex=3600)
        (log.warning if verdict == SAME else log.info)("reviewer independence: %s: %s", verdict, evidence)
    if found["verdict"] == SAME and settings.reviewer_require_different_weights:
        raise ValueError(f"the reviewer is not an independent model: {found['evidence']}")
    return found


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


def review_prediction(family: str, pre: dict[str, Any], review: Review, independence: str = "unknown"
                      ) -> dict[str, Any]:
    """The reviewer's prediction: its correction when it rejected, else the reviewed regions.

    Label Studio keeps only result/score/model_version, so the verdict travels in the
    ``model_version`` suffix and in every region's ``prelabel.review``. The score is the
    reviewer's own confidence (``review.add_confidence``); a reviewer that returned no logprobs
    gets the explicit fallback (``score_source: "none"``); a review with no answer scores 0.
    """
    stamp = {"status": review.status, "verdict": review.verdict, "rationale": review.rationale,
             "reviewed": pre["id"], "reviewed_model_version": pre.get("model_version"), "time": _now(),
             "confidence": review.confidence, "verdict_probs": review.verdict_probs,
             "score_source": "none" if review.confidence is None else "logprobs", "independence": independence}
    if review.status not in (ReviewStatus.PASSED, ReviewStatus.REJECTED):
        score = 0.0
    else:
        score = review.confidence if review.confidence is not None else FALLBACK_SCORE
    if review.corrected is not None:
        source = []
        for name, regions in review.corrected.regions.items():
            extra = {"score": review.corrected_scores[name]} if name in review.corrected_scores else {}
            own = {"label_probs": review.corrected_label_probs[name]} if name in review.corrected_label_probs else {}
            source += [{**region, **extra, "prelabel": own} for region in regions]
    else:
        source = [{k: v for k, v in r.items() if k != "id"} for r in pre.get("result") or []]
    result = [{**region, "prelabel": {**stamp_of(region), "review": stamp}} for region in source]
    return {"result": result, "score": score, "model_version": with_status(family, review.status)}


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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- human labels: few-shot pool, ranking, quality, retraining --------------------------------
def learn_examples(job: ProjectJob, task_ids: list[int], label_config: str | None) -> int:
    """Put the tasks' latest human answers into the project's shared few-shot pool (or take a
    task out when it has none any more); the backend and the workers see them on their next batch."""
    ctx = job.context(label_config)
    return sum(_learn(job, ctx, job.ls.task(task_id)) != "removed" for task_id in task_ids)


def _learn(job: ProjectJob, ctx: ProjectContext, task: dict[str, Any],
           held: dict[str, Any] | None = None) -> str:
    """The task's latest human answer into the pool (``added``; ``unchanged`` when it is the
    answer ``held`` there), or the task out of the pool when it has none (``removed``)."""
    from prelabel.label_config.answers import answer_from_regions
    from prelabel.prediction.fewshot_store import add_example, remove_task
    from prelabel.prediction.project_examples import human_annotation

    result = human_annotation(task)
    answer = answer_from_regions(ctx.schema, result) if result else None
    try:
        texts = ctx.schema.object_texts(task.get("data") or {})
    except TaskDataError:
        answer = None
    if answer is None:
        remove_task(job.conn, job.ref, int(task["id"]))
        return "removed"
    if answer == held:
        return "unchanged"
    add_example(job.conn, job.ref, int(task["id"]), texts, answer, job.settings.fewshot_pool_max)
    return "added"


def forget_deleted_labels(job: ProjectJob, label_config: str | None) -> int:
    """ANNOTATIONS_DELETED names the deleted annotations, not their tasks: the pool's tasks are
    read again (one Data Manager list) and each one's example follows what a human answered now,
    so a deleted label leaves the pool (or gives way to another annotator's answer). Returns how
    many examples changed."""
    from prelabel.prediction.fewshot_store import pool_answers, remove_task

    held = pool_answers(job.conn, job.ref)
    if not held:
        return 0
    ctx = job.context(label_config)
    now = {int(t["id"]): t for t in job.ls.tasks(sorted(held))}
    changed = 0
    for task_id, answer in held.items():
        if task_id not in now:  # the task itself was deleted
            remove_task(job.conn, job.ref, task_id)
            changed += 1
        else:
            changed += _learn(job, ctx, now[task_id], answer) != "unchanged"
    return changed


def on_human_label(job: ProjectJob, annotation_ids: list[int]) -> dict[str, Any]:
    """Count new human labels (each annotation once, however often delivered), refresh, maybe retrain."""
    key = new_labels_key(job.ref)
    new = job.conn.sadd(key, *annotation_ids)  # a set: the same annotation delivered twice counts once
    queue_refresh(job)
    if new and note_verified_labels(job.conn, job.ref, new):
        from prelabel.jobs.stage_eval import flywheel_plausible

        plausible, why = flywheel_plausible(job.conn, job.ref, job.settings.flywheel_min_growth)
        if not plausible:
            return {"new_labels": new, "training": f"skipped: {why}"}
        return {"new_labels": new, "training": start_training(job.settings, job.conn, job.ref)}
    return {"new_labels": new}


def queue_refresh(job: ProjectJob) -> None:
    enqueue_once(job.conn, job.settings, refresh_project, job.ref,
                 job_id=f"refresh-{job.ref.slug}", description="refresh ranking and quality")


def refresh_project(project: ProjectRef | int) -> dict[str, Any]:
    """Refit and score the supervised stage, re-rank the project's queue with it, recompute
    per-class agreement, refit the score's calibration."""
    from prelabel.jobs.stage_eval import refresh_stages
    from prelabel.quality.calibration import refresh_calibration
    from prelabel.quality.project import refresh_quality
    from prelabel.ranking.project import refresh_ranking

    job = ProjectJob.open(project)
    stages = refresh_stages(job.ls.sdk, job.ref, job.conn, job.settings.stage_min_accuracy)
    ranking = refresh_ranking(job.ls.sdk, job.ref, job.conn, model=stages.ranking_model)
    quality = refresh_quality(job.ls.sdk, job.ref, job.conn)
    calibration = refresh_calibration(job.ls.sdk, job.ref, job.conn)
    return {"stages": stages.summary, "ranking": str(ranking), "quality": str(quality), "calibration": calibration}


# --- training --------------------------------------------------------------------------------
def start_training(settings: Settings, conn: redis.Redis, project: ProjectRef) -> dict[str, Any]:
    """Queue the export -> train -> merge -> eval -> promote pipeline (status in prelabel:train:<id>)."""
    job = enqueue_flywheel(train_queue(conn), project)
    return {"flywheel": "queued", "job_id": job.id}
