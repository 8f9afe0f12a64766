"""The Label Studio ML backend protocol over HTTP (wire-compatible with label-studio-ml 2.x).

``GET /health``, ``POST /setup``, ``POST /predict``, ``POST /webhook``, ``GET /metrics``.
Every rejected request gets a JSON error with a reason, is counted, and leaves the server
serving (``protocol.py``). Bodies are read with a size cap (413), optional HTTP basic auth guards
everything (``auth.py``). Which project a request is about: ``projects.py``; webhooks are taken
in by ``webhook.py``. What a request asks for is done elsewhere: predictions by the pre-annotation
service (``prediction.service``), webhook events by the worker (``jobs``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import orjson
import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from prelabel import __version__
from prelabel.contract import ProjectRecord, ProjectRef
from prelabel.jobs import handoff
from prelabel.jobs.aftercare import queue_aftercare
from prelabel.jobs.queue import connection
from prelabel.jobs.status import QUEUE_COLLECTOR
from prelabel.jobs.worker_stats import WORKER_COUNTERS
from prelabel.label_config.guideline import guideline_ref
from prelabel.migrate import migrate_tenancy
from prelabel.ml_backend import auth, protocol
from prelabel.ml_backend.limits import check_config, check_guideline
from prelabel.ml_backend.projects import ProjectStore
from prelabel.ml_backend.webhook import WebhookReceiver
from prelabel.ml_backend.wiring import WebhookWirer
from prelabel.prediction import metrics
from prelabel.prediction.deadline import loop_time
from prelabel.prediction.fewshot_store import pool_size
from prelabel.prediction.predictor import Predictor
from prelabel.prediction.service import PreannotationService
from prelabel.prediction.shared_counters import SHARED_COUNTERS
from prelabel.prediction.stage_router import STAGE_COLLECTOR
from prelabel.settings import Settings, get_settings
from prelabel.studio import webhook_wiring
from prelabel.studio.access import AccessRefused
from prelabel.studio.tenancy import Tenants, access_for

log = logging.getLogger(__name__)


class Backend:
    """Request handlers over one ``PreannotationService``; what ``/setup`` said per project."""

    def __init__(self, settings: Settings, predictor: Predictor | None = None) -> None:
        self.settings = settings
        self._given = predictor  # a caller's predictor (in-process tests): used, not closed, by the server
        tenants = Tenants(settings)  # which Label Studio a project stamp belongs to
        self.projects = ProjectStore(settings, tenants)
        self.webhooks = WebhookReceiver(settings, tenants)
        self.service: PreannotationService | None = None
        self.jobs_conn: redis.Redis | None = None
        self.wirer = WebhookWirer(settings)
        self._tasks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.jobs_conn = conn = connection(self.settings)
        await self._migrate(conn)
        async with PreannotationService.open(self.settings, conn=conn, predictor=self._given) as service:
            self.service = service
            QUEUE_COLLECTOR.conn = SHARED_COUNTERS.conn = WORKER_COUNTERS.conn = STAGE_COLLECTOR.conn = conn
            webhook_wiring.WIRING_COLLECTOR.conn = conn
            # Everything loaded so far lives as long as the server: keep it out of the GC's
            # generations so collections stay short under load (fewer latency spikes).
            gc.collect()
            gc.freeze()
            log.info("prelabel backend ready: model=%s endpoints=%d",
                     service.default.llm.model, len(self.settings.llm_base_urls))
            if not auth.webhook_auth_configured(self.settings):
                log.warning("webhooks are refused until PRELABEL_WEBHOOK_SECRET (or basic auth) is set")
            try:
                yield
            finally:
                QUEUE_COLLECTOR.conn = SHARED_COUNTERS.conn = WORKER_COUNTERS.conn = STAGE_COLLECTOR.conn = None
                webhook_wiring.WIRING_COLLECTOR.conn = None
                conn.close()

    async def _migrate(self, conn: redis.Redis) -> None:
        """Keys of an older version moved before the first request reads them (``prelabel.migrate``);
        Redis away at start: logged, the worker (or ``prelabel migrate``) does it later."""
        try:
            await asyncio.to_thread(migrate_tenancy, conn, self.settings)
        except RedisError as exc:
            log.error("Redis keys of an older version not migrated (%s): run `prelabel migrate`", type(exc).__name__)

    @property
    def predictor(self) -> Predictor | None:
        """The default predictor the service routes from (in-process tests check it)."""
        return self.service.default if self.service is not None else None

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {"status": "UP", "model_class": "prelabel", "version": __version__, "model": self.settings.llm_model}
        )

    async def setup(self, request: Request) -> Response:
        raw = await protocol.read_json(request, self.settings.max_request_bytes)
        body = protocol.SetupRequest.model_validate(raw)
        raw_pid = protocol.project_id(body.project)
        guideline = guideline_ref(protocol.extra_params(body.extra_params).get("guideline"))
        check_guideline(guideline, self.settings)
        assert self.service is not None
        pid = None if raw_pid is None else await self.projects.ref_at_setup(
            self.jobs_conn, int(raw_pid), protocol.project_stamp(body.project), body.hostname)
        predictor = await self.service.cascade(pid)
        context = None
        if body.schema_:
            check_config(body.schema_, self.settings)
            context = await self.service.context(predictor, body.schema_,
                                                 await self.service.guideline(pid, configured=guideline))
        if pid is not None:
            token = body.access_token.get_secret_value() if body.access_token else None
            record = ProjectRecord(guideline, body.hostname, token, body.schema_)
            await self.projects.remember(self.service.redis, pid, record)
            self._ensure_wired(pid, record)
            wants_examples = context is not None and self.settings.fewshot_k > 0
            if wants_examples or body.hostname:  # a refused hostname is counted and logged now, fetch or not
                try:
                    access = access_for(self.settings, pid, record.hostname, record.access_token)
                except AccessRefused as exc:
                    log.info("project %s: human-labeled examples not loaded: %s", pid, exc)
                else:
                    if context is not None and wants_examples and self.service.may_fetch(pid):
                        self._background(self.service.load_human_examples(pid, context, access))
        version = predictor.model_version(context) if context else predictor.llm.model
        return JSONResponse({"model_version": version})

    def _ensure_wired(self, pid: ProjectRef, record: ProjectRecord) -> None:
        """The project's webhook wired in the background (``wiring.WebhookWirer``)."""
        if self.jobs_conn is not None and self.wirer.claim(pid):
            self._background(self.wirer.wire(self.jobs_conn, pid, record))

    def _background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def project_info(self, request: Request) -> Response:
        """What the backend knows about a project (no secrets): for operators and tests."""
        try:
            pid = await self.projects.ref_of(self.jobs_conn, request.path_params["pid"])
        except protocol.RequestError:
            pid = None
        record = self.projects.memory.get(pid) if pid else None
        if pid is None or record is None:
            return JSONResponse({"error": "unknown project", "reason": "unknown_project"}, status_code=404)
        examples = await run_in_threadpool(pool_size, self.jobs_conn, pid)
        return JSONResponse({"project": str(pid.id), "has_config": bool(record.label_config),
                             "human_examples": examples})

    async def predict(self, request: Request) -> Response:
        started = time.perf_counter()
        arrived = loop_time()
        raw = await protocol.read_json(request, self.settings.max_request_bytes)
        body = protocol.PredictRequest.model_validate(raw)
        most = self.settings.max_tasks_per_request
        if len(body.tasks) > most:
            raise protocol.RequestError(413, "too_many_tasks",
                                        f"{len(body.tasks)} tasks > max_tasks_per_request={most}")
        pid = await self.projects.ref_of(self.jobs_conn, body.project)
        assert self.service is not None
        record = await self.projects.get(self.service.redis, pid)
        if pid is not None and record is not None:  # a backend restarted since /setup wires on its first request
            self._ensure_wired(pid, record)
        config = body.label_config or (record.label_config if record else None)
        if not config:
            raise protocol.RequestError(422, "no_label_config",
                                        "no label_config in the request and no /setup for this project")
        params = body.params or {}
        guideline = await self.service.guideline(pid, requested=guideline_ref(params.get("guideline")),
                                                 configured=guideline_ref(record.guideline if record else None))
        check_guideline(guideline, self.settings)
        check_config(config, self.settings)
        batch = await self.service.prepare(pid, config, guideline)
        screen = params.get("context")  # set only by the labeling screen (interactive)
        pending: list[int] = []
        if screen is not None:  # a suggestion Label Studio does not store: no hand-off, nothing recorded
            results: list[Any] = await self.service.predict_interactive(batch, body.tasks, screen,
                                                                        self._interactive_budget(arrived))
        elif record is not None:  # a Label Studio project: mind its deadline, review and rank what it stores
            deadline = arrived + self.settings.predict_timeout - self.settings.predict_margin
            reply = await self.service.predict_until(batch, body.tasks, deadline)
            results, pending = reply.results, reply.pending
            if reply.late and pid is not None:
                await self._hand_off(pid, reply.late, config, len(body.tasks))
            self._background(self._queue_aftercare(pid, body.tasks, results))
        else:
            results = await self.service.predict(batch, body.tasks)
        metrics.PREDICT_LATENCY.observe(time.perf_counter() - started)
        return Response(orjson.dumps({"results": results, "model_version": batch.model_version, "pending": pending}),
                        media_type="application/json")

    async def _hand_off(self, pid: ProjectRef, late: list[int], config: str, total: int) -> None:
        """The tasks ``/predict`` had no time for, to the worker (which writes their predictions)."""
        assert self.jobs_conn is not None  # set by the lifespan before the first request
        queued = await run_in_threadpool(handoff.hand_off, self.jobs_conn, self.settings, pid, late, config)
        metrics.PREDICT_HANDOFF.inc(len(queued))
        log.info("/predict for project %s: %d of %d tasks not answered in time, handed to the worker",
                 pid, len(late), total)

    async def _queue_aftercare(self, pid: ProjectRef | None, tasks: list[Any], results: list[Any]) -> None:
        """Review and ranking of what ``/predict`` answered, queued after the answer went out."""
        try:
            queued = await asyncio.to_thread(queue_aftercare, self.jobs_conn, self.settings, pid, tasks, results)
        except RedisError as exc:  # the reconcile scan finds the tasks left unreviewed
            log.error("project %s: review of /predict's answers not queued: %s", pid, type(exc).__name__)
            return
        if queued:
            metrics.AFTERCARE_QUEUED.inc(len(queued))

    def _interactive_budget(self, arrived: float) -> float:
        """Seconds an interactive request may still take: its own budget, but never past Label
        Studio's deadline for this request (a late answer would be an error on the screen)."""
        left = arrived + self.settings.predict_timeout - self.settings.predict_margin - loop_time()
        return max(0.0, min(self.settings.interactive_budget, left))

    async def webhook(self, request: Request) -> Response:
        assert self.jobs_conn is not None  # set by the lifespan before the first request
        return await self.webhooks.receive(request, self.jobs_conn)

    async def metrics(self, request: Request) -> Response:
        """The metrics, gathered on a thread: the queue collectors ask Redis, which may be stalled
        (each call then fails after ``redis_timeout``; ``prelabel_queue_up`` says 0)."""
        return Response(await run_in_threadpool(generate_latest), media_type=CONTENT_TYPE_LATEST)

    async def load(self, request: Request) -> Response:
        """Each LLM client's adaptive limits, queueing and retry budget, and each project's webhook
        wiring state (``prelabel status``)."""
        webhooks: dict[str, Any] = {}
        if self.jobs_conn is not None:
            try:
                found = await run_in_threadpool(webhook_wiring.load_all, self.jobs_conn)
                webhooks = {self.projects.tenants.shown(key): asdict(state) for key, state in found.items()}
            except RedisError:
                webhooks = {}
        return JSONResponse({"llm": [client.load_snapshot() for client in metrics.LOAD_COLLECTOR.clients],
                             "webhooks": webhooks})


