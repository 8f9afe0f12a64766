"""Which model pre-annotates a project: the configured one, unless a better one was promoted.

Promotion (``prelabel train promote``) writes ``prelabel:active_model:<tenant>:<project>`` (or the global
``prelabel:active_model``) in Redis; from the next request on, that project's tasks go to the
promoted model and its predictions carry its name in ``model_version``. When the record carries
a ``cascade`` (threshold, fallback model and URL), the promoted model answers first and the
fallback model takes what it was unsure about (``cascade.py``). Ahead of both, the project's
supervised stage answers the tasks it is sure of, when the worker has fitted and routed one
(``stage_router.py``). The record and the project's
calibration maps are read per request (a few Redis GETs), so promotion and recalibration need no
restart of the backend or the workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prelabel.contract import ActiveModel, ProjectRef, active_model_keys, parse_active_model
from prelabel.prediction.calibration import load_calibration
from prelabel.prediction.cascade import CalibratedCascade
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.predictor import Predictor
from prelabel.prediction.stage_router import load_stage


def served_prompt(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """How a promoted model is prompted: ``prompt_style`` and ``fewshot_k`` of its record (the
    cascade's fallback: ``fallback_prompt_style``, ``fallback_fewshot_k``); absent = the settings'."""
    return {key: record[prefix + key] for key in ("fewshot_k", "prompt_style") if record.get(prefix + key) is not None}


class ModelRouter:
    def __init__(self, default: Predictor) -> None:
        self.default = default
        self._promoted: dict[tuple[str, str, tuple], Predictor] = {}

    async def active_record(self, project: ProjectRef | None) -> ActiveModel | None:
        if self.default.cache is None:
            return None
        for key in active_model_keys(project):  # written by prelabel.train.promote
            raw = await self.default.cache.client.get(key)
            if raw:
                return parse_active_model(raw)
        return None

    def _predictor(self, model: str | None, base_url: str | None,
                   served: dict[str, Any] | None = None) -> Predictor:
        """The default predictor, or one for another model/URL (made once, then reused).
        ``served`` overrides prompt settings: a fine-tuned model is prompted as it was trained
        (``prompt_style``, ``fewshot_k`` from its promotion record)."""
        base = self.default.settings
        urls = [base_url] if base_url else base.llm_base_urls
        served = {k: v for k, v in (served or {}).items() if getattr(base, k) != v}
        if not model or (model == base.llm_model and urls == base.llm_base_urls and not served):
            return self.default
        key = (model, ",".join(urls), tuple(sorted(served.items())))
        if key not in self._promoted:
            settings = base.model_copy(update={"llm_model": model, "llm_base_urls": urls, **served})
            self._promoted[key] = Predictor(settings, LLMClient(settings), self.default.cache)
        return self._promoted[key]

    async def for_project(self, project: ProjectRef | None) -> CalibratedCascade:
        record: Mapping[str, Any] = await self.active_record(project) or {}
        primary = self._predictor(record.get("model"), record.get("base_url"), served_prompt(record))
        client = self.default.cache.client if self.default.cache is not None else None
        calibration = await load_calibration(client, project, primary.llm.model)
        stage = await load_stage(client, project)
        cascade = record.get("cascade") or {}
        if cascade.get("threshold") is None or not record.get("model"):
            return CalibratedCascade(primary, project=project, calibration=calibration, stage=stage)
        fallback = self._predictor(cascade.get("fallback_model"), cascade.get("fallback_base_url"),
                                   served_prompt(cascade, "fallback_"))
        if fallback is primary:
            return CalibratedCascade(primary, project=project, calibration=calibration, stage=stage)
        return CalibratedCascade(primary, project=project, calibration=calibration, fallback=fallback,
                                fallback_calibration=await load_calibration(client, project, fallback.llm.model),
                                threshold=float(cascade["threshold"]), stage=stage)

    async def aclose(self) -> None:
        for predictor in self._promoted.values():
            await predictor.llm.aclose()
        self._promoted.clear()
