"""Bounded work per request: what one request may ask of the backend, checked before the work starts.

A labeling config is built into prompts and schemas (seconds for thousands of controls), a webhook's
task ids become jobs, a large body is parsed: each is capped by a setting (README, "Bounded work per
request"), and past a cap the request gets a 413 with its own reason, counted in
``prelabel_bad_requests_total`` like every rejection. The checks here are cheap (a regular
expression over the config, a list length) so they cost less than what they guard.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from prelabel.errors import PrelabelError
from prelabel.label_config.schema import LS_CONTROL_TAGS
from prelabel.settings import Settings

# An opening tag of any Label Studio control (case-insensitive, like the tags themselves).
_CONTROL = re.compile(r"<\s*(" + "|".join(sorted(LS_CONTROL_TAGS.values(), key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)
# Entity expansion and external entities: a labeling config never needs them (schema.build_schema).
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
ID_LISTS = ("tasks", "annotations")  # the webhook fields that name many objects


class LimitError(PrelabelError):
    """A request past one of the caps: answered with ``status`` and ``reason``."""

    def __init__(self, reason: str, message: str, status: int = 413) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.message = message


def check_config(config: str, settings: Settings) -> None:
    """Refuse a config too large or with too many controls to build, or one declaring a DTD."""
    size = len(config.encode("utf-8", "surrogatepass"))
    if size > settings.max_config_bytes:
        raise LimitError("config_too_large", f"labeling config of {size} bytes > max_config_bytes="
                                             f"{settings.max_config_bytes}")
    if _DTD.search(config):
        raise LimitError("bad_config", "a labeling config may not declare a DTD or entities (<!DOCTYPE>, <!ENTITY>)",
                         status=422)
    controls = sum(1 for _ in _CONTROL.finditer(config))
    if controls > settings.max_controls:
        raise LimitError("too_many_controls", f"labeling config has {controls} control tags > max_controls="
                                              f"{settings.max_controls}")


def check_guideline(guideline: object, settings: Settings) -> None:
    """Refuse an inline guideline larger than ``max_guideline_bytes``: it is stored with the project."""
    if isinstance(guideline, dict):
        size = len(orjson.dumps(guideline, option=orjson.OPT_NON_STR_KEYS))
        if size > settings.max_guideline_bytes:
            raise LimitError("guideline_too_large", f"inline guideline of {size} bytes > max_guideline_bytes="
                                                    f"{settings.max_guideline_bytes}")


def check_webhook(body: Any, settings: Settings) -> None:
    """Refuse a webhook naming more objects than ``max_webhook_task_ids`` before any is read."""
    if not isinstance(body, dict):
        return
    for key in ID_LISTS:
        items = body.get(key)
        if isinstance(items, list) and len(items) > settings.max_webhook_task_ids:
            raise LimitError("too_many_task_ids", f"webhook names {len(items)} {key} > max_webhook_task_ids="
                                                  f"{settings.max_webhook_task_ids}")
    project = body.get("project")
    config = project.get("label_config") if isinstance(project, dict) else None
    if isinstance(config, str):
        check_config(config, settings)
