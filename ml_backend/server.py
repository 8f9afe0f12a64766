"""The Label Studio ML backend protocol over HTTP (wire-compatible with label-studio-ml 2.x).

``GET /health``, ``POST /setup``, ``POST /predict``, ``POST /webhook``, ``GET /metrics``.
Every rejected request gets a JSON error with a reason, is counted, and leaves the server
serving. Bodies are read with a size cap (413), optional HTTP basic auth guards everything
(Label Studio sends it for backend URLs like ``http://user:pass@host:port``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import gc
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import orjson
import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, Strict, ValidationError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from prelabel import __version__
from prelabel.contract import WEBHOOK_HEADER, ProjectRef, active_guideline_key, project_key
from prelabel.errors import PrelabelError
from prelabel.jobs.aftercare import queue_aftercare
from prelabel.jobs.events import Event, EventError, parse_event
from prelabel.jobs.outcomes import record_predictions
from prelabel.jobs.projects import ProjectRecord
from prelabel.jobs.queue import Enqueued, connection, enqueue_event
from prelabel.jobs.status import QUEUE_COLLECTOR
from prelabel.jobs.worker_stats import WORKER_COUNTERS
from prelabel.label_config import guideline_store
from prelabel.label_config.guideline import GuidelineError, guideline_ref
from prelabel.label_config.schema import ConfigError
from prelabel.lru import LRU, Once
from prelabel.migrate import migrate_tenancy
from prelabel.ml_backend.deadline import Answer, answer_within_deadline, loop_time
from prelabel.ml_backend.limits import LimitError, check_config, check_guideline, check_webhook
from prelabel.prediction import metrics
from prelabel.prediction.cascade import ProjectPredictor
from prelabel.prediction.fewshot_store import ProjectPools, add_example, pool_size
from prelabel.prediction.interactive import predict_interactive
from prelabel.prediction.model_router import ModelRouter
from prelabel.prediction.predictor import Predictor, ProjectContext, open_predictor
from prelabel.prediction.project_examples import fetch_labeled_examples
from prelabel.prediction.stage_router import STAGE_COLLECTOR
from prelabel.prediction.stats import SHARED_COUNTERS
from prelabel.settings import Settings, get_settings
from prelabel.studio import webhook_wiring
from prelabel.studio.access import Access, AccessRefused, origin_of
from prelabel.studio.tenancy import Tenants, access_for

log = logging.getLogger(__name__)

MAX_FETCHES = 4  # background Label Studio fetches (few-shot examples) at once
_unwired_logged = Once(1024)  # (project, reason) whose "webhook not wired" warning was logged
INLINE_PARSE_BYTES = 256 * 1024  # larger JSON bodies are parsed off the event loop


class RequestError(PrelabelError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


# A project is what Label Studio sends: a string ("12.1795520286") or an int, never a bool or float.
ProjectField = Annotated[str, Strict()] | Annotated[int, Strict()] | None


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: ProjectField = None
    schema_: str | None = Field(None, alias="schema")
    hostname: str | None = None
    access_token: SecretStr | None = None
    extra_params: dict[str, Any] | str | None = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[Any]
    project: ProjectField = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


@dataclass
class ProjectState:
    """What ``/setup`` told us about a project (shared with the worker through Redis)."""

    label_config: str | None
    guideline: str | dict | None
    hostname: str | None
    access_token: SecretStr | None

    def size(self) -> int:
        """Roughly the bytes it holds (the project cache is sized in bytes: a config may be 1 MB)."""
        guideline = orjson.dumps(self.guideline, option=orjson.OPT_NON_STR_KEYS) if self.guideline else b""
        return len(self.label_config or "") + len(guideline) + len(self.hostname or "") + 256


_PROJECT = re.compile(r"([0-9]{1,18})(?:\.([0-9]{1,20}))?")


def project_stamp(raw: str | int | None) -> str | None:
    """Label Studio's ``"<id>.<created_at>"`` of a project (``studio.tenancy``: which instance it is
    on), normalised; None without a timestamp. Call after ``project_id`` accepted ``raw``."""
    match = _PROJECT.fullmatch(raw) if isinstance(raw, str) else None
    return f"{int(match.group(1))}.{int(match.group(2))}" if match and match.group(2) else None


def project_id(raw: str | int | None) -> str | None:
    """Label Studio sends ``"<id>.<timestamp>"``; the id part names the project.

    Anything but that shape (``""``, ``".x"``, ``"5\\nforged"``, ``-1``) is a 422: an empty key
    would let later requests without a project silently use another one's config.
    """
    if raw is None:
        return None
    match = _PROJECT.fullmatch(str(raw)) if isinstance(raw, str | int) and not isinstance(raw, bool) else None
    if match is None:
        shown = str(raw)[:40]
        raise RequestError(422, "bad_project", f"project must be '<id>' or '<id>.<timestamp>' (digits), got {shown!r}")
    return str(int(match.group(1)))


def _extra_params(raw: dict[str, Any] | str | None) -> dict[str, Any]:
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(400, "bad_extra_params", f"extra_params is not JSON: {exc}") from None
        raw = parsed
    return raw if isinstance(raw, dict) else {}


AUTH_HEADERS = (b"authorization", WEBHOOK_HEADER.lower().encode())


class SingleAuthHeaders:
    """Refuse a request that carries an auth header twice (400 ``duplicate_header``).

    Which copy counts differs between servers and proxies (here the last would win, a proxy may
    check the first): a request that could mean two callers is not guessed at.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = [name.lower() for name, _ in scope["headers"] if name.lower() in AUTH_HEADERS]
            if len(names) != len(set(names)):
                metrics.BAD_REQUESTS.labels("auth", "duplicate_header").inc()
                shown = ", ".join(sorted({n.decode() for n in names if names.count(n) > 1}))
                response = JSONResponse({"error": f"header sent more than once: {shown}",
                                         "reason": "duplicate_header"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BasicAuthMiddleware:
    """Reject requests without the configured basic-auth credentials (constant-time compare)."""

    def __init__(self, app: ASGIApp, user: str, password: str) -> None:
        self.app = app
        self.expected = basic_header(user, password)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/webhook":  # /webhook checks its own callers
            await self.app(scope, receive, send)
            return
        supplied = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(_normalise_basic(supplied), self.expected):
            metrics.BAD_REQUESTS.labels("auth", "unauthorized").inc()
            response = JSONResponse(
                {"error": "authentication required", "reason": "unauthorized"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="prelabel"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def basic_header(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def webhook_caller_ok(settings: Settings, headers: dict[bytes, bytes]) -> bool:
    """A webhook call is genuine when it carries the shared secret or the basic-auth credentials.

    Label Studio sends project webhooks with the headers they were registered with (the
    secret), but without the ML backend's basic-auth credentials, so either proves the caller.
    With neither configured nothing is accepted: unauthenticated calls could queue paid work.
    """
    ok = False
    if settings.webhook_secret is not None:
        supplied = headers.get(WEBHOOK_HEADER.lower().encode(), b"")
        ok |= hmac.compare_digest(supplied, settings.webhook_secret.get_secret_value().encode())
    if settings.basic_auth_user and settings.basic_auth_password:
        expected = basic_header(settings.basic_auth_user, settings.basic_auth_password.get_secret_value())
        ok |= hmac.compare_digest(_normalise_basic(headers.get(b"authorization", b"")), expected)
    return ok


def _normalise_basic(header: bytes) -> bytes:
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"basic":
        return b""
    try:
        return b"Basic " + base64.b64encode(base64.b64decode(token.strip(), validate=True))
    except (binascii.Error, ValueError):
        return b""


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, read with a size cap whatever Content-Length claims.

    Only ``application/json`` bodies are read (415 otherwise): a browser can send a
    ``text/plain`` or form body cross-site without asking, a JSON one it cannot.
    """
    if not _is_json(request.headers.get("content-type", "")):
        raise RequestError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, "too_large", f"request body of {declared} bytes exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    try:  # a large body is parsed on a thread: the loop keeps answering /health and other projects
        return orjson.loads(data) if size <= INLINE_PARSE_BYTES else await run_in_threadpool(orjson.loads, data)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", f"body is not valid JSON: {exc}") from None


# What a request can get wrong; the app maps each to a JSON 4xx (``_rejected``), whichever handler raised it.
REJECTED = (RequestError, LimitError, ValidationError, ConfigError, GuidelineError, EventError)
ENDPOINTS = {"setup", "predict", "webhook"}  # the metric label of a rejection; anything else is "other"


def _rejection(exc: Exception) -> RequestError:
    """The client error a request-handling failure stands for."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, LimitError):
        return RequestError(exc.status, exc.reason, exc.message)
    if isinstance(exc, ValidationError):
        return RequestError(422, "bad_body", _pydantic_message(exc))
    if isinstance(exc, EventError):
        return RequestError(400, "bad_event", str(exc))
    return RequestError(422, "bad_config", str(exc))


async def _rejected(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: a rejected request's JSON error, counted under its endpoint."""
    endpoint = request.url.path.strip("/")
    return _error(endpoint if endpoint in ENDPOINTS else "other", _rejection(exc))


def _error(endpoint: str, exc: RequestError) -> JSONResponse:
    message = one_line(exc.message)
    metrics.BAD_REQUESTS.labels(endpoint, exc.reason).inc()
    log.info("%s rejected (%s): %s", endpoint, exc.reason, message)
    return JSONResponse({"error": message, "reason": exc.reason}, status_code=exc.status)


def one_line(text: str, limit: int = 500) -> str:
    """An error reason as one line of at most ``limit`` characters (validation errors span many)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Backend:
    """Request handlers over one ``Predictor``; state per project from ``/setup``."""

    def __init__(self, settings: Settings, predictor: Predictor | None = None) -> None:
        self.settings = settings
        self._given = predictor  # a caller's predictor (in-process tests): used, not closed, by the server
        # Bounded: project ids come from requests. An evicted project is read back from Redis.
        self.projects: LRU[ProjectRef, ProjectState] = LRU(settings.project_cache_size, settings.project_cache_bytes,
                                                    ProjectState.size)
        self.predictor: Predictor | None = None
        self.jobs_conn: redis.Redis | None = None
        self.router: ModelRouter | None = None
        self.pools = ProjectPools()  # human-labeled few-shot examples, shared with the workers via Redis
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetching: set[ProjectRef] = set()  # projects whose human examples are being fetched
        self._wired: set[ProjectRef] = set()  # projects whose webhook this process wired (or is wiring)
        self.tenants = Tenants(settings)  # which Label Studio a project stamp belongs to
        # Configs are parsed on their own threads: never queued behind slow Label Studio calls.
        self._builder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prelabel-config")

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        opened = nullcontext(self._given) if self._given is not None else open_predictor(self.settings)
        async with opened as predictor:
            self.predictor = predictor
            self.router = ModelRouter(predictor)
            self.jobs_conn = connection(self.settings)
            await self._migrate(self.jobs_conn)
            QUEUE_COLLECTOR.conn = SHARED_COUNTERS.conn = WORKER_COUNTERS.conn = STAGE_COLLECTOR.conn = self.jobs_conn
            webhook_wiring.WIRING_COLLECTOR.conn = self.jobs_conn
            # Everything loaded so far lives as long as the server: keep it out of the GC's
            # generations so collections stay short under load (fewer latency spikes).
            gc.collect()
            gc.freeze()
            log.info("prelabel backend ready: model=%s endpoints=%d",
                     predictor.llm.model, len(self.settings.llm_base_urls))
            if not self._webhook_auth_configured:
                log.warning("webhooks are refused until PRELABEL_WEBHOOK_SECRET (or basic auth) is set")
            try:
                yield
            finally:
                self._builder.shutdown(wait=False, cancel_futures=True)
                QUEUE_COLLECTOR.conn = SHARED_COUNTERS.conn = WORKER_COUNTERS.conn = STAGE_COLLECTOR.conn = None
                webhook_wiring.WIRING_COLLECTOR.conn = None
                self.jobs_conn.close()
                await self.router.aclose()

    async def _migrate(self, conn: redis.Redis) -> None:
        """Keys of an older version moved before the first request reads them (``prelabel.migrate``);
        Redis away at start: logged, the worker (or ``prelabel migrate``) does it later."""
        try:
            await asyncio.to_thread(migrate_tenancy, conn, self.settings)
        except RedisError as exc:
            log.error("Redis keys of an older version not migrated (%s): run `prelabel migrate`", type(exc).__name__)

    @property
    def _webhook_auth_configured(self) -> bool:
        return self.settings.webhook_secret is not None or bool(
            self.settings.basic_auth_user and self.settings.basic_auth_password)

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {"status": "UP", "model_class": "prelabel", "version": __version__, "model": self.settings.llm_model}
        )

    async def setup(self, request: Request) -> Response:
        body = SetupRequest.model_validate(await read_json(request, self.settings.max_request_bytes))
        pid = project_id(body.project)
        guideline = guideline_ref(_extra_params(body.extra_params).get("guideline"))
        check_guideline(guideline, self.settings)
        assert self.router is not None
        ref = None if pid is None else await self._setup_ref(int(pid), project_stamp(body.project), body.hostname)
        predictor = await self.router.for_project(ref)
        active = await self._active_guideline(ref)
        context = await self._context(predictor, body.schema_, active or guideline) if body.schema_ else None
        if ref is not None:
            state = ProjectState(body.schema_, guideline, body.hostname, body.access_token)
            self.projects.put(ref, state)
            await self._remember_project(ref, state)
            self._ensure_wired(ref, state)
            wants_examples = context is not None and self.settings.fewshot_k > 0
            if wants_examples or body.hostname:  # a refused hostname is counted and logged now, fetch or not
                access = self._studio_access(ref, state)
                if access is not None and context is not None and wants_examples and self._may_fetch(ref):
                    self._background(self._load_human_examples(ref, state, context, access))
        version = predictor.model_version(context) if context else predictor.llm.model
        return JSONResponse({"model_version": version})

    async def _context(self, predictor: ProjectPredictor, config: str, guideline: str | dict | None
                       ) -> ProjectContext:
        """The config's context; built in a thread (a large config must not stall ``/health``).

        Whatever a config or guideline makes the builder raise is the request's fault: a 422
        with the exception's kind (and a traceback in the log for the operator), never a 500.
        """
        check_config(config, self.settings)
        cached = predictor.cached_context(config, guideline)
        if cached is not None:
            return cached
        build = asyncio.get_running_loop().run_in_executor(self._builder, predictor.context, config, guideline)
        try:
            return await asyncio.wait_for(build, self.settings.config_build_budget)
        except REJECTED:
            raise
        except TimeoutError:
            raise LimitError("config_too_slow", f"labeling config took over {self.settings.config_build_budget} s "
                                                "to build", status=422) from None
        except Exception as exc:
            log.exception("labeling config or guideline could not be used")
            raise ConfigError(f"labeling config or guideline could not be used ({type(exc).__name__})") from None

    async def _setup_ref(self, pid: int, stamp: str | None, hostname: str | None) -> ProjectRef:
        """The project a ``/setup`` is about (``studio.tenancy``); its stamp is remembered for
        ``/predict`` and webhooks. Redis away: the hostname alone decides (logged)."""
        try:
            return await run_in_threadpool(self.tenants.at_setup, self.jobs_conn, pid, stamp, hostname)
        except RedisError as exc:
            log.error("project %s: its Label Studio instance not remembered (%s)", pid, type(exc).__name__)
            return self.tenants.at_setup(None, pid, stamp, hostname)

    async def _request_ref(self, raw: str | int | None) -> ProjectRef | None:
        """The project of a ``/predict`` (or ``/projects/<id>``): the instance its stamp was set up
        for, else the configured one. With listed instances a Redis failure is a 503 (a wrong guess
        would mix two instances' projects); without, nothing is looked up (single-instance: as before)."""
        pid = project_id(raw)
        if pid is None:
            return None
        stamp = project_stamp(raw)
        if not self.settings.label_studio_hosts or stamp is None:
            return ProjectRef(self.tenants.default, int(pid))
        return ProjectRef(await run_in_threadpool(self.tenants.lookup, self.jobs_conn, stamp), int(pid))

    async def _active_guideline(self, pid: ProjectRef | None) -> dict[str, Any] | None:
        """The guideline ``prelabel prompts use`` made the project's active version (read per
        request: switching needs no restart); None when there is none or Redis does not answer."""
        if pid is None or self.predictor is None or self.predictor.cache is None:
            return None
        try:
            raw = await self.predictor.cache.client.get(active_guideline_key(pid))
        except RedisError as exc:
            log.error("project %s: active guideline unknown (%s); using the configured one", pid, type(exc).__name__)
            return None
        return guideline_store.active_guideline(guideline_store.decode_active(raw))

    async def _remember_project(self, pid: ProjectRef, state: ProjectState) -> None:
        """Share what /setup said with the worker (which runs this project's background jobs)."""
        assert self.predictor is not None and self.predictor.cache is not None
        token = state.access_token.get_secret_value() if state.access_token else None
        record = ProjectRecord(state.guideline, state.hostname, token)
        try:
            await self.predictor.cache.client.set(project_key(pid), record.encode(),
                                                  ex=self.settings.project_ttl or None)
        except RedisError as exc:  # /setup must still answer: interactive predictions work without it
            log.error("project %s: could not store its settings for the worker: %s", pid, exc)

    async def _project_state(self, pid: ProjectRef | None) -> ProjectState | None:
        """What /setup said about ``pid``: from memory, else (evicted, restarted) from Redis."""
        if pid is None:
            return None
        state = self.projects.get(pid)
        if state is None and self.predictor is not None and self.predictor.cache is not None:
            try:
                raw = await self.predictor.cache.client.get(project_key(pid))
            except RedisError:
                return None
            if raw:
                record = ProjectRecord.decode(raw)
                token = SecretStr(record.access_token) if record.access_token else None
                state = ProjectState(None, record.guideline, record.hostname, token)
                self.projects.put(pid, state)
        return state

    def _ensure_wired(self, pid: ProjectRef, state: ProjectState) -> None:
        """Make sure the project's webhook reaches ``/webhook`` with credentials (in the background:
        ``/setup`` and ``/predict`` never wait for it). Once per process and project when it
        worked; after a failure again on the next request (Label Studio repeats ``/setup``)."""
        if pid in self._wired or self.jobs_conn is None:
            return
        self._wired.add(pid)  # before the task starts: concurrent requests wire once
        self._background(self._wire(pid, state))

    def _webhook_headers(self) -> dict[str, str] | None:
        """What proves a webhook call genuine (``webhook_caller_ok``): the secret, else basic auth."""
        if self.settings.webhook_secret is not None:
            return {WEBHOOK_HEADER: self.settings.webhook_secret.get_secret_value()}
        if self.settings.basic_auth_user and self.settings.basic_auth_password:
            return {"Authorization": basic_header(self.settings.basic_auth_user,
                                                  self.settings.basic_auth_password.get_secret_value()).decode()}
        return None

    def _wiring_access(self, pid: ProjectRef, state: ProjectState) -> Access | None:
        """Label Studio where the project lives, when the backend may call it: never a fallback to
        another Label Studio than the one ``/setup`` named (its project ids are another's)."""
        try:
            access = access_for(self.settings, pid, state.hostname, state.access_token)
            if state.hostname and state.hostname.strip() and origin_of(state.hostname) != origin_of(access.url):
                return None
        except AccessRefused:
            return None
        return access

    async def _wire(self, pid: ProjectRef, state: ProjectState) -> None:
        headers = self._webhook_headers()
        access = self._wiring_access(pid, state)
        if headers is None:
            result = webhook_wiring.unwired(pid.id, "no_secret")
        elif access is None:
            result = webhook_wiring.unwired(pid.id, "no_access", None, next(iter(headers)))
        else:
            result = await asyncio.to_thread(
                lambda: webhook_wiring.wire_webhook(access.client(timeout=10), pid.id, headers))
        if result.ok:
            if result.state == "wired":
                log.info("project %s: webhook %s now carries the backend's credentials", pid, result.webhook_id)
        else:
            self._wired.discard(pid)
            if _unwired_logged.first((pid, result.reason)):
                log.warning("project %s: webhook not wired (%s): Label Studio events will be refused. %s",
                            pid, result.reason, result.step)
        assert self.jobs_conn is not None  # _ensure_wired starts no wiring without it
        try:
            await asyncio.to_thread(webhook_wiring.record, self.jobs_conn, pid, result)
        except RedisError as exc:
            log.error("project %s: webhook state not recorded: %s", pid, type(exc).__name__)

    def _background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _may_fetch(self, pid: ProjectRef) -> bool:
        """At most ``MAX_FETCHES`` example fetches at once, one per project: a flood of /setup calls
        while Label Studio is slow must not queue unbounded work (and keep evicted configs alive).
        Label Studio repeats /setup before every prediction run, so a skipped fetch comes again."""
        if pid in self._fetching or len(self._fetching) >= MAX_FETCHES:
            log.info("project %s: human-labeled examples not fetched now (%d fetches running)",
                     pid, len(self._fetching))
            return False
        self._fetching.add(pid)
        return True

    def _studio_access(self, pid: ProjectRef, state: ProjectState) -> Access | None:
        """Where this project's Label Studio may be called; None (counted, logged) when nowhere."""
        try:
            return access_for(self.settings, pid, state.hostname, state.access_token)
        except AccessRefused as exc:
            log.info("project %s: human-labeled examples not loaded: %s", pid, exc)
            return None

    async def _load_human_examples(
        self, pid: ProjectRef, state: ProjectState, context: ProjectContext, access: Access
    ) -> None:
        """Put the project's human-labeled tasks into its shared few-shot pool (best effort, logged)."""
        try:
            examples = await asyncio.to_thread(
                lambda: fetch_labeled_examples(access.client(), pid.id, context.schema, self.settings.fewshot_pool_max))
            for example in examples:
                await asyncio.to_thread(add_example, self.jobs_conn, pid, int(example.source.split(":")[1]),
                                        example.texts, example.answer, self.settings.fewshot_pool_max)
        except Exception as exc:  # LS unreachable, bad token, a redirect, ...: predictions go on without them
            log.warning("project %s: could not load human-labeled examples: %s", pid, type(exc).__name__)
        finally:
            self._fetching.discard(pid)

    async def project_info(self, request: Request) -> Response:
        """What the backend knows about a project (no secrets): for operators and tests."""
        try:
            pid = await self._request_ref(request.path_params["pid"])
        except RequestError:
            pid = None
        state = self.projects.get(pid) if pid else None
        if pid is None or state is None:
            return JSONResponse({"error": "unknown project", "reason": "unknown_project"}, status_code=404)
        examples = await run_in_threadpool(pool_size, self.jobs_conn, pid)
        return JSONResponse({"project": str(pid.id), "has_config": bool(state.label_config),
                             "human_examples": examples})

    async def predict(self, request: Request) -> Response:
        started = time.perf_counter()
        arrived = loop_time()
        raw = await read_json(request, self.settings.max_request_bytes)
        body = PredictRequest.model_validate(raw)
        if len(body.tasks) > self.settings.max_tasks_per_request:
            raise RequestError(
                413, "too_many_tasks",
                f"{len(body.tasks)} tasks > max_tasks_per_request={self.settings.max_tasks_per_request}",
            )
        pid = await self._request_ref(body.project)
        state = await self._project_state(pid)
        if pid is not None and state is not None:  # a backend restarted since /setup wires on its first request
            self._ensure_wired(pid, state)
        config = body.label_config or (state.label_config if state else None)
        if not config:
            raise RequestError(
                422, "no_label_config", "no label_config in the request and no /setup for this project")
        guideline = guideline_ref((body.params or {}).get("guideline")) or await self._active_guideline(
            pid) or guideline_ref(state.guideline if state else None)
        check_guideline(guideline, self.settings)
        assert self.router is not None
        predictor = await self.router.for_project(pid)
        context = await self._context(predictor, config, guideline)
        client = predictor.cache.client if predictor.cache is not None else None
        pool = await self.pools.pool(client, pid, context)
        screen = (body.params or {}).get("context")  # set only by the labeling screen (interactive)
        answer = None
        if screen is not None:  # a suggestion Label Studio does not store: no hand-off, nothing to record
            answer = Answer(await predict_interactive(predictor, body.tasks, context, screen, pool,
                                                      self._interactive_budget(arrived)))
        elif pid is not None and state is not None and self.jobs_conn is not None:  # a LS project: its deadline
            answer = await answer_within_deadline(
                predictor, body.tasks, context, pool, conn=self.jobs_conn, settings=self.settings,
                project=pid, label_config=config, arrived=arrived)
        if answer is None:
            answer = Answer(await predictor.predict(body.tasks, context, pool))
        if screen is None:
            await run_in_threadpool(record_predictions, self.jobs_conn, pid, body.tasks, answer.results)
            if state is not None:  # a Label Studio project: its stored predictions get reviewed and ranked
                self._background(self._queue_aftercare(pid, body.tasks, answer.results))
        metrics.PREDICT_LATENCY.observe(time.perf_counter() - started)
        return Response(orjson.dumps({"results": answer.results, "model_version": predictor.model_version(context),
                                      "pending": answer.pending}), media_type="application/json")

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
        """Authenticate, validate, queue, answer: Label Studio waits 1 s and never retries."""
        if not webhook_caller_ok(self.settings, dict(request.scope["headers"])):
            if not self._webhook_auth_configured:
                return _error("webhook", RequestError(
                    401, "webhook_auth_not_configured", "set PRELABEL_WEBHOOK_SECRET to accept webhooks"))
            response = _error("webhook", RequestError(
                401, "unauthorized", f"webhook caller not authenticated ({WEBHOOK_HEADER} or basic auth)"))
            if self.settings.basic_auth_user:
                response.headers["WWW-Authenticate"] = 'Basic realm="prelabel"'
            return response
        body = await read_json(request, self.settings.max_request_bytes)
        check_webhook(body, self.settings)
        event = parse_event(body)
        if event is None:
            metrics.WEBHOOK_EVENTS.labels("ignored").inc()
            return JSONResponse({"status": "ignored"})
        assert self.jobs_conn is not None  # set by the lifespan before the first request
        try:
            queued = await run_in_threadpool(self._enqueue_event, event)
        except RedisError as exc:
            metrics.WEBHOOK_EVENTS.labels("queue_unavailable").inc()
            log.error("webhook %s for project %s not queued: %s", event.action, event.project_id, exc)
            return JSONResponse({"error": "job queue unavailable", "reason": "queue_unavailable"}, status_code=503)
        metrics.WEBHOOK_EVENTS.labels(event.action if not queued.duplicate else "duplicate").inc()
        return JSONResponse({"status": "duplicate" if queued.duplicate else "queued", "job_id": queued.job_id,
                             "action": event.action})

    def _enqueue_event(self, event: Event) -> Enqueued:
        """Queue the event as its project's (its instance: the stamp of its project's ``created_at``)."""
        assert self.jobs_conn is not None  # set by the lifespan before the first request
        lookup = self.settings.label_studio_hosts and event.stamp is not None
        tenant = self.tenants.lookup(self.jobs_conn, event.stamp) if lookup else self.tenants.default
        return enqueue_event(self.jobs_conn, self.settings, dataclasses.replace(event, tenant=tenant))

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
                webhooks = {self.tenants.shown(key): asdict(state) for key, state in found.items()}
            except RedisError:
                webhooks = {}
        return JSONResponse({"llm": [client.load_snapshot() for client in metrics.LOAD_COLLECTOR.clients],
                             "webhooks": webhooks})


def _pydantic_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])


def create_app(settings: Settings | None = None, predictor: Predictor | None = None) -> Starlette:
    """The backend's ASGI app; ``predictor`` replaces the one it would open (and close) itself, so
    tests run the whole app in-process (``TestClient(create_app(settings, predictor=...))``)."""
    settings = settings or get_settings()
    backend = Backend(settings, predictor)
    middleware = [Middleware(SingleAuthHeaders)]
    if settings.basic_auth_user and settings.basic_auth_password:
        middleware.append(
            Middleware(
                BasicAuthMiddleware,
                user=settings.basic_auth_user,
                password=settings.basic_auth_password.get_secret_value(),
            )
        )
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
        exception_handlers={HTTPException: _http_error, RedisError: _redis_unavailable,
                            **dict.fromkeys(REJECTED, _rejected)},
    )
    app.state.backend = backend
    return app


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    """Redis stalled or gone (a socket timeout, a refused connection): a counted 503, never a 500."""
    endpoint = request.url.path.strip("/")
    log.error("%s: Redis unavailable: %s", endpoint or "/", type(exc).__name__)
    return _error(endpoint if endpoint in ENDPOINTS else "other",
                  RequestError(503, "redis_unavailable", f"Redis did not answer ({type(exc).__name__}); try again"))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods get the same JSON error as any bad request, counted under ``other``."""
    assert isinstance(exc, HTTPException)
    reasons = {404: "not_found", 405: "method_not_allowed"}
    response = _error("other", RequestError(exc.status_code, reasons.get(exc.status_code, "bad_request"), exc.detail))
    response.headers.update(exc.headers or {})
    return response
