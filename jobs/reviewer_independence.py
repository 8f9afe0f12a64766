"""Is the reviewer independent of the pre-annotator? Another model or endpoint, and other weights."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from prelabel.contract import REVIEWER_INDEPENDENCE_KEY
from prelabel.prediction.model_identity import SAME, compare, identify
from prelabel.settings import Settings, reviewer_settings

log = logging.getLogger(__name__)


def check_reviewer(settings: Settings) -> None:
    """The reviewer must be a different model or a different endpoint than the pre-annotator."""
    reviewer = reviewer_settings(settings)
    if reviewer.llm_model == settings.llm_model and reviewer.llm_base_urls == settings.llm_base_urls:
        raise ValueError(
            "the reviewer must differ from the pre-annotator: set PRELABEL_REVIEWER_MODEL and/or "
            "PRELABEL_REVIEWER_BASE_URLS"
        )


def reviewer_independence(settings: Settings, conn: redis.Redis) -> dict[str, Any]:
    """Do the two servers serve different weights? Asked of the servers (``model_identity``),
    remembered in Redis for an hour; with ``reviewer_require_different_weights`` a reviewer that
    is the same weights under another name stops the review job with that reason."""
    reviewer = reviewer_settings(settings)
    raw = conn.get(REVIEWER_INDEPENDENCE_KEY)
    found = json.loads(raw) if raw else None
    pair = [settings.llm_model, settings.llm_base_urls[0], reviewer.llm_model, reviewer.llm_base_urls[0]]
    if found is None or found.get("pair") != pair:
        ours = identify(settings.llm_base_urls[0], settings.llm_api_keys[0].get_secret_value(), settings.llm_model)
        theirs = identify(reviewer.llm_base_urls[0], reviewer.llm_api_keys[0].get_secret_value(), reviewer.llm_model)
        verdict, evidence = compare(ours, theirs)
        found = {"pair": pair, "verdict": verdict, "evidence": evidence, "time": _now(),
                 "pre_annotator": ours.as_dict() | {"probe": None}, "reviewer": theirs.as_dict() | {"probe": None}}
        conn.set(REVIEWER_INDEPENDENCE_KEY, json.dumps(found), ex=3600)
        (log.warning if verdict == SAME else log.info)("reviewer independence: %s: %s", verdict, evidence)
    if found["verdict"] == SAME and settings.reviewer_require_different_weights:
        raise ValueError(f"the reviewer is not an independent model: {found['evidence']}")
    return found




def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
