"""Human labels: into the project's few-shot pool, counted towards the next training run.

``ANNOTATION_CREATED`` / ``_UPDATED`` put the task's latest human answer into the shared pool
(the backend and the workers see it on their next batch) and count it; ``ANNOTATIONS_DELETED``
makes the pool follow what a human answered now. Both re-rank the project (``jobs.refresh``).
"""

from __future__ import annotations

from typing import Any

from prelabel.contract import new_labels_key
from prelabel.jobs.project_job import ProjectJob
from prelabel.jobs.refresh import queue_refresh
from prelabel.jobs.stage_eval import flywheel_plausible
from prelabel.jobs.training import note_verified_labels, start_training
from prelabel.label_config.answers import answer_from_regions
from prelabel.label_config.schema import TaskDataError
from prelabel.prediction.fewshot_store import add_example, pool_answers, remove_task
from prelabel.prediction.predictor import ProjectContext
from prelabel.prediction.project_examples import human_annotation


def learn_examples(job: ProjectJob, task_ids: list[int], label_config: str | None) -> int:
    """Put the tasks' latest human answers into the project's shared few-shot pool (or take a
    task out when it has none any more); the backend and the workers see them on their next batch."""
    ctx = job.context(label_config)
    return sum(_learn(job, ctx, job.ls.task(task_id)) != "removed" for task_id in task_ids)


def _learn(job: ProjectJob, ctx: ProjectContext, task: dict[str, Any],
           held: dict[str, Any] | None = None) -> str:
    """The task's latest human answer into the pool (``added``; ``unchanged`` when it is the
    answer ``held`` there), or the task out of the pool when it has none (``removed``)."""
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
        plausible, why = flywheel_plausible(job.conn, job.ref, job.settings.flywheel_min_growth)
        if not plausible:
            return {"new_labels": new, "training": f"skipped: {why}"}
        return {"new_labels": new, "training": start_training(job.settings, job.conn, job.ref)}
    return {"new_labels": new}
