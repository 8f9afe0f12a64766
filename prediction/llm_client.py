"""Async client for OpenAI-compatible chat servers (vLLM, llama.cpp, OpenAI, ...).

- Endpoints are (base URL, API key) pairs. Each has its own adaptive concurrency limit
  (``load_control``): calls wait for a permit in one FIFO queue and go to an endpoint with free
  capacity; a retry avoids the endpoint that just failed when another one is free. Waiting for a
  permit is queueing, measured apart: an attempt's timeout starts when its request is sent.
- Retries with exponential backoff and jitter on 429 / 5xx / timeouts / connection errors,
  honouring ``Retry-After`` (capped), within a retry budget (at most ``retry_ratio`` extra calls
  over a sliding window, plus a small floor). Backoff sleeps hold no permit. The openai client's
  own retries are off so that the limiter, the budget and the metrics see every attempt.
- Structured output is negotiated per endpoint (``shapes``): ``json_schema`` (OpenAI, vLLM), then
  llama.cpp's ``json_object`` + ``schema``, then the schema in the prompt only; a step-down
  happens only on an error that blames the shape, and is retried after a while. A request the
  server rejects for any other reason (a prompt over the context window, ...) fails alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import openai

from prelabel.errors import PrelabelError
from prelabel.logs import redact
from prelabel.prediction import metrics
from prelabel.prediction.llm_response import ChatResponse, ResponseError, read_response
from prelabel.prediction.load_control import AdaptiveLimit, EndpointPool, Permit, RetryBudget
from prelabel.prediction.shapes import ShapeState, classify_rejection
from prelabel.settings import Settings, StructuredOutput

log = logging.getLogger(__name__)

# Outcomes that mean "the server has more than it can do": the limiter backs off on them
# (a 503 too, counted as a server_error).
OVERLOAD = {"timeout", "rate_limited", "connection_error"}
# No tokenizer makes a token longer than this: a longer answer is not what we asked for, and it
# is never kept or sent back to the model in a corrective retry.
MAX_CHARS_PER_TOKEN = 64


class LLMError(PrelabelError, RuntimeError):
    """A call that failed for good. ``kind`` is a metric label value."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its UTF-8 byte length in the content, logprob, alternatives."""

    nbytes: int
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Completion:
    content: str
    tokens: list[TokenLogprob] | None
    model: str
    endpoint: str
    attempts: int
    latency_s: float
    mode: StructuredOutput
    usage: dict[str, int] = field(default_factory=dict)
    queue_s: float = 0.0  # waiting for a permit (all attempts), not counted in latency_s


@dataclass
class _Endpoint:
    label: str  # host:port only: never the key, never credentials in the URL
    url: str
    client: openai.AsyncOpenAI
    shape: ShapeState
    context_window: int | None = None  # learned from a server's context-length error


def pair_endpoints(urls: list[str], keys: list[str]) -> list[tuple[str, str]]:
    """Equal counts pair up (one key per server); otherwise every key is used on every URL."""
    if not urls:
        raise ValueError("no LLM base URL configured")
    keys = keys or ["not-needed"]
    if len(urls) == len(keys):
        return list(zip(urls, keys))
    return [(url, key) for url in urls for key in keys]


def _endpoint_label(url: str) -> str:
    host = url.split("://", 1)[-1].split("/", 1)[0]
    return host.rsplit("@", 1)[-1]


_WINDOW_IN_MESSAGE = re.compile(
    r"(?:context window of|maximum context length is|context length is|n_ctx[^0-9]{0,12})\s*(\d{3,7})", re.IGNORECASE)


