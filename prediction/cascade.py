"""One project's pre-annotator: the active model, its calibrated score, the cost cascade.

``ModelRouter.for_project`` hands ``/predict``, ``/setup`` and the worker's batch job a
``CalibratedCascade``. It asks the active model, replaces each score by the project's calibrated
one (``calibration.py``), and, when the active model record carries a cascade (``prelabel train
promote`` with a cascade threshold), sends the tasks the cheap model was not sure about to the
fallback model:

* cheap first: every task goes to the promoted (cheap) model;
* a task whose answer is not ``ok`` or whose calibrated score is under the threshold goes to the
  fallback model, prompted its own way (its ``prompt_style`` and few-shot count: a fine-tuned cheap
  model's compact prompt would starve it of the guideline), whose answer (also calibrated)
  replaces it; when the fallback fails (LLM outage) a valid cheap answer is kept (route
  ``fallback_failed``, the error in provenance);
* provenance names the model that answered (``meta.provenance.model`` and each region's stamp),
  and ``meta.provenance.cascade`` / the region stamp's ``route`` say which route it took, with
  the cheap model's score; both routes are counted (``prelabel_cascade_routes_total``);
* ``model_version`` is ``<cheap>><fallback>@<prompt>`` for every task of a cascade, so the
  worker's "already pre-annotated" check and its upserts treat both routes as one family.

Before any of this, the project's supervised stage (``stage_router.py``) answers the tasks it
is sure of; only the rest reach the models.

With a near-duplicate threshold set, tasks are grouped first (``near_duplicates.py``): only one
task per group reaches the models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prelabel.contract import (
    CASCADE_STATS_KEY,
    ModelVersion,
    Prediction,
    ProjectRef,
    TaskStatus,
    cascade_model,
    status_of,
    with_status,
)
from prelabel.prediction.calibration import CalibrationMap, calibrate
from prelabel.prediction.fewshot import FewShotPool
from prelabel.prediction.predictor import Predictor, ProjectContext, gather_until
from prelabel.prediction.shared_counters import count
from prelabel.prediction.stage_router import supervised_first

if TYPE_CHECKING:
    from prelabel.prediction.supervised import SupervisedStage

CHEAP, FALLBACK, FALLBACK_FAILED = "cheap", "fallback", "fallback_failed"


class CalibratedCascade:
    """One project's pre-annotator: the supervised stage, then the active model with its calibrated
    score, then (when promoted with a cascade) the fallback model for what it was unsure of."""

    def __init__(self, primary: Predictor, *, project: ProjectRef | None = None,
                 calibration: CalibrationMap | None = None, fallback: Predictor | None = None,
                 fallback_calibration: CalibrationMap | None = None, threshold: float | None = None,
                 stage: SupervisedStage | None = None) -> None:
        self.primary = primary
        self.stage = stage
        self.project = project
        self.calibration = calibration
        self.fallback = fallback if threshold is not None else None
        self.fallback_calibration = fallback_calibration
        self.threshold = threshold

    # The Predictor surface the server and the worker use.
    @property
    def llm(self):
        return self.primary.llm

    @property
    def cache(self):
        return self.primary.cache

    @property
    def settings(self):
        return self.primary.settings

    def context(self, label_config: str, guideline: str | dict | None = None, **kwargs: Any) -> ProjectContext:
        return self.primary.context(label_config, guideline, **kwargs)

    def cached_context(self, label_config: str, guideline: str | dict | None = None) -> ProjectContext | None:
        return self.primary.cached_context(label_config, guideline)

    def model_version(self, ctx: ProjectContext) -> str:
        if self.fallback is None:
            return self.primary.model_version(ctx)
        return ModelVersion(cascade_model(self.primary.llm.model, self.fallback.llm.model), ctx.prompt.version).family

    def timed_out(self, ctx: ProjectContext, reason: str, message: str, started: float) -> Prediction:
        prediction = self.primary.timed_out(ctx, reason, message, started)
        prediction["model_version"] = self.model_version(ctx) + "#error"  # the cascade's family
        return prediction

    async def predict(self, tasks: list[Any], ctx: ProjectContext, pool: FewShotPool | None = None
                      ) -> list[Prediction]:
        threshold = self.settings.near_duplicate_threshold
        if threshold is not None and len(tasks) > 1:
            from prelabel.prediction.near_duplicates import predict_with_reuse

            return await predict_with_reuse(self._predict, tasks, ctx, pool, threshold, self.cache)
        return await self._predict(tasks, ctx, pool)

    async def predict_until(self, tasks: list[Any], ctx: ProjectContext, pool: FewShotPool | None,
                            deadline: float) -> list[Prediction | None]:
        """``predict`` task by task until ``deadline``: the whole route (cheap model, then the
        fallback when needed) must finish in time; the unfinished tasks come back as None."""
        answers = await gather_until([self._predict([task], ctx, pool) for task in tasks], deadline)
        return [answer[0] if answer else None for answer in answers]

    async def _predict(self, tasks: list[Any], ctx: ProjectContext, pool: FewShotPool | None
                       ) -> list[Prediction]:
        """The supervised stage's sure answers, the models' for the rest (``stage_router``)."""
        return await supervised_first(self.stage, tasks, ctx, self.model_version(ctx),
                                      lambda rest: self._ask_models(rest, ctx, pool), self._client, self.project)

    async def _ask_models(self, tasks: list[Any], ctx: ProjectContext, pool: FewShotPool | None
                          ) -> list[Prediction]:
        results = [calibrate(p, self.calibration) for p in await self.primary.predict(tasks, ctx, pool)]
        if self.fallback is None:
            return results
        escalate = [i for i, p in enumerate(results) if not self._confident(p)]
        cheap = {i: (results[i]["score"], results[i]["meta"]["status"]) for i in escalate}
        routes = dict.fromkeys(range(len(results)), CHEAP)
        if escalate:
            own = ctx.styled(self.fallback.settings.prompt_style)  # the fallback's prompt, not the cheap one's
            answers = await self.fallback.predict([tasks[i] for i in escalate], own, pool)
            for i, answer in zip(escalate, answers):
                if answer["meta"]["status"] == TaskStatus.ERROR and results[i]["result"]:
                    # The fallback is down: the cheap model's valid (if unsure) answer is kept.
                    routes[i] = FALLBACK_FAILED
                    results[i]["meta"]["provenance"]["fallback_error"] = answer["meta"]["errors"]
                else:
                    routes[i] = FALLBACK
                    results[i] = calibrate(answer, self.fallback_calibration)
        family = self.model_version(ctx)
        for i, prediction in enumerate(results):
            route = routes[i]
            cheap_score, cheap_status = cheap.get(i, (prediction["score"], prediction["meta"]["status"]))
            record = {"route": route, "threshold": self.threshold, "cheap_model": self.primary.llm.model,
                      "fallback_model": self.fallback.llm.model, "cheap_score": cheap_score,
                      "cheap_status": cheap_status}
            prediction["meta"]["provenance"]["cascade"] = record
            for region in prediction["result"]:
                region.setdefault("prelabel", {})["route"] = route
            prediction["model_version"] = with_status(family, status_of(prediction["model_version"]))
        for route in (CHEAP, FALLBACK, FALLBACK_FAILED):
            await count(self._client, CASCADE_STATS_KEY, route, sum(r == route for r in routes.values()))
        return results

    @property
    def _client(self):
        return self.cache.client if self.cache is not None else None

    def _confident(self, prediction: Prediction) -> bool:
        assert self.threshold is not None
        return prediction["meta"]["status"] == TaskStatus.OK and float(prediction["score"]) >= self.threshold
