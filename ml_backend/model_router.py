"""Which model pre-annotates a project: the configured one, unless a better one was promoted.

Promotion (``prelabel train promote``) writes ``prelabel:active_model:<project>`` (or the global
``prelabel:active_model``) in Redis; from the next request on, that project's tasks go to the
promoted model and its predictions carry its name in ``model_version``. The record is read per
request (one Redis GET), so promotion needs no restart of the backend or the workers.
"""

from __future__ import annotations

import json
from typing import Any

from prelabel.ml_backend.llm_client import LLMClient
from prelabel.ml_backend.predictor import Predictor

ACTIVE_KEY = "prelabel:active_model"  # the record's format: prelabel.train.promote


class ModelRouter:
    def __init__(self, default: Predictor) -> None:
        self.default = default
        self._promoted: dict[tuple[str, str], Predictor] = {}

    async def active_record(self, project: str | None) -> dict[str, Any] | None:
        if self.default.cache is None:
            return None
        for key in ([f"{ACTIVE_KEY}:{project}"] if project else []) + [ACTIVE_KEY]:
            raw = await self.default.cache.client.get(key)
            if raw:
                return json.loads(raw)
        return None

    async def for_project(self, project: str | None) -> Predictor:
        record = await self.active_record(project)
        if not record or not record.get("model"):
            return self.default
        base = self.default.settings
        urls = [record["base_url"]] if record.get("base_url") else base.llm_base_urls
        key = (record["model"], ",".join(urls))
        if key not in self._promoted:
            # a fine-tuned model is prompted as it was trained (prompt style, no few-shot turns)
            served = {k: record[k] for k in ("fewshot_k", "prompt_style") if record.get(k) is not None}
            settings = base.model_copy(update={"llm_model": record["model"], "llm_base_urls": urls, **served})
            self._promoted[key] = Predictor(settings, LLMClient(settings), self.default.cache)
        return self._promoted[key]

    async def aclose(self) -> None:
        for predictor in self._promoted.values():
            await predictor.llm.aclose()
        self._promoted.clear()
