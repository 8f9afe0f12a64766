"""The pre-annotation service: one way from "these tasks of this project" to predictions.

The backend's ``/predict`` and ``/setup``, the worker's pre-annotation job, ``prelabel predict``
and ``prelabel prompts eval`` all go through it, so they cannot drift apart. It owns:

* the guideline precedence (``choose_guideline``: a request's own, else the project's active
  version from ``prelabel prompts use``, else the one ``/setup`` named);
* the model routing (``ModelRouter``: the promoted model, its calibration, the cascade and the
  supervised stage ahead of them);
* the project's context (built on a thread within ``config_build_budget``) and its shared
  few-shot pool (human labels, from Redis);
* the three ways to predict: ``predict`` (all tasks), ``predict_until`` (Label Studio's deadline:
  the rest returned ``late``, for the backend to hand to the worker) and ``predict_interactive``
  (the labeling screen's suggestions);
* recording each task's outcome (``outcomes``), except for interactive suggestions, which Label
  Studio does not store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from prelabel.contract import Prediction, ProjectRef, active_guideline_key
from prelabel.label_config import guideline_store
from prelabel.label_config.guideline import GuidelineError
from prelabel.label_config.schema import ConfigError
from prelabel.prediction.cascade import CalibratedCascade
from prelabel.prediction.deadline import PredictReply, answer_within_deadline
from prelabel.prediction.fewshot import FewShotPool
from prelabel.prediction.fewshot_store import ProjectPools, add_example
from prelabel.prediction.interactive import predict_interactive
from prelabel.prediction.model_router import ModelRouter
from prelabel.prediction.outcomes import record_predictions
from prelabel.prediction.predictor import Predictor, ProjectContext, open_predictor
from prelabel.prediction.project_examples import fetch_labeled_examples
from prelabel.settings import Settings
from prelabel.studio.access import Access

log = logging.getLogger(__name__)

Guideline = str | dict | None
MAX_FETCHES = 4  # background Label Studio fetches (human-labeled examples) at once


class ConfigTooSlow(ConfigError):
    """The labeling config (or guideline) took longer than ``config_build_budget`` to build."""


def choose_guideline(requested: Guideline, active: Guideline, configured: Guideline) -> Guideline:
    """The guideline a project's predictions use: the request's own (``params.guideline``), else the
    project's active version (``prelabel prompts use``: switching needs no restart), else the one
    ``/setup`` named. The one place this rule is written."""
    return requested or active or configured


@dataclass
class Batch:
    """What one batch of a project's tasks is predicted with."""

    project: ProjectRef | None
    predictor: CalibratedCascade | Predictor  # the routed cascade; the plain predictor when not routed
    context: ProjectContext
    pool: FewShotPool | None

    @property
    def model_version(self) -> str:
        return self.predictor.model_version(self.context)


