"""The wire side of the ML backend protocol: request bodies, their limits, and the JSON errors.

What a request can get wrong is raised anywhere while it is handled (``RequestError``, a limit, a
body that fails validation, a config or guideline that cannot be used, a bad event) and mapped
here, once, to a counted JSON 4xx with a reason (``rejected``); Redis gone is a counted 503.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, Strict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from prelabel.errors import PrelabelError
from prelabel.jobs.events import EventError
from prelabel.label_config.guideline import GuidelineError
from prelabel.label_config.schema import ConfigError
from prelabel.ml_backend.limits import LimitError
from prelabel.prediction import metrics
from prelabel.prediction.service import ConfigTooSlow

log = logging.getLogger(__name__)

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


def extra_params(raw: dict[str, Any] | str | None) -> dict[str, Any]:
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(400, "bad_extra_params", f"extra_params is not JSON: {exc}") from None
        raw = parsed
    return raw if isinstance(raw, dict) else {}


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
        return RequestError(422, "bad_body", pydantic_message(exc))
    if isinstance(exc, EventError):
        return RequestError(400, "bad_event", str(exc))
    if isinstance(exc, ConfigTooSlow):
        return RequestError(422, "config_too_slow", str(exc))
    return RequestError(422, "bad_config", str(exc))


async def rejected(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: a rejected request's JSON error, counted under its endpoint."""
    endpoint = request.url.path.strip("/")
    return error(endpoint if endpoint in ENDPOINTS else "other", _rejection(exc))


def error(endpoint: str, exc: RequestError) -> JSONResponse:
    message = one_line(exc.message)
    metrics.BAD_REQUESTS.labels(endpoint, exc.reason).inc()
    log.info("%s rejected (%s): %s", endpoint, exc.reason, message)
    return JSONResponse({"error": message, "reason": exc.reason}, status_code=exc.status)


def one_line(text: str, limit: int = 500) -> str:
    """An error reason as one line of at most ``limit`` characters (validation errors span many)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pydantic_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])


async def redis_unavailable(request: Request, exc: Exception) -> Response:
    """Redis stalled or gone (a socket timeout, a refused connection): a counted 503, never a 500."""
    endpoint = request.url.path.strip("/")
    log.error("%s: Redis unavailable: %s", endpoint or "/", type(exc).__name__)
    return error(endpoint if endpoint in ENDPOINTS else "other",
                  RequestError(503, "redis_unavailable", f"Redis did not answer ({type(exc).__name__}); try again"))


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods get the same JSON error as any bad request, counted under ``other``."""
    assert isinstance(exc, HTTPException)
    reasons = {404: "not_found", 405: "method_not_allowed"}
    response = error("other", RequestError(exc.status_code, reasons.get(exc.status_code, "bad_request"), exc.detail))
    response.headers.update(exc.headers or {})
    return response
