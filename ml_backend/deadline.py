"""``/predict`` within Label Studio's deadline: what is ready is answered, the rest goes to the worker.

Label Studio sends every selected task in one ``/predict`` and stores nothing if the answer takes
longer than ``ML_TIMEOUT_PREDICT`` (100 s). With a slow model that is most batches. So when the
request comes from a Label Studio project the backend knows (``/setup``, so the worker can write
back), ``answer_within_deadline`` predicts until ``PRELABEL_PREDICT_TIMEOUT -
PRELABEL_PREDICT_MARGIN`` seconds after the request arrived, then answers: the finished
predictions, and for every other task an empty list (Label Studio accepts a *list* of
predictions per task; an empty one stores nothing and is not an error). Those tasks are handed
to the worker (``jobs.handoff``), which writes their predictions through the SDK.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool

from prelabel.contract import ProjectRef
from prelabel.jobs import handoff
from prelabel.prediction import metrics
from prelabel.prediction.cascade import ProjectPredictor
from prelabel.prediction.fewshot import FewShotPool
from prelabel.prediction.predictor import ProjectContext
from prelabel.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Answer:
    results: list[Any]  # one item per task: a prediction, or [] (handed off / already pending)
    pending: list[int] = field(default_factory=list)  # task ids the worker will write


def task_ids(tasks: list[Any]) -> list[int] | None:
    """Every task's Label Studio id, or None when one lacks it (then nothing can be handed off)."""
    ids = []
    for task in tasks:
        tid = task.get("id") if isinstance(task, dict) else None
        if not isinstance(tid, int) or isinstance(tid, bool):
            return None
        ids.append(tid)
    return ids


async def answer_within_deadline(
    predictor: ProjectPredictor, tasks: list[Any], context: ProjectContext, pool: FewShotPool | None, *,
    conn: redis.Redis, settings: Settings, project: ProjectRef, label_config: str | None, arrived: float,
) -> Answer | None:
    """Predict until the deadline, hand the rest off; None when the tasks carry no ids to hand off."""
    ids = task_ids(tasks)
    if ids is None:
        return None
    already = await run_in_threadpool(handoff.pending, conn, project, ids)
    todo = [(i, task) for i, (tid, task) in enumerate(zip(ids, tasks)) if tid not in already]
    deadline = arrived + settings.predict_timeout - settings.predict_margin
    predictions = await predictor.predict_until([task for _, task in todo], context, pool, deadline)
    results: list[Any] = [[] for _ in tasks]
    late: list[int] = []
    for (index, _), prediction in zip(todo, predictions):
        if prediction is None:
            late.append(ids[index])
        else:
            results[index] = prediction
    if late:
        queued = await run_in_threadpool(handoff.hand_off, conn, settings, project, late, label_config)
        metrics.PREDICT_HANDOFF.inc(len(queued))
        log.info("/predict for project %s: %d of %d tasks answered in time, %d handed to the worker",
                 project, len(todo) - len(late), len(tasks), len(late))
    return Answer(results, sorted(set(late) | already))


def loop_time() -> float:
    return asyncio.get_running_loop().time()
