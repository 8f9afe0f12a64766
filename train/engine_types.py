"""What every evaluation engine takes and gives (``train/engines.py`` builds them, ``train/backend_engine.py``
is one more, ``train/evaluate.py`` runs any): kept apart so an engine module and the factory that
picks one do not import each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from prelabel.errors import UserError


class EngineError(UserError, RuntimeError):
    """The engine could not run (missing package, no GPU, unreachable server)."""


@dataclass(frozen=True)
class AnswerFormat:
    """What a valid answer looks like: one of ``choices``, or JSON matching ``json_schema``."""

    choices: tuple[str, ...] | None = None
    json_schema: dict[str, Any] | None = None


@dataclass
class Generation:
    text: str
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    confidence: float | None = None


class Engine(Protocol):
    name: str
    model: str
    latency_mode: str  # "per_request" or "batch" (each item gets its batch's wall time)

    def generate(self, conversations: list[list[dict[str, str]]], fmt: AnswerFormat | None) -> list[Generation]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
