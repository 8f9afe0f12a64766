"""One Label Studio project through the SDK: reads, and idempotent writes for background jobs.

``plain`` turns an SDK record (a pydantic model) or a dict into a plain dict: every caller of the
SDK (jobs, ranking, export, few-shot examples, project set-up) reads records through it.

Jobs can run twice (a retry, a crashed worker's job picked up again), so every write is an
upsert keyed by what it is: a prediction is matched by its ``model_version`` family, a task field
is written only when its value changes. Running a job again never adds a second prediction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from label_studio_sdk.client import LabelStudio

from prelabel.contract import Prediction, ProjectRef
from prelabel.studio.task_fields import update_task_fields

if TYPE_CHECKING:
    import redis


def plain(obj: Any) -> dict[str, Any]:
    """An SDK record (pydantic model) or a mapping as a plain dict."""
    return obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)


def human_touched(task: dict[str, Any]) -> bool:
    """A person annotated or skipped the task (in the Data Manager list's counts, or its annotations):
    prelabel neither pre-annotates nor reviews it, and never changes what is on it."""
    return bool(task.get("total_annotations") or task.get("cancelled_annotations") or task.get("annotations"))


class ProjectClient:
    """One Label Studio project as the jobs see it."""

    def __init__(self, sdk: LabelStudio, project: ProjectRef, conn: redis.Redis | None = None) -> None:
        self.sdk = sdk  # from prelabel.studio.access.connect: allowed origin, no redirects
        self.project = project  # its Redis keys
        self.project_id = project.id  # its Label Studio id
        self.conn = conn  # the task-field writers' lock (studio.task_fields)

    def label_config(self) -> str:
        return plain(self.sdk.projects.get(id=self.project_id))["label_config"]

    def task(self, task_id: int) -> dict[str, Any]:
        """One task (``GET /api/tasks/<id>``): only for tasks that already have a prediction, see
        ``tasks``."""
        return plain(self.sdk.tasks.get(id=str(task_id)))

    def tasks(self, ids: list[int] | None = None) -> Iterator[dict[str, Any]]:
        """Tasks of the project (all, or these ids) with their annotations and predictions, paged.

        Through the Data Manager's list, never ``GET /api/tasks/<id>``: for a task without
        predictions that call makes Label Studio ask the ML backend's ``/predict`` first
        (``show_collab_predictions``, on by default), synchronously, up to its 100 s timeout,
        which would pay for every pre-annotation twice.
        """
        query = None if ids is None else json.dumps({"selectedItems": {"all": False, "included": list(ids)}})
        if ids is not None and not ids:
            return
        for task in self.sdk.tasks.list(project=self.project_id, fields="all", query=query):
            yield plain(task)

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        return [plain(p) for p in self.sdk.predictions.list(task=task_id)]

    def upsert_prediction(
        self, task_id: int, prediction: Prediction | dict[str, Any], same_family: Callable[[str], bool]
    ) -> str:
        """Create the prediction, or update the task's existing one of the same family.

        Returns ``created``, ``updated`` or ``unchanged``. Extra predictions of the same family
        (left by an older version of prelabel or a race) are deleted so exactly one remains.
        """
        existing = [p for p in self.predictions(task_id) if same_family(p.get("model_version") or "")]
        fields = {k: prediction[k] for k in ("result", "score", "model_version")}
        if not existing:
            self.sdk.predictions.create(task=task_id, **fields)
            return "created"
        keep, *extra = sorted(existing, key=lambda p: p["id"])
        for duplicate in extra:
            self.sdk.predictions.delete(id=duplicate["id"])
        if all(keep.get(k) == v for k, v in fields.items()):
            return "unchanged"
        self.sdk.predictions.update(id=keep["id"], **fields)
        return "updated"

    def set_fields(self, task: dict[str, Any], fields: dict[str, Any]) -> bool:
        """``studio.task_fields.update_task_fields`` for this project, under this client's lock."""
        return update_task_fields(self.sdk, self.project, task, fields, self.conn)