class LLMClient:
    def __init__(self, settings: Settings) -> None:
        self.model = settings.llm_model
        self.temperature = settings.llm_temperature
        self.max_tokens = settings.llm_max_tokens
        self.timeout = settings.llm_timeout
        self.max_retries = settings.llm_max_retries
        self.max_wait = settings.llm_retry_max_wait
        self.max_response_bytes = settings.max_answer_bytes
        keys = [k.get_secret_value() for k in settings.llm_api_keys]
        self._secrets = settings.secret_values()
        self._endpoints = [
            _Endpoint(
                label=_endpoint_label(url),
                url=url,
                client=openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=self.timeout),
                shape=ShapeState(settings.structured_output, settings.logprobs, settings.llm_shape_retry_s),
            )
            for url, key in pair_endpoints(settings.llm_base_urls, keys)
        ]
        limits = [
            AdaptiveLimit(settings.llm_concurrency, adaptive=settings.llm_adaptive,
                          initial=settings.llm_initial_concurrency, timeout_s=settings.llm_timeout)
            for _ in self._endpoints
        ]
        self.pool: EndpointPool[_Endpoint] = EndpointPool(self._endpoints, limits, settings.llm_concurrency)
        self.budget = RetryBudget(settings.llm_retry_budget, settings.llm_retry_budget_min)
        metrics.register_client(self)

    @property
    def endpoints(self) -> list[_Endpoint]:
        return self._endpoints

    def learned_context_window(self) -> int | None:
        """The smallest context window a server has told us about in an error, if any."""
        windows = [e.context_window for e in self._endpoints if e.context_window]
        return min(windows) if windows else None

    async def aclose(self) -> None:
        metrics.unregister_client(self)
        for endpoint in self._endpoints:
            await endpoint.client.close()

    def capacity(self) -> int:
        """Calls that may be in flight now over all endpoints (their adaptive limits): how much
        work a caller should start at once so that none of it waits long for a permit."""
        return max(1, sum(limit.permits for limit in self.pool.limits))

    def load_snapshot(self) -> dict[str, Any]:
        """Limits, in-flight calls, queueing and the retry budget: for /metrics and ``prelabel status``."""
        endpoints = self.pool.snapshot([e.label for e in self._endpoints])
        for row, endpoint in zip(endpoints, self._endpoints):
            row.update(endpoint.shape.snapshot())
        return {"model": self.model, "waiting": self.pool.waiting, "endpoints": endpoints,
                "retry_budget": self.budget.snapshot()}

    async def complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any], *, max_tokens: int | None = None
    ) -> Completion:
        """One chat completion constrained to ``schema``; raises ``LLMError`` when it gives up.

        ``max_tokens`` caps the answer (the context budget sizes it from the schema); default
        ``PRELABEL_LLM_MAX_TOKENS``.
        """
        _check_serialisable(messages, schema)
        started = time.perf_counter()
        queued = 0.0
        attempts = 0
        avoid: int | None = None
        self.budget.record_call()
        while True:
            attempts += 1
            permit = await self.pool.acquire(avoid)
            queued += permit.waited_s
            metrics.LLM_QUEUE_WAIT.observe(permit.waited_s)
            try:
                completion = await self._attempt(permit, messages, schema, max_tokens or self.max_tokens)
            except _Retryable as exc:
                if attempts > self.max_retries:
                    raise LLMError(exc.kind, f"gave up after {attempts} attempts: {exc}") from None
                if not self.budget.try_spend():
                    metrics.LLM_RETRIES_DENIED.labels(exc.kind).inc()
                    raise LLMError(exc.kind, f"retry budget spent after {attempts} attempt(s): {exc}") from None
                metrics.LLM_RETRIES.labels(exc.kind).inc()
                avoid = permit.index
                await asyncio.sleep(self._wait(exc, attempts))
                continue
            completion.attempts = attempts
            completion.queue_s = queued
            completion.latency_s = time.perf_counter() - started - queued
            return completion

    def _wait(self, exc: _Retryable, attempt: int) -> float:
        if exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait)
        backoff = min(self.max_wait, 0.5 * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)

    async def _attempt(
        self, permit: Permit[_Endpoint], messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int
    ) -> Completion:
        """Attempts on the endpoint of ``permit`` (a shape step-down re-sends at once), then releases it."""
        endpoint = permit.endpoint
        outcome: str | None = None
        overloaded = False
        rtt: float | None = None
        try:
            while True:
                sent = endpoint.shape.current()
                request = self._request(sent, messages, schema, max_tokens)
                sent_at = time.perf_counter()
                try:
                    async with asyncio.timeout(self.timeout + 1):
                        raw = await endpoint.client.chat.completions.with_raw_response.create(**request)
                        body = await raw.http_response.aread()
                except (openai.BadRequestError, openai.UnprocessableEntityError, openai.InternalServerError) as exc:
                    described = self._describe(exc)
                    blamed = classify_rejection(str(exc))
                    if blamed in ("mode", "logprobs") and endpoint.shape.reject(sent, blamed):
                        log.warning("LLM endpoint %s rejected %s=%s (%s); using structured_output=%s logprobs=%s "
                                    "for now", endpoint.label, blamed, sent[0] if blamed == "mode" else sent[1],
                                    described, *endpoint.shape.current())
                        metrics.LLM_SHAPE_STEPDOWNS.labels(blamed).inc()
                        continue
                    if blamed == "context":
                        self._learn_window(endpoint, str(exc))
                        outcome = "context_too_long"
                        metrics.LLM_REQUESTS.labels(outcome).inc()
                        raise LLMError(outcome, f"{endpoint.label}: prompt does not fit: {described}") from None
                    if isinstance(exc, openai.InternalServerError):
                        outcome, overloaded = "server_error", exc.status_code == 503
                        raise self._retryable(outcome, endpoint, exc, _retry_after(exc.response)) from None
                    outcome = "bad_request"
                    metrics.LLM_REQUESTS.labels(outcome).inc()
                    raise LLMError(outcome, f"{endpoint.label} rejected the request: {described}") from None
                except openai.RateLimitError as exc:
                    outcome = "rate_limited"
                    raise self._retryable(outcome, endpoint, exc, _retry_after(exc.response)) from None
                except openai.APIStatusError as exc:
                    outcome = "bad_request"
                    metrics.LLM_REQUESTS.labels(outcome).inc()
                    raise LLMError(
                        outcome, f"{endpoint.label}: HTTP {exc.status_code}: {self._describe(exc)}") from None
                except (openai.APITimeoutError, TimeoutError) as exc:
                    outcome = "timeout"
                    raise self._retryable(outcome, endpoint, exc) from None
                except openai.APIConnectionError as exc:
                    outcome = "connection_error"
                    raise self._retryable(outcome, endpoint, exc) from None
                except (openai.APIResponseValidationError, ValueError) as exc:
                    outcome = "bad_response"
                    raise self._retryable(outcome, endpoint, exc) from None
                try:  # model output is data: one strict shape, whatever the server sent
                    response = read_response(body, self.max_response_bytes)
                    if len(response.content) > max_tokens * MAX_CHARS_PER_TOKEN:  # the server ignored max_tokens
                        raise ResponseError(f"answer of {len(response.content)} characters is longer than "
                                            f"max_tokens={max_tokens} allows")
                except ResponseError as exc:
                    outcome = "bad_response"
                    raise self._retryable(outcome, endpoint, exc) from None
                completion = self._completion(endpoint, response, sent[0])
                rtt = time.perf_counter() - sent_at
                return completion
        finally:
            self.pool.release(permit, rtt=rtt, overloaded=overloaded or outcome in OVERLOAD)

    def _learn_window(self, endpoint: _Endpoint, message: str) -> None:
        match = _WINDOW_IN_MESSAGE.search(message)
        if match:
            endpoint.context_window = int(match.group(1))

    def _request(
        self, shape: tuple[StructuredOutput, bool], messages: list[dict[str, str]], schema: dict[str, Any],
        max_tokens: int,
    ) -> dict[str, Any]:
        mode, logprobs = shape
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": max_tokens,
        }
        if mode == "json_schema":
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        elif mode == "json_object":
            request["response_format"] = {"type": "json_object", "schema": schema}
        if logprobs:
            request["logprobs"] = True
            request["top_logprobs"] = 5
        return request

    def _describe(self, exc: Exception) -> str:
        """An upstream error's text, shortened, with our secrets removed (servers echo keys)."""
        return _short(redact(str(exc), self._secrets))

    def _retryable(
        self, kind: str, endpoint: _Endpoint, exc: Exception, retry_after: float | None = None
    ) -> _Retryable:
        metrics.LLM_REQUESTS.labels(kind).inc()
        return _Retryable(kind, f"{endpoint.label}: {kind}: {self._describe(exc)}", retry_after)

    def _completion(self, endpoint: _Endpoint, response: ChatResponse, mode: StructuredOutput) -> Completion:
        metrics.LLM_REQUESTS.labels("ok").inc()
        tokens = None
        if response.tokens:
            tokens = [
                TokenLogprob(
                    nbytes=len(item.bytes) if item.bytes is not None else len(item.token.encode("utf-8", "replace")),
                    logprob=item.logprob,
                    top=tuple((alt.token, alt.logprob) for alt in (item.top_logprobs or [])),
                )
                for item in response.tokens
            ]
        return Completion(
            content=response.content,
            tokens=tokens,
            model=response.model or self.model,
            endpoint=endpoint.label,
            attempts=1,
            latency_s=0.0,
            mode=mode,
            usage=response.usage_counts(),
        )


def _check_serialisable(messages: list[dict[str, str]], schema: dict[str, Any]) -> None:
    """A request that cannot become JSON fails here, once, as ``local_error``: no server ever saw
    it, so it is not an LLM failure and retrying cannot help (e.g. a NaN bound in a schema)."""
    try:
        json.dumps({"messages": messages, "schema": schema}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        metrics.LLM_REQUESTS.labels("local_error").inc()
        raise LLMError("local_error", f"the request cannot be serialised: {_short(str(exc))}") from None


def _retry_after(response: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``Retry-After`` (seconds form) when present."""
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                continue
    return None


def _short(text: str, limit: int = 200) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
