"""``/predict`` within Label Studio's deadline: what is ready is answered, the rest goes to the worker.

Label Studio sends every selected task in one ``/predict`` and stores nothing if the answer takes
longer than ``ML_TIMEOUT_PREDICT`` (100 s). With a slow model that is most batches. So when the
request comes from a Label Studio project the backend knows (``/setup``, so the worker can write
back), ``answer_within_deadline`` predicts until ``PRELABEL_PREDICT_TIMEOUT -
PRELABEL_PREDICT_MARGIN`` seconds after the request arrived, then answers: the finished
predictions, and for every other task an empty list (Label Studio accepts a *list* of
predictions per task; an empty one stores nothing and is not an error). Those tasks are handed
to the worker by the caller (the backend: ``jobs.handoff``; prediction never calls the job
queue), which writes their predictions through the SDK. The hand-off markers are read here:
a task handed off before is answered ``[]`` again, not predicted twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import redis

from prelabel.contract import Prediction, ProjectRef, handoff_key
from prelabel.contract import Predictor as PredictorProtocol
from prelabel.prediction.fewshot import FewShotPool
from prelabel.prediction.predictor import ProjectContext


def pending(conn: redis.Redis, project: ProjectRef, task_ids: list[int]) -> set[int]:
    """The tasks among ``task_ids`` already handed to the worker (not finished, or just finished)."""
    if not task_ids:
        return set()
    values = conn.mget([handoff_key(project, tid) for tid in task_ids])
    return {tid for tid, value in zip(task_ids, values) if value is not None}


@dataclass
class PredictReply:
    """What ``/predict`` answers (not a label answer: see ``label_config.answers`` for those)."""

    results: list[Any]  # one item per task: a prediction, or [] (handed off / already pending)
    pending: list[int] = field(default_factory=list)  # task ids the worker will write
    late: list[int] = field(default_factory=list)  # of those, the ones to hand to the worker now


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
    predictor: PredictorProtocol, tasks: list[Any], context: ProjectContext, pool: FewShotPool | None, *,
    conn: redis.Redis, project: ProjectRef, deadline: float,
) -> PredictReply | None:
    """Predict until the deadline; the rest is ``late`` (the caller hands it off); None when the
    tasks carry no ids to hand off."""
    ids = task_ids(tasks)
    if ids is None:
        return None
    already = await asyncio.to_thread(pending, conn, project, ids)
    todo = [(i, task) for i, (tid, task) in enumerate(zip(ids, tasks)) if tid not in already]
    predictions = await predictor.predict_until([task for _, task in todo], context, pool, deadline)
    results: list[Prediction | list[Any]] = [[] for _ in tasks]
    late: list[int] = []
    for (index, _), prediction in zip(todo, predictions):
        if prediction is None:
            late.append(ids[index])
        else:
            results[index] = prediction
    return PredictReply(results, sorted(set(late) | already), late)


def loop_time() -> float:
    return asyncio.get_running_loop().time()
