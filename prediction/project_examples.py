"""Few-shot examples from a project's human-labeled tasks, fetched from Label Studio.

Only tasks whose latest annotation is a human one that was not cancelled count; its regions are
turned back into an answer by ``label_config.answers.answer_from_regions``. Predictions never count.
"""

from __future__ import annotations

import logging
from typing import Any

from label_studio_sdk.client import LabelStudio

from prelabel.label_config.answers import answer_from_regions
from prelabel.label_config.schema import OutputSchema, TaskDataError
from prelabel.prediction.prompt import Example
from prelabel.studio.client import plain

log = logging.getLogger(__name__)


def human_annotation(task: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The result of the most recent non-cancelled annotation of a task, if any."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        return None
    latest = max(annotations, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0))
    return latest.get("result") or None


def fetch_labeled_examples(
    client: LabelStudio, project: int | str, schema: OutputSchema, limit: int = 200
) -> list[Example]:
    """Up to ``limit`` examples from the project's human-labeled tasks (blocking: run in a thread).

    ``client`` comes from ``prelabel.studio.access.connect`` (allowed origin, no redirects)."""
    examples: list[Example] = []
    for task in client.tasks.list(project=int(project), fields="all", page_size=100):
        raw = plain(task)
        result = human_annotation(raw)
        if not result:
            continue
        answer = answer_from_regions(schema, result)
        if answer is None:
            continue
        try:
            texts = schema.object_texts(raw.get("data") or {})
        except TaskDataError:
            continue
        examples.append(Example(texts, answer, source=f"task:{raw.get('id')}"))
        if len(examples) >= limit:
            break
    log.info("project %s: %d human-labeled few-shot examples", project, len(examples))
    return examples
