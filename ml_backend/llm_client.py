"""Async client for OpenAI-compatible chat servers (vLLM, llama.cpp, OpenAI, ...).

- Endpoints are (base URL, API key) pairs used round-robin; each retry goes to the next one.
- At most ``concurrency`` calls are in flight per process; backoff sleeps do not hold a slot.
- Retries with exponential backoff and jitter on 429 / 5xx / timeouts / connection errors,
  honouring ``Retry-After`` (capped). The openai client's own retries are off so that the
  rotation and the metrics see every attempt.
- Structured output is negotiated per endpoint: ``json_schema`` (OpenAI, vLLM), then
  llama.cpp's ``json_object`` + ``schema``, then the schema in the prompt only; a server that
  rejects a request shape (400/422) is asked again with the next one, and remembered.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from prelabel.logs import redact
from prelabel.ml_backend import metrics
from prelabel.settings import Settings, StructuredOutput

log = logging.getLogger(__name__)

MODES: tuple[StructuredOutput, ...] = ("json_schema", "json_object", "none")


class LLMError(RuntimeError):
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


@dataclass
class _Endpoint:
    label: str  # host:port only: never the key, never credentials in the URL
    client: openai.AsyncOpenAI
    mode: StructuredOutput
    logprobs: bool


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


class LLMClient:
    def __init__(self, settings: Settings) -> None:
        self.model = settings.llm_model
        self.temperature = settings.llm_temperature
        self.max_tokens = settings.llm_max_tokens
        self.timeout = settings.llm_timeout
        self.max_retries = settings.llm_max_retries
        self.max_wait = settings.llm_retry_max_wait
        self._semaphore = asyncio.Semaphore(settings.llm_concurrency)
        keys = [k.get_secret_value() for k in settings.llm_api_keys]
        self._secrets = settings.secret_values()
        self._endpoints = [
            _Endpoint(
                label=_endpoint_label(url),
                client=openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=self.timeout),
                mode=settings.structured_output,
                logprobs=settings.logprobs,
            )
            for url, key in pair_endpoints(settings.llm_base_urls, keys)
        ]
        self._next = itertools.cycle(range(len(self._endpoints)))

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.client.close()

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> Completion:
        """One chat completion constrained to ``schema``; raises ``LLMError`` when it gives up."""
        _check_serialisable(messages, schema)
        started = time.perf_counter()
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, _Retryable)),
            before_sleep=lambda state: metrics.LLM_RETRIES.labels(_kind(state)).inc(),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    endpoint = self._endpoints[next(self._next)]
                    completion = await self._attempt(endpoint, messages, schema)
                    completion.attempts = attempts
                    completion.latency_s = time.perf_counter() - started
                    return completion
        except _Retryable as exc:
            raise LLMError(exc.kind, f"gave up after {attempts} attempts: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait)
        backoff = min(self.max_wait, 0.5 * 2 ** (state.attempt_number - 1))
        return backoff * (0.5 + random.random() / 2)

    async def _attempt(
        self, endpoint: _Endpoint, messages: list[dict[str, str]], schema: dict[str, Any]
    ) -> Completion:
        while True:
            sent = (endpoint.mode, endpoint.logprobs)
            request = self._request(endpoint, messages, schema)
            try:
                async with self._semaphore:
                    async with asyncio.timeout(self.timeout + 1):
                        response = await endpoint.client.chat.completions.create(**request)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if self._step_down(endpoint, sent, exc):
                    continue
                metrics.LLM_REQUESTS.labels("bad_request").inc()
                raise LLMError("bad_request", f"{endpoint.label} rejected the request: {self._describe(exc)}") from None
            except openai.RateLimitError as exc:
                raise self._retryable("rate_limited", endpoint, exc, _retry_after(exc.response)) from None
            except openai.InternalServerError as exc:
                # Some servers (llama-cpp-python) answer an unsupported request shape with a 500.
                if _rejects_shape(exc) and self._step_down(endpoint, sent, exc):
                    continue
                raise self._retryable("server_error", endpoint, exc, _retry_after(exc.response)) from None
            except openai.APIStatusError as exc:
                metrics.LLM_REQUESTS.labels("bad_request").inc()
                raise LLMError(
                    "bad_request", f"{endpoint.label}: HTTP {exc.status_code}: {self._describe(exc)}") from None
            except (openai.APITimeoutError, TimeoutError) as exc:
                raise self._retryable("timeout", endpoint, exc) from None
            except openai.APIConnectionError as exc:
                raise self._retryable("connection_error", endpoint, exc) from None
            except (openai.APIResponseValidationError, ValueError) as exc:
                # ValueError: a 200 whose body is not JSON (the client's response.json() fails).
                raise self._retryable("bad_response", endpoint, exc) from None
            return self._completion(endpoint, response)

    def _request(
        self, endpoint: _Endpoint, messages: list[dict[str, str]], schema: dict[str, Any]
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if endpoint.mode == "json_schema":
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        elif endpoint.mode == "json_object":
            request["response_format"] = {"type": "json_object", "schema": schema}
        if endpoint.logprobs:
            request["logprobs"] = True
            request["top_logprobs"] = 5
        return request

    def _step_down(
        self, endpoint: _Endpoint, sent: tuple[StructuredOutput, bool], exc: Exception
    ) -> bool:
        """Retry a rejected request with a simpler shape; False when nothing is left to drop.

        Compare-and-swap on the shape that was sent: concurrent calls rejected for the same
        shape step the endpoint down once, not once each.
        """
        if (endpoint.mode, endpoint.logprobs) != sent:
            return True
        index = MODES.index(endpoint.mode)
        if index + 1 < len(MODES):
            endpoint.mode = MODES[index + 1]
        elif endpoint.logprobs:
            endpoint.logprobs = False
        else:
            return False
        log.warning(
            "LLM endpoint %s rejected a request (%s); now using structured_output=%s logprobs=%s",
            endpoint.label, self._describe(exc), endpoint.mode, endpoint.logprobs,
        )
        return True

    def _describe(self, exc: Exception) -> str:
        """An upstream error's text, shortened, with our secrets removed (servers echo keys)."""
        return _short(redact(str(exc), self._secrets))

    def _retryable(
        self, kind: str, endpoint: _Endpoint, exc: Exception, retry_after: float | None = None
    ) -> _Retryable:
        metrics.LLM_REQUESTS.labels(kind).inc()
        return _Retryable(kind, f"{endpoint.label}: {kind}: {self._describe(exc)}", retry_after)

    def _completion(self, endpoint: _Endpoint, response: Any) -> Completion:
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices else None
        if not isinstance(content, str):
            raise self._retryable("bad_response", endpoint, ValueError("no message content"))
        metrics.LLM_REQUESTS.labels("ok").inc()
        tokens = None
        logprobs = getattr(choices[0], "logprobs", None)
        if logprobs is not None and getattr(logprobs, "content", None):
            tokens = [
                TokenLogprob(
                    nbytes=len(item.bytes) if item.bytes is not None else len(item.token.encode()),
                    logprob=float(item.logprob),
                    top=tuple((alt.token, float(alt.logprob)) for alt in (item.top_logprobs or [])),
                )
                for item in logprobs.content
            ]
        usage = response.usage.model_dump() if getattr(response, "usage", None) else {}
        return Completion(
            content=content,
            tokens=tokens,
            model=getattr(response, "model", None) or self.model,
            endpoint=endpoint.label,
            attempts=1,
            latency_s=0.0,
            mode=endpoint.mode,
            usage={k: v for k, v in usage.items() if isinstance(v, int)},
        )


def _check_serialisable(messages: list[dict[str, str]], schema: dict[str, Any]) -> None:
    """A request that cannot become JSON fails here, once, as ``local_error``: no server ever saw
    it, so it is not an LLM failure and retrying cannot help (e.g. a NaN bound in a schema)."""
    try:
        json.dumps({"messages": messages, "schema": schema}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        metrics.LLM_REQUESTS.labels("local_error").inc()
        raise LLMError("local_error", f"the request cannot be serialised: {_short(str(exc))}") from None


def _kind(state: RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome else None
    return getattr(exc, "kind", "unknown")


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


def _rejects_shape(exc: Exception) -> bool:
    """True when an error message says the request's structured-output/logprobs shape is unsupported."""
    text = str(exc).lower()
    return any(word in text for word in ("response_format", "json_schema", "logprobs"))


def _short(text: str, limit: int = 200) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
