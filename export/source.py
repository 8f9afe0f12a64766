"""Where exported tasks come from: a Label Studio project (paginated, streamed) or an LS export file.

Both yield plain task dicts with ``data``, ``annotations`` and ``predictions`` one at a time, so
memory does not grow with the project.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prelabel.errors import UserError
from prelabel.studio.client import plain


class SourceError(UserError, RuntimeError):
    """The tasks cannot be read (unknown project, bad token, unreadable file): nothing is written."""


def project_info(client: Any, project_id: int) -> dict[str, Any]:
    try:
        return plain(client.projects.get(id=project_id))
    except Exception as exc:  # the SDK raises its own error per status code
        status = getattr(exc, "status_code", None)
        if status == 404:
            raise SourceError(f"Label Studio has no project {project_id}") from None
        if status in (401, 403):
            raise SourceError("Label Studio refused the token (401/403): check LABEL_STUDIO_API_KEY") from None
        raise SourceError(f"cannot read project {project_id}: {type(exc).__name__}") from None


def project_tasks(client: Any, project_id: int, page_size: int = 100) -> Iterator[dict[str, Any]]:
    for task in client.tasks.list(project=project_id, fields="all", page_size=page_size):
        yield plain(task)


def file_tasks(path: Path) -> Iterator[dict[str, Any]]:
    """Tasks from a JSONL file (streamed) or a JSON array (Label Studio's JSON export)."""
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.read(1)
            while first and first.isspace():
                first = handle.read(1)
            if first == "[":
                handle.seek(0)
                yield from json.load(handle)
                return
            handle.seek(0)
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise SourceError(f"{path}:{number}: not JSON: {exc.msg}") from None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
