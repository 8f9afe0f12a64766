"""Fit a task's prompt into the model's context window before it is sent.

A prompt longer than the window (or leaving too little room for the answer) is a wasted call:
the server answers 400, or truncates. So before calling, the predictor asks ``ContextBudget``:

1. **Answer budget from the schema** (``answer_budget``): a single choice needs the longest label
   plus the JSON around it, not ``PRELABEL_LLM_MAX_TOKENS`` (512 by default). Only open-ended
   answers (free text without ``maxLength``, spans) get the configured maximum. A token is at
   least one byte, so the byte length of the largest valid answer bounds its tokens.
2. **Prompt tokens.** First an upper bound without any call (UTF-8 bytes: no token is shorter than
   a byte). Only a prompt that might not fit is counted: by the server's tokenizer when it has
   one (llama-cpp-python ``/extras/tokenize/count``, vLLM ``/tokenize``, llama.cpp ``/tokenize``;
   counts are cached per text, and the shared system message is counted once), else a
   conservative estimate (``ESTIMATE_BYTES_PER_TOKEN``). Each chat message adds the template's
   role markers (``MESSAGE_OVERHEAD``).
3. **Fit**: the first prompt that fits, trying the label text at each detail level (definitions
   with their examples, definitions alone, the label names alone) and at each level as many
   few-shot examples as fit (the least similar go first). Still too long: ``TooLong``, and the
   task becomes ``needs_human`` with reason ``context_too_long`` without a call.

The window is ``PRELABEL_LLM_CONTEXT_WINDOW``, else what the server reports (vLLM's
``max_model_len`` in ``/v1/models``, llama.cpp's ``n_ctx`` in ``/props``), else what a server's
context-length error said (``LLMClient.learned_context_window``). Without any, prompts are sent
as they are (with the schema-sized answer budget).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx

from prelabel.label_config.controls import LIST_ITEM, ChoicesField, NumberField, RankerField, RatingField, TextAreaField
from prelabel.label_config.schema import OutputSchema
from prelabel.prediction.prompt import DETAIL, NONE_OF_THESE, Example, Prompt

log = logging.getLogger(__name__)

ESTIMATE_BYTES_PER_TOKEN = 2.5  # English BPE averages ~4 bytes/token; JSON and label lists ~3
MESSAGE_OVERHEAD = 8  # chat template role markers per message (ChatML uses 5)
REPLY_OVERHEAD = 8  # the assistant turn's opening, and a margin


def answer_budget(
    schema: OutputSchema, texts: dict[str, str], cap: int, candidates: dict[str, list[str]] | None = None
) -> int:
    """Tokens the largest valid answer can take (capped at ``cap``); ``cap`` for open-ended answers."""
    size = 2
    for control in schema.fields:
        size += len(control.name.encode()) + 6
        if isinstance(control, ChoicesField):
            labels = [*candidates[control.name], NONE_OF_THESE] if candidates and control.name in candidates \
                else control.label_values
            lengths = [len(label.encode()) + 4 for label in labels]
            size += sum(lengths) + 2 if control.multiple else max(lengths)
        elif isinstance(control, RatingField):
            size += len(str(control.max_rating))
        elif isinstance(control, NumberField):
            size += 24
        elif isinstance(control, RankerField):
            size += sum(len(item.encode()) + 4 for item in LIST_ITEM.findall(texts.get(control.object_name, ""))) + 2
        elif isinstance(control, TextAreaField) and "maxLength" in control.json_schema():
            size += 4 * control.json_schema()["maxLength"] + 2  # up to 4 UTF-8 bytes per character
        else:
            return cap
    return min(cap, math.ceil(1.25 * size) + 32)


class TokenCounter:
    """Prompt tokens as the server counts them, or a conservative estimate when it cannot say."""

    PATHS = (("/extras/tokenize/count", "input"), ("/tokenize", "prompt"), ("/tokenize", "content"))

    def __init__(self, base_url: str, api_key: str, model: str, cache_size: int = 4096) -> None:
        self.root = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._route: tuple[str, str] | None = None
        self._probed = False
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=30, headers=self._headers, trust_env=False)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    @property
    def exact(self) -> bool:
        return self._route is not None

    async def count(self, text: str) -> int:
        if text in self._cache:
            self._cache.move_to_end(text)
            return self._cache[text]
        if not self._probed:
            async with self._lock:
                if not self._probed:
                    await self._probe()
        tokens = await self._server_count(text) if self._route else None
        if tokens is None:
            tokens = estimate(text)
        self._cache[text] = tokens
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return tokens

    async def _probe(self) -> None:
        """Find the tokenizer route this server has (once); none = estimate from now on."""
        for route in self.PATHS:
            self._route = route
            if await self._server_count("probe") is not None:
                log.info("token counts from %s%s", self.root, route[0])
                break
            self._route = None
        self._probed = True

    async def _server_count(self, text: str) -> int | None:
        assert self._route is not None
        path, key = self._route
        body: dict[str, Any] = {key: text, "model": self.model}
        try:
            response = await self.http.post(self.root + path, json=body)
            if response.status_code != 200:
                return None
            data = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        if isinstance(data, dict) and isinstance(data.get("count"), int):
            return data["count"]
        if isinstance(data, dict) and isinstance(data.get("tokens"), list):
            return len(data["tokens"])
        return None

    async def server_window(self) -> int | None:
        """The context window the server reports: vLLM ``max_model_len``, llama.cpp ``n_ctx``."""
        try:
            models = (await self.http.get(self.root + "/v1/models", timeout=10)).json()
            for item in models.get("data") or []:
                if isinstance(item, dict) and isinstance(item.get("max_model_len"), int):
                    return item["max_model_len"]
            response = await self.http.get(self.root + "/props", timeout=10)
            if response.status_code == 200:
                props = response.json()
                settings = props.get("default_generation_settings") or {}
                for value in (props.get("n_ctx"), settings.get("n_ctx")):
                    if isinstance(value, int) and value > 0:
                        return value
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return None


def estimate(text: str) -> int:
    """A conservative token count for servers without a tokenizer endpoint."""
    return math.ceil(len(text.encode()) / ESTIMATE_BYTES_PER_TOKEN) + 1


def byte_bound(messages: list[dict[str, str]]) -> int:
    """An upper bound of the prompt's tokens without asking anyone: one token per byte at most."""
    return sum(len(m["content"].encode()) + MESSAGE_OVERHEAD for m in messages) + REPLY_OVERHEAD


