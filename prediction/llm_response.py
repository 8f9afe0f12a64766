"""A chat-completions response read as data: the one shape we accept, checked before anything uses it.

The model server is outside our control (a compromised, confused or buggy one answers anything),
so its HTTP body is parsed here with strict limits instead of being trusted through the openai
client's unvalidated objects: ``choices`` must be a non-empty list of objects whose ``message``
carries a string ``content``; ``model`` a short string; ``usage`` counts small non-negative
integers; every logprob a finite number no larger than 0 (tiny float noise above 0 is clipped) with
at most ``MAX_TOP_LOGPROBS`` alternatives, each item with its ``token``. Anything else, a body over
the size cap, text with lone surrogates or JSON nested past orjson's limit, raises
``ResponseError``, which the client treats as a ``bad_response`` (retried, then ``needs_human``):
never an ``internal_error`` later, never a reply that cannot be encoded.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from prelabel.errors import PrelabelError

MAX_TOP_LOGPROBS = 20  # the OpenAI API's own limit; we ask for 5
MAX_MODEL_NAME = 256
MAX_COUNT = 2**31 - 1  # a token count past this is not a count
LOGPROB_NOISE = 1e-3  # servers round log(1.0) to small positive values; larger ones are garbage


class ResponseError(PrelabelError, ValueError):
    """A 200 whose body is not a chat completion we can use (a ``bad_response``)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


def _finite_logprob(value: float) -> float:
    if not math.isfinite(value) or value > LOGPROB_NOISE:
        raise ValueError(f"logprob must be a finite number <= 0, got {value!r}")
    return min(value, 0.0)


Logprob = Annotated[float, AfterValidator(_finite_logprob)]  # strict: an int is a number, a bool or a string is not


class _Alternative(_Strict):
    token: StrictStr
    logprob: Logprob


class _Token(_Strict):
    token: StrictStr
    logprob: Logprob
    bytes: list[Annotated[StrictInt, Field(ge=0, le=255)]] | None = None
    top_logprobs: list[_Alternative] | None = Field(None, max_length=MAX_TOP_LOGPROBS)


class _Logprobs(_Strict):
    content: list[_Token] | None = None


class _Message(_Strict):
    content: StrictStr | None = None


class _Choice(_Strict):
    message: _Message
    logprobs: _Logprobs | None = None


Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]


class _Usage(_Strict):
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    total_tokens: Count | None = None


class ChatResponse(_Strict):
    """The parts of a chat completion prelabel uses, validated."""

    choices: list[_Choice] = Field(min_length=1)
    model: Annotated[StrictStr, Field(max_length=MAX_MODEL_NAME)] | None = None
    usage: _Usage | None = None

    @property
    def content(self) -> str:
        content = self.choices[0].message.content
        if content is None:
            raise ResponseError("no message content")
        return content

    @property
    def tokens(self) -> list[_Token] | None:
        logprobs = self.choices[0].logprobs
        return logprobs.content if logprobs is not None and logprobs.content else None

    def usage_counts(self) -> dict[str, int]:
        return self.usage.model_dump(exclude_none=True) if self.usage is not None else {}


def read_response(body: bytes, limit: int) -> ChatResponse:
    """``body`` as a ``ChatResponse``; ``ResponseError`` (one line, no content echoed) otherwise.

    orjson refuses lone surrogates and nesting past 1,024 levels; the size cap comes first so a
    20 MB answer is neither parsed nor kept.
    """
    if len(body) > limit:
        raise ResponseError(f"response of {len(body)} bytes exceeds {limit} bytes")
    try:
        raw: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseError(f"response is not JSON: {str(exc)[:120]}") from None
    if not isinstance(raw, dict):
        raise ResponseError(f"response must be a JSON object, got {type(raw).__name__}")
    try:
        response = ChatResponse.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        raise ResponseError(f"unexpected response shape at {where}: {first['msg']}"[:200]) from None
    response.content  # noqa: B018 - raises ResponseError without content
    return response
