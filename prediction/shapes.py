"""Which request shape (structured output, logprobs) an LLM endpoint accepts, learned per endpoint.

Servers differ: OpenAI and vLLM take ``response_format={"type": "json_schema", ...}``,
llama-cpp-python takes ``{"type": "json_object", "schema": ...}`` and answers ``json_schema`` with
a 500, some servers have no logprobs. The client starts with the configured shape and steps down
only when an error *says* the shape is the problem (it names ``response_format``, a schema mode
or ``logprobs``). Any other rejection (a prompt longer than the context window, a bad parameter)
is that request's failure and changes nothing for the requests after it.

A step-down is remembered per endpoint and per shape part (the mode, logprobs), and only for
``retry_after_s``: then the preferred shape is tried again, since servers get upgraded and an
error can be transient. A shape that fails again is set aside for another period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from prelabel.settings import StructuredOutput

MODES: tuple[StructuredOutput, ...] = ("json_schema", "json_object", "none")
Rejection = Literal["context", "mode", "logprobs"]

_CONTEXT_WORDS = ("context length", "context window", "context_length", "maximum context", "too many tokens",
                  "exceeds the model", "exceed context", "prompt is too long", "n_ctx")
_MODE_WORDS = ("response_format", "json_schema", "json_object", "guided_json", "grammar")


def classify_rejection(message: str) -> Rejection | None:
    """What a server's error message blames: the context window, the output mode, logprobs."""
    text = message.lower()
    if any(word in text for word in _CONTEXT_WORDS):
        return "context"
    if any(word in text for word in _MODE_WORDS):
        return "mode"
    if "logprob" in text:
        return "logprobs"
    return None


class ShapeState:
    """The shape to send to one endpoint now, and the parts it rejected (until when)."""

    def __init__(self, start: StructuredOutput, logprobs: bool, retry_after_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.preferred = MODES[MODES.index(start):]
        self.want_logprobs = logprobs
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._rejected: dict[str, float] = {}  # "json_schema" / "json_object" / "logprobs" -> until

    def _ok(self, part: str) -> bool:
        until = self._rejected.get(part)
        return until is None or self._clock() >= until

    @property
    def mode(self) -> StructuredOutput:
        return next((m for m in self.preferred if m == "none" or self._ok(m)), "none")

    @property
    def logprobs(self) -> bool:
        return self.want_logprobs and self._ok("logprobs")

    def current(self) -> tuple[StructuredOutput, bool]:
        return self.mode, self.logprobs

    def reject(self, sent: tuple[StructuredOutput, bool], part: Rejection) -> bool:
        """The endpoint rejected ``part`` of the shape ``sent``; True when a simpler shape is left.

        Calls that were rejected for the same shape at the same time step down once: a part
        already set aside (by a concurrent call) just says "try the current shape".
        """
        mode, logprobs = sent
        name = "logprobs" if part == "logprobs" else mode
        if name == "none" or (name == "logprobs" and not logprobs):
            return False
        if self._ok(name):
            self._rejected[name] = self._clock() + self.retry_after_s
        return self.current() != sent

    def snapshot(self) -> dict[str, object]:
        now = self._clock()
        return {"structured_output": self.mode, "logprobs": self.logprobs,
                "set_aside": {k: round(v - now, 1) for k, v in self._rejected.items() if v > now}}