@dataclass
class Fitted:
    """A prompt that fits: its messages, the answer budget and what was left out to fit."""

    messages: list[dict[str, str]]
    max_tokens: int
    prompt_tokens: int  # counted (or bounded) tokens of the messages
    detail: str
    examples: list[Example]
    dropped_examples: int
    window: int | None
    exact: bool = False

    def provenance(self) -> dict[str, Any]:
        return {"prompt_tokens_counted": self.prompt_tokens, "answer_budget": self.max_tokens,
                "context_window": self.window, "detail": self.detail,
                "dropped_examples": self.dropped_examples, "token_count": "server" if self.exact else "bound"}


@dataclass
class TooLong:
    prompt_tokens: int
    answer_tokens: int
    window: int

    def __str__(self) -> str:
        return (f"the shortest prompt needs {self.prompt_tokens} tokens + {self.answer_tokens} for the answer "
                f"> context window {self.window}")


class ContextBudget:
    """Fits prompts into one model's window (see the module docstring)."""

    def __init__(self, counter: TokenCounter, window: int | None, learned: Any = None) -> None:
        self.counter = counter
        self._configured = window
        self._discovered: int | None = None
        self._discovery_done = window is not None
        self._discovery_lock = asyncio.Lock()
        self._learned = learned  # () -> int | None: what a context-length error said

    async def window(self) -> int | None:
        if self._configured:
            return self._configured
        if not self._discovery_done:
            async with self._discovery_lock:  # once, not once per concurrent task
                if not self._discovery_done:
                    self._discovered = await self.counter.server_window()
                    self._discovery_done = True
        learned = self._learned() if self._learned else None
        known = [w for w in (self._discovered, learned) if w]
        return min(known) if known else None

    async def count(self, messages: list[dict[str, str]]) -> int:
        counts = await asyncio.gather(*(self.counter.count(m["content"]) for m in messages))
        return sum(counts) + MESSAGE_OVERHEAD * len(messages) + REPLY_OVERHEAD

    async def fits(self, messages: list[dict[str, str]], answer_tokens: int, window: int) -> tuple[bool, int]:
        bound = byte_bound(messages)
        if bound + answer_tokens <= window:
            return True, bound
        tokens = await self.count(messages)
        return tokens + answer_tokens <= window, tokens

    async def fit(
        self, prompt: Prompt, texts: dict[str, str], ranked: list[Example], answer_tokens: int,
        candidates: dict[str, list[str]] | None = None, order: dict[int, int] | None = None,
    ) -> Fitted | TooLong:
        """The most complete prompt that fits. ``ranked``: few-shot examples, least similar first;
        ``order``: id(example) -> position in the pool, the order they are shown in (stable across
        tasks, for prefix caching)."""
        window = await self.window()

        def build(detail: str, keep: int) -> tuple[list[dict[str, str]], list[Example]]:
            chosen = ranked[len(ranked) - keep:] if keep else []
            if order is not None:
                chosen = sorted(chosen, key=lambda e: order.get(id(e), 0))
            return prompt.messages(texts, chosen, detail=detail, candidates=candidates), chosen

        if window is None:
            messages, chosen = build("full", len(ranked))
            return Fitted(messages, answer_tokens, byte_bound(messages), "full", chosen, 0, None)
        smallest = 0
        for detail in DETAIL:
            for keep in range(len(ranked), -1, -1):
                messages, chosen = build(detail, keep)
                ok, tokens = await self.fits(messages, answer_tokens, window)
                if ok:
                    return Fitted(messages, answer_tokens, tokens, detail, chosen, len(ranked) - keep, window,
                                  exact=self.counter.exact)
                smallest = tokens
        return TooLong(smallest, answer_tokens, window)

    async def fits_followup(self, messages: list[dict[str, str]], answer_tokens: int) -> bool:
        """Does a corrective follow-up (the first prompt + answer + feedback) still fit?"""
        window = await self.window()
        return window is None or (await self.fits(messages, answer_tokens, window))[0]
