"""Guideline versions in Redis: stored by content, one active per project, with history and scores.

Every prediction names its instructions in ``model_version`` (``<model>@p-<hash>``). So that such a
name can always be turned back into the exact text the model read, the backend stores each prompt
version it predicts with, and the guideline it came from, under keys derived from their content:

* ``prelabel:guideline:<guideline hash>``  the guideline (JSON), keyed by ``Guideline.hash``
* ``prelabel:prompt:<p-hash>``             the prompt version: system text, input template,
  guideline hash and name, labeling-config hash (few-shot turns vary per task and are not part
  of a version)

A project lead picks the guideline a project uses (``prelabel prompts use``):

* ``prelabel:guideline:active:<project>``   the active version, guideline included, read on every
  ``/setup``, ``/predict`` and worker job (one GET: no restart needed); it wins over the
  guideline named in the backend's extra params
* ``prelabel:guideline:history:<project>``  every activation, oldest first
* ``prelabel:prompt:scores:<project>``      ``<model>@<p-hash>`` -> summary of its last
  ``prelabel prompts eval`` on the project's human-verified tasks

Nothing here expires: versions are small and a prediction may be looked up years later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import redis

from prelabel.contract import (
    ProjectRef,
    active_guideline_key,
    guideline_history_key,
    guideline_key,
    prompt_key,
    prompt_scores_key,
)
from prelabel.errors import UserError
from prelabel.label_config.guideline import Guideline, GuidelineError, parse_guideline


class VersionNotFound(UserError, LookupError):
    """A guideline hash or prompt version this Redis has never seen."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def prompt_writes(*, version: str, system: str, input_template: str, guideline: Guideline, guideline_name: str,
                  config_hash: str) -> dict[str, str]:
    """The keys and values that store one prompt version and its guideline (for ``MSET``, sync or
    async: both are content-addressed, so writing them again changes nothing)."""
    record = {"prompt_version": version, "system": system, "input_template": input_template,
              "guideline_hash": guideline.hash, "guideline_name": guideline_name, "config_hash": config_hash}
    return {
        guideline_key(guideline.hash): guideline.model_dump_json(),
        prompt_key(version): json.dumps(record, ensure_ascii=False),
    }


def prompt_version(conn: redis.Redis, version: str) -> dict[str, Any]:
    """The stored prompt version ``p-<hash>`` (system text, guideline hash, ...)."""
    raw = conn.get(prompt_key(version))
    if raw is None:
        raise VersionNotFound(f"prompt version {version} is not stored here (no prediction was made with it "
                              "through this Redis)")
    return json.loads(raw)


def stored_guideline(conn: redis.Redis, guideline_hash: str) -> Guideline:
    raw = conn.get(guideline_key(guideline_hash))
    if raw is None:
        raise VersionNotFound(f"guideline {guideline_hash} is not stored here")
    return parse_guideline(json.loads(raw), f"stored guideline {guideline_hash}")


def store_guideline(conn: redis.Redis, guideline: Guideline) -> str:
    conn.set(guideline_key(guideline.hash), guideline.model_dump_json())
    return guideline.hash


# --- the active version of a project -----------------------------------------------------------
def decode_active(raw: bytes | str | None) -> dict[str, Any] | None:
    """The active-version record as stored (``None`` when the project has none)."""
    if not raw:
        return None
    record = json.loads(raw)
    return record if isinstance(record.get("guideline"), dict) else None


def active_guideline(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The guideline mapping a context is built from (``Predictor.context`` takes mappings)."""
    return record["guideline"] if record else None


def active(conn: redis.Redis, project: ProjectRef) -> dict[str, Any] | None:
    return decode_active(conn.get(active_guideline_key(project)))


def activate(conn: redis.Redis, project: ProjectRef, guideline: Guideline, *, source: str,
             prompt_version: str) -> dict[str, Any]:
    """Make ``guideline`` the project's active version and append it to the history."""
    if not isinstance(guideline, Guideline):
        raise GuidelineError("activate needs a parsed Guideline")
    record = {"guideline_hash": guideline.hash, "name": guideline.name, "source": source,
              "prompt_version": prompt_version, "set_at": now(), "guideline": guideline.model_dump(mode="json")}
    history = {key: value for key, value in record.items() if key != "guideline"}
    pipe = conn.pipeline()
    pipe.set(guideline_key(guideline.hash), guideline.model_dump_json())
    pipe.set(active_guideline_key(project), json.dumps(record, ensure_ascii=False))
    pipe.rpush(guideline_history_key(project), json.dumps(history, ensure_ascii=False))
    pipe.execute()
    return record


def history(conn: redis.Redis, project: ProjectRef) -> list[dict[str, Any]]:
    return [json.loads(item) for item in conn.lrange(guideline_history_key(project), 0, -1)]


# --- evaluation scores ---------------------------------------------------------------------------
def record_scores(conn: redis.Redis, project: ProjectRef, model_version: str, summary: dict[str, Any]) -> None:
    conn.hset(prompt_scores_key(project), model_version, json.dumps(summary, ensure_ascii=False))


def scores(conn: redis.Redis, project: ProjectRef) -> dict[str, dict[str, Any]]:
    raw = conn.hgetall(prompt_scores_key(project))
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}
