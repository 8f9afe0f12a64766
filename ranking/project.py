"""Re-rank a Label Studio project and write the priority where annotators see it.

The priority goes into each unlabeled task's ``data.prelabel_priority`` (written only when it
changed), and a Data Manager view ``prelabel: priority`` sorts the queue by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from prelabel.contract import ProjectRef
from prelabel.label_config.schema import build_schema
from prelabel.ranking.diversity import TextIndex
from prelabel.ranking.priority import rank
from prelabel.ranking.signals import TaskSignals, task_signals
from prelabel.studio.client import plain
from prelabel.studio.task_fields import update_task_fields

if TYPE_CHECKING:
    import redis

PRIORITY_FIELD = "prelabel_priority"
VIEW_TITLE = "prelabel: priority"
VIEW_ORDERING = [f"-tasks:data.{PRIORITY_FIELD}"]


@dataclass
class RankingResult:
    tasks: int
    written: int
    unlabeled: int
    view_id: int

    def __str__(self) -> str:
        return f"{self.unlabeled} unlabeled of {self.tasks} tasks ranked, {self.written} priorities written"


def classification_control(label_config: str) -> tuple[str | None, str, list[str]]:
    """(Choices control name, the text key it reads, its labels); control None if there is none."""
    schema = build_schema(label_config)
    for control in schema.fields:
        if control.tag == "Choices":
            obj = schema.objects[control.object_name]
            return control.name, obj.value_key, list(control.label_values)
    first = schema.fields[0] if schema.fields else None
    key = schema.objects[first.object_name].value_key if first else "text"
    return None, key, []


def span_control(label_config: str) -> tuple[str | None, list[str]]:
    """(the first ``Labels`` control's name, its labels); (None, []) when there is none."""
    for control in build_schema(label_config).fields:
        if control.tag == "Labels":
            return control.name, list(control.label_values)
    return None, []


def project_signals(client: Any, project_id: int) -> tuple[list[TaskSignals], list[str], list[Any]]:
    """Every task's signals and the classes agreement is counted in: the first ``Choices``
    control's labels, else (a span config) the first ``Labels`` control's."""
    config = plain(client.projects.get(id=project_id))["label_config"]
    control, key, labels = classification_control(config)
    spans, span_labels = (None, []) if control else span_control(config)
    tasks = [plain(t) for t in client.tasks.list(project=project_id, fields="all")]
    return [task_signals(t, control or "", key, spans) for t in tasks], labels or span_labels, tasks


def ensure_priority_view(client: Any, project_id: int) -> int:
    for view in client.views.list(project=project_id):
        data = plain(view).get("data") or {}
        if data.get("title") == VIEW_TITLE:
            return int(plain(view)["id"])
    view = client.views.create(project=project_id, data={"title": VIEW_TITLE, "ordering": VIEW_ORDERING})
    return int(plain(view)["id"])


_INDEXES: dict[ProjectRef, tuple[int, TextIndex]] = {}


def cached_index(project: ProjectRef, signals: list[TaskSignals]) -> TextIndex:
    """The project's TextIndex, rebuilt only when its tasks or their texts changed.

    The worker process runs one refresh after another for the same project; the texts rarely
    change between two of them, the labels and reviews do.
    """
    key = hash(tuple((s.id, s.text) for s in signals))
    cached = _INDEXES.get(project)
    if cached is None or cached[0] != key:
        cached = (key, TextIndex.build([s.text for s in signals]))
        _INDEXES[project] = cached
    return cached[1]


def refresh_ranking(client: Any, project: ProjectRef, conn: redis.Redis | None = None,
                    model: Callable[[Sequence[str]], np.ndarray] | None = None) -> RankingResult:
    """``conn`` guards the task-field writes; ``model``: the project's supervised stage for its
    first Choices control, when fitted."""
    signals, labels, tasks = project_signals(client, project.id)
    written = 0
    if signals:
        ranking = rank(signals, labels, index=cached_index(project, signals), model=model)
        by_id = {t["id"]: t for t in tasks}
        for task_id, value, s in zip(ranking.ids, ranking.priority, signals):
            if s.labeled:
                continue
            value = round(float(value), 4)
            task = by_id[task_id]
            if (task.get("data") or {}).get(PRIORITY_FIELD) != value and \
                    update_task_fields(client, project, task, {PRIORITY_FIELD: value}, conn):
                written += 1
    view_id = ensure_priority_view(client, project.id)
    return RankingResult(len(signals), written, sum(not s.labeled for s in signals), view_id)


