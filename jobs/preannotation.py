"""Pre-annotation in the background: the tasks of an import (``TASKS_CREATED``), the ones
``/predict`` handed off at Label Studio's deadline and the ones the reconcile scan found unlabeled.

Each task goes through the pre-annotation service (``prediction.service``), as ``/predict`` does;
a task a person labeled (before or while the LLM answered) is left alone, and the rest are
reviewed afterwards (``jobs.review``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prelabel.jobs.project_job import ProjectJob
from prelabel.jobs.review import queue_review
from prelabel.prediction import outcomes
from prelabel.prediction.service import PreannotationService
from prelabel.studio.client import human_touched

log = logging.getLogger(__name__)

# The count, in a pre-annotation job's result, of tasks a person had labeled (left alone).
LABELED_BY_A_PERSON = "labeled_by_a_person"


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
    async with PreannotationService.open(job.settings, conn=job.conn) as service:
        if not label_config:
            label_config = await asyncio.to_thread(job.ls.label_config)
        batch = await service.prepare(job.ref, label_config, job.record.guideline)
        family = batch.model_version
        step = max(1, job.settings.llm_concurrency * 2)
        for start in range(0, len(task_ids), step):
            chunk = task_ids[start:start + step]
            tasks = await asyncio.to_thread(list, job.ls.tasks(chunk))  # the generator runs in the thread
            people = {task["id"] for task in tasks if human_touched(task)}
            todo = [task for task in tasks if task["id"] not in people and not _done(task, family)]
            counts["already_done"] = counts.get("already_done", 0) + len(tasks) - len(people) - len(todo)
            labeled |= people
            predictions = await service.predict(batch, todo, record=False)
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