def create_app(settings: Settings | None = None, predictor: Predictor | None = None) -> Starlette:
    """The backend's ASGI app; ``predictor`` replaces the one it would open (and close) itself, so
    tests run the whole app in-process (``TestClient(create_app(settings, predictor=...))``)."""
    settings = settings or get_settings()
    backend = Backend(settings, predictor)
    middleware = [Middleware(auth.SingleAuthHeaders)]
    if settings.basic_auth_user and settings.basic_auth_password:
        middleware.append(Middleware(auth.BasicAuthMiddleware, user=settings.basic_auth_user,
                                     password=settings.basic_auth_password.get_secret_value()))
    app = Starlette(
        routes=[
            Route("/health", backend.health, methods=["GET"]),
            Route("/", backend.health, methods=["GET"]),
            Route("/setup", backend.setup, methods=["POST"]),
            Route("/predict", backend.predict, methods=["POST"]),
            Route("/webhook", backend.webhook, methods=["POST"]),
            Route("/metrics", backend.metrics, methods=["GET"]),
            Route("/load", backend.load, methods=["GET"]),
            Route("/projects/{pid}", backend.project_info, methods=["GET"]),
        ],
        middleware=middleware,
        lifespan=backend.lifespan,
        exception_handlers={HTTPException: protocol.http_error, RedisError: protocol.redis_unavailable,
                            **dict.fromkeys(protocol.REJECTED, protocol.rejected)},
    )
    app.state.backend = backend
    return app