class PreannotationService:
    """Routes, builds the context and pool, predicts and records for any caller."""

    def __init__(self, settings: Settings, default: Predictor, *, conn: redis.Redis | None = None) -> None:
        self.settings = settings
        self.default = default
        self.conn = conn  # sync Redis: outcomes and hand-off markers (None: nothing recorded, no deadline)
        self.router = ModelRouter(default)
        self.pools = ProjectPools()  # human-labeled few-shot examples, shared with the workers via Redis
        # Configs are parsed on their own threads: never queued behind slow Label Studio calls.
        self._builder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prelabel-config")
        self._fetching: set[ProjectRef] = set()  # projects whose human examples are being fetched

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, *, conn: redis.Redis | None = None,
                   predictor: Predictor | None = None) -> AsyncIterator[PreannotationService]:
        """A service over ``predictor`` (used, not closed) or one it opens (and closes) itself."""
        opened = nullcontext(predictor) if predictor is not None else open_predictor(settings)
        async with opened as default:
            service = cls(settings, default, conn=conn)
            try:
                yield service
            finally:
                await service.aclose()

    async def aclose(self) -> None:
        self._builder.shutdown(wait=False, cancel_futures=True)
        await self.router.aclose()

    @property
    def redis(self) -> Any:
        """The async Redis client of the prediction cache (None without one)."""
        return self.default.cache.client if self.default.cache is not None else None

    # --- what a batch is predicted with ----------------------------------------------------
    async def active_guideline(self, project: ProjectRef | None) -> dict[str, Any] | None:
        """The project's active guideline version, read per call; None when there is none or Redis
        does not answer (then the configured one is used, logged)."""
        if project is None or self.redis is None:
            return None
        try:
            raw = await self.redis.get(active_guideline_key(project))
        except RedisError as exc:
            log.error("project %s: active guideline unknown (%s); using the configured one",
                      project, type(exc).__name__)
            return None
        return guideline_store.active_guideline(guideline_store.decode_active(raw))

    async def guideline(self, project: ProjectRef | None, requested: Guideline = None,
                        configured: Guideline = None) -> Guideline:
        return choose_guideline(requested, await self.active_guideline(project), configured)

    async def cascade(self, project: ProjectRef | None) -> CalibratedCascade:
        return await self.router.for_project(project)

    async def context(self, predictor: CalibratedCascade | Predictor, label_config: str, guideline: Guideline, *,
                      allow_path: bool = False) -> ProjectContext:
        """The config's context; built on a thread (a large config must not stall the caller's loop).

        Whatever a config or guideline makes the builder raise is the caller's fault: a
        ``ConfigError`` naming the exception's kind (a traceback in the log for the operator).
        """
        cached = predictor.cached_context(label_config, guideline)
        if cached is not None:
            return cached
        build = asyncio.get_running_loop().run_in_executor(
            self._builder, lambda: predictor.context(label_config, guideline, allow_path=allow_path))
        try:
            return await asyncio.wait_for(build, self.settings.config_build_budget)
        except (ConfigError, GuidelineError):
            raise
        except TimeoutError:
            raise ConfigTooSlow(f"labeling config took over {self.settings.config_build_budget} s to build") from None
        except Exception as exc:
            log.exception("labeling config or guideline could not be used")
            raise ConfigError(f"labeling config or guideline could not be used ({type(exc).__name__})") from None

    async def prepare(self, project: ProjectRef | None, label_config: str, guideline: Guideline, *,
                      allow_path: bool = False, routed: bool = True) -> Batch:
        """The project's routed predictor, context and few-shot pool. ``routed=False``: the
        configured model as it is, no promoted model, calibration or stage (``prelabel predict``
        and ``prompts eval`` judge exactly the model they name)."""
        predictor: CalibratedCascade | Predictor = await self.cascade(project) if routed else self.default
        context = await self.context(predictor, label_config, guideline, allow_path=allow_path)
        pool = await self.pools.pool(self.redis, project, context)
        return Batch(project, predictor, context, pool)

    # --- predicting ------------------------------------------------------------------------
    async def predict(self, batch: Batch, tasks: list[Any], *, record: bool = True) -> list[Prediction]:
        """Every task's prediction (recorded unless ``record`` is False: a caller that writes them
        itself records what it wrote, ``record``)."""
        predictions = await batch.predictor.predict(tasks, batch.context, batch.pool)
        if record:
            await self.record(batch.project, tasks, predictions)
        return predictions

    async def predict_until(self, batch: Batch, tasks: list[Any], deadline: float) -> PredictReply:
        """What is ready by ``deadline`` (event-loop time); the rest comes back ``late``, for the
        caller to hand to the worker. Tasks that cannot be handed off (no Label Studio ids, no
        Redis) are all predicted."""
        reply = None
        if self.conn is not None and batch.project is not None:
            reply = await answer_within_deadline(batch.predictor, tasks, batch.context, batch.pool, conn=self.conn,
                                                 project=batch.project, deadline=deadline)
        if reply is None:
            reply = PredictReply(await batch.predictor.predict(tasks, batch.context, batch.pool))
        await self.record(batch.project, tasks, reply.results)
        return reply

    async def predict_interactive(self, batch: Batch, tasks: list[Any], screen: Any, budget_s: float
                                  ) -> list[Prediction]:
        """Suggestions for the labeling screen shaped by its ``context``; never recorded (Label
        Studio does not store them)."""
        return await predict_interactive(batch.predictor, tasks, batch.context, screen, batch.pool, budget_s)

    async def record(self, project: ProjectRef | None, tasks: list[Any], predictions: list[Any]) -> None:
        """Each task's outcome (why it was left for a human, when it was), best effort."""
        if self.conn is not None:
            await asyncio.to_thread(record_predictions, self.conn, project, tasks, predictions)

    # --- the few-shot pool's human examples --------------------------------------------------
    def may_fetch(self, project: ProjectRef) -> bool:
        """At most ``MAX_FETCHES`` example fetches at once, one per project: a flood of /setup calls
        while Label Studio is slow must not queue unbounded work (and keep evicted configs alive).
        Label Studio repeats /setup before every prediction run, so a skipped fetch comes again.
        A True answer must be followed by ``load_human_examples`` (which releases it)."""
        if project in self._fetching or len(self._fetching) >= MAX_FETCHES:
            log.info("project %s: human-labeled examples not fetched now (%d fetches running)",
                     project, len(self._fetching))
            return False
        self._fetching.add(project)
        return True

    async def load_human_examples(self, project: ProjectRef, context: ProjectContext, access: Access) -> None:
        """Put the project's human-labeled tasks into its shared few-shot pool (best effort, logged)."""
        try:
            examples = await asyncio.to_thread(lambda: fetch_labeled_examples(
                access.client(), project.id, context.schema, self.settings.fewshot_pool_max))
            for example in examples:
                await asyncio.to_thread(add_example, self.conn, project, int(example.source.split(":")[1]),
                                        example.texts, example.answer, self.settings.fewshot_pool_max)
        except Exception as exc:  # LS unreachable, bad token, a redirect, ...: predictions go on without them
            log.warning("project %s: could not load human-labeled examples: %s", project, type(exc).__name__)
        finally:
            self._fetching.discard(project)
