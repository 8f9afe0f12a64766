"""The pre-annotation model: Label Studio tasks in, validated predictions with provenance out.

Per task: object texts -> few-shot examples -> cache lookup -> LLM call -> parse + validate ->
(one corrective retry with the errors fed back) -> regions + confidence + provenance. A task the
model could not label validly gets no region for the failing control and a ``needs_human``
status with the reason; an LLM outage gives ``error``. Neither is cached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from redis.exceptions import RedisError

from prelabel.contract import REGION_PROVENANCE, ModelVersion, Prediction, TaskStatus, stamp_of, with_status
from prelabel.label_config.answers import (
    CheckedAnswer,
    RegionLimits,
    apply_constraints,
    check_answer,
    feedback,
    parse_answer,
)
from prelabel.label_config.controls import AnswerError, ChoicesField, LabelsField
from prelabel.label_config.guideline import (
    Guideline,
    GuidelineError,
    default_guideline,
    guideline_ref,
    load_guideline,
    named_guideline_path,
    parse_guideline,
    shipped_templates,
    template_path,
)
from prelabel.label_config.guideline_store import prompt_writes
from prelabel.label_config.schema import (
    ConfigError,
    OutputSchema,
    TaskDataError,
    build_schema,
    config_hash,
    metric_tag,
    unsupported_once,
)
from prelabel.lru import LRU
from prelabel.prediction import metrics
from prelabel.prediction.cache import PredictionCache, cache_key
from prelabel.prediction.confidence import FALLBACK_SCORE, answer_confidences, span_confidences
from prelabel.prediction.context_budget import ContextBudget, Fitted, TokenCounter, TooLong, answer_budget
from prelabel.prediction.distribution import answer_label_probs, distribution_score, kind_of
from prelabel.prediction.fewshot import FewShotPool, file_examples, guideline_examples
from prelabel.prediction.llm_client import Completion, LLMClient, LLMError
from prelabel.prediction.prompt import INPUT_TEMPLATE, NONE_OF_THESE, Example, Prompt, answer_schema
from prelabel.prediction.shortlist import Shortlister
from prelabel.redis_conn import async_client
from prelabel.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

RAW_OUTPUT_CHARS = 1000  # of each answer kept in a failed task's meta.raw_output


@dataclass
class ProjectContext:
    """Everything derived from one (labeling config, guideline) pair, built once."""

    schema: OutputSchema
    guideline: Guideline
    guideline_name: str
    prompt: Prompt
    pool: FewShotPool

    shortlist_k: int = 15
    interactive: bool = False  # shaped by one labeling-screen context: not a version of the project
    _shortlisters: dict[int, tuple[FewShotPool, dict[str, Shortlister]]] = field(default_factory=dict, repr=False)
    _pool_order: dict[int, tuple[FewShotPool, dict[int, int]]] = field(default_factory=dict, repr=False)
    _styled: dict[str, ProjectContext] = field(default_factory=dict, repr=False)

    def pool_with(self, examples: list[Example]) -> FewShotPool:
        """This context's pool plus more examples (e.g. a project's human-labeled tasks)."""
        return FewShotPool(self.pool.examples + examples)

    def candidates(self, texts: dict[str, str], pool: FewShotPool) -> dict[str, list[str]]:
        """Per shortlisted control, the candidate labels for this task (``shortlist``)."""
        if not self.prompt.shortlisted:
            return {}
        if id(pool) not in self._shortlisters:
            if len(self._shortlisters) > 8:  # pools are replaced when /setup reloads human labels
                self._shortlisters.clear()
            self._shortlisters[id(pool)] = (pool, {
                # Only Choices controls are shortlisted (Prompt.shortlisted).
                name: Shortlister(cast(ChoicesField, self.schema.field(name)), self.guideline, pool.examples,
                                  self.shortlist_k)
                for name in sorted(self.prompt.shortlisted)})
        query = "\n".join(texts.values())
        return {name: s.candidates(query) for name, s in self._shortlisters[id(pool)][1].items()}

    def styled(self, style: str) -> ProjectContext:
        """This context with the prompt of another ``prompt_style`` (same schema, guideline and pool):
        a cascade's fallback is prompted its own way, not with the fine-tuned cheap model's compact
        prompt. Built once per style."""
        if style == self.prompt.style:
            return self
        if style not in self._styled:
            prompt = Prompt(self.schema, self.guideline, self.prompt.shortlisted, style=style)
            self._styled[style] = replace(self, prompt=prompt, _styled={})
        return self._styled[style]

    def pool_order(self, pool: FewShotPool) -> dict[int, int]:
        """id(example) -> its place in the pool: few-shot turns are shown in this stable order."""
        if id(pool) not in self._pool_order:
            if len(self._pool_order) > 8:
                self._pool_order.clear()
            self._pool_order[id(pool)] = (pool, {id(e): i for i, e in enumerate(pool.examples)})
        return self._pool_order[id(pool)][1]

    def version_writes(self) -> dict[str, str]:
        """The Redis writes that keep this prompt version resolvable to its text (guideline_store)."""
        return prompt_writes(version=self.prompt.version, system=self.prompt.system, input_template=INPUT_TEMPLATE,
                             guideline=self.guideline, guideline_name=self.guideline_name,
                             config_hash=self.schema.config_hash)


@dataclass
class _Attempt:
    completion: Completion
    checked: CheckedAnswer
    confidences: dict[str, float] | None = None
    label_probs: dict[str, dict[str, float]] = field(default_factory=dict)
    span_scores: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)  # Labels: per (text, label)


@dataclass
class _Outcome:
    regions: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, AnswerError] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    score_sources: dict[str, str] = field(default_factory=dict)

    @property
    def score_source(self) -> str:
        """``label_probs`` when every score came from a label distribution, ``logprobs`` when
        some came from the chosen tokens only, ``none`` without logprobs (the 0.5 fallback)."""
        if self.regions and not self.scores:
            return "none"
        return "label_probs" if set(self.score_sources.values()) == {"label_probs"} else "logprobs"


# A built context holds ~40 bytes per byte of its config (a 4 KB config of 60 hinted choices: ~165 KB,
# tests/integration/test_hostile_corpus.py): the context cache is sized in these estimated bytes.
CONTEXT_BYTES_PER_CONFIG_BYTE = 40


class ContextBuilder:
    """Builds the ``ProjectContext`` of a (labeling config, guideline) pair and keeps it in an LRU.

    All that validating, exporting or reviewing against a config needs, without an LLM client or
    a cache: the worker's jobs and the export use it directly, a ``Predictor`` owns one.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._contexts: LRU[tuple[str, str], ProjectContext] = LRU(
            settings.context_cache_size, settings.context_cache_bytes,
            lambda ctx: len(ctx.schema.config) * CONTEXT_BYTES_PER_CONFIG_BYTE)
        self._template_signatures: dict[tuple, str] | None = None

    def __len__(self) -> int:
        return len(self._contexts)

    def context(
        self, label_config: str, guideline: str | dict | None = None, *, allow_path: bool = False
    ) -> ProjectContext:
        """Build (or reuse) the schema, guideline, prompt and few-shot pool of a config.

        ``guideline`` is a name (shipped or in ``guidelines_dir``) or an inline mapping; a file
        path is accepted only with ``allow_path`` (the CLI), never from an HTTP request. Built
        contexts are kept in an LRU of ``context_cache_size`` (configs come from requests: an
        unbounded cache is a memory leak anyone can drive).
        """
        key, source = self._context_key(label_config, guideline, allow_path)
        return self._contexts.get_or_build(
            key, lambda: self._build_context(build_schema(label_config, self.settings.span_occurrence), source))

    def cached_context(self, label_config: str, guideline: str | dict | None = None) -> ProjectContext | None:
        """The context of this config and guideline if it is already built (cheap: no parsing)."""
        return self._contexts.get(self._context_key(label_config, guideline, False)[0])

    def _context_key(
        self, label_config: str, guideline: str | dict | None, allow_path: bool
    ) -> tuple[tuple[str, str], Path | dict | None]:
        if not isinstance(label_config, str) or not label_config.strip():
            raise ConfigError("empty labeling config")
        source: Path | dict | None
        if isinstance(guideline, str) and allow_path and Path(guideline).is_file():
            source = Path(guideline)
        else:
            ref = guideline_ref(guideline)  # a plain name, a bounded mapping or None
            source = named_guideline_path(ref, self.settings.guidelines_dir) if isinstance(ref, str) else ref
        ref = json.dumps(source, sort_keys=True) if isinstance(source, dict) else str(source)
        return (config_hash(label_config), ref), source

    def _build_context(self, schema: OutputSchema, guideline_ref: Path | dict | None) -> ProjectContext:
        for item in unsupported_once(schema):
            metrics.UNSUPPORTED_CONTROLS.labels(metric_tag(item.tag)).inc()
        guideline, name = self._resolve_guideline(schema, guideline_ref)
        errors, warnings = guideline.check_against(schema)
        if errors:
            raise ConfigError(f"guideline '{name}' does not fit the labeling config: " + "; ".join(errors))
        for warning in warnings:
            log.info("guideline %s: %s", name, warning)
        if guideline.span_occurrence is not None:  # the guideline asks for every mention (or not)
            for control in schema.fields:
                if isinstance(control, LabelsField):
                    control.occurrence = guideline.span_occurrence
        examples = guideline_examples(guideline, schema)
        if self.settings.fewshot_file:
            examples += file_examples(self.settings.fewshot_file, schema)
        shortlisted = frozenset(c.name for c in schema.fields
                                if isinstance(c, ChoicesField) and len(c.labels) > self.settings.shortlist_above)
        prompt = Prompt(schema, guideline, shortlisted, style=self.settings.prompt_style)
        return ProjectContext(schema, guideline, name, prompt, FewShotPool(examples),
                              shortlist_k=self.settings.shortlist_k)

    def _resolve_guideline(self, schema: OutputSchema, ref: Path | dict | None) -> tuple[Guideline, str]:
        if isinstance(ref, dict):
            return parse_guideline(ref, "<request>"), str(ref.get("name", "inline"))
        if ref is not None:
            return load_guideline(ref), ref.stem
        if self.settings.guideline:
            return load_guideline(self.settings.guideline), self.settings.guideline
        template = self._matching_template(schema)
        if template:
            return load_guideline(template), template
        return default_guideline(schema), "default"

    def _matching_template(self, schema: OutputSchema) -> str | None:
        """A shipped template whose config has exactly these controls and labels."""
        if self._template_signatures is None:
            self._template_signatures = {}
            for name in shipped_templates():
                try:
                    xml = template_path(name, ".xml").read_text(encoding="utf-8")
                    self._template_signatures[_signature(build_schema(xml))] = name
                except (GuidelineError, ConfigError, OSError) as exc:
                    log.warning("shipped template %s is unusable: %s", name, exc)
        return self._template_signatures.get(_signature(schema))


class Predictor:
    def __init__(self, settings: Settings, llm: LLMClient, cache: PredictionCache | None) -> None:
        self.settings = settings
        self.llm = llm
        self.cache = cache
        self.contexts = ContextBuilder(settings)
        self.region_limits = RegionLimits(settings.max_regions_per_control, settings.max_regions_per_task)
        self._stored_versions: set[str] = set()
        endpoint = llm.endpoints[0]
        counter = TokenCounter(endpoint.url, endpoint.client.api_key, llm.model)
        self.budget = ContextBudget(counter, settings.llm_context_window, llm.learned_context_window)

    # --- project context -----------------------------------------------------------------
    def context(
        self, label_config: str, guideline: str | dict | None = None, *, allow_path: bool = False
    ) -> ProjectContext:
        """The config's context, from this predictor's ``ContextBuilder`` (see there)."""
        return self.contexts.context(label_config, guideline, allow_path=allow_path)

    def cached_context(self, label_config: str, guideline: str | dict | None = None) -> ProjectContext | None:
        return self.contexts.cached_context(label_config, guideline)

    # --- prediction ----------------------------------------------------------------------
    async def predict(
        self, tasks: list[dict[str, Any]], context: ProjectContext, pool: FewShotPool | None = None
    ) -> list[Prediction]:
        """Predictions for ``tasks`` in order; tasks run concurrently (bounded by the LLM client).

        ``pool`` replaces the context's few-shot pool (a project's own, with its human labels).
        """
        await self._store_version(context)
        return list(await asyncio.gather(*(self._predict_isolated(task, context, pool) for task in tasks)))

    async def predict_until(
        self, tasks: list[Any], context: ProjectContext, pool: FewShotPool | None, deadline: float
    ) -> list[Prediction | None]:
        """Like ``predict``, but stops at ``deadline`` (event-loop time): tasks not finished by
        then are cancelled (their LLM calls too) and come back as ``None``."""
        await self._store_version(context)
        return await gather_until([self._predict_isolated(task, context, pool) for task in tasks], deadline)

    async def _store_version(self, ctx: ProjectContext) -> None:
        """Keep the prompt version (and its guideline) by content, so that any ``p-<hash>`` in a
        prediction resolves to the exact text (``prelabel prompts show``); once per process."""
        version = ctx.prompt.version
        if self.cache is None or ctx.interactive or version in self._stored_versions:
            return
        try:
            await self.cache.client.mset(ctx.version_writes())
        except RedisError as exc:  # predictions matter more; the next request tries again
            log.warning("prompt version %s not stored: %s", version, type(exc).__name__)
            return
        self._stored_versions.add(version)

    async def _predict_isolated(
        self, task: Any, ctx: ProjectContext, pool: FewShotPool | None
    ) -> Prediction:
        """``predict_task``, but an unexpected failure costs this task only, never the batch."""
        started = time.perf_counter()
        try:
            return await self.predict_task(task, ctx, pool)
        except Exception as exc:  # a bug or an unforeseen upstream answer: fail closed, logged
            log.exception("task %s: unexpected %s", task.get("id") if isinstance(task, dict) else "?",
                          type(exc).__name__)
            metrics.TASKS.labels(TaskStatus.ERROR, "miss").inc()
            metrics.NEEDS_HUMAN.labels("internal_error").inc()
            return self._prediction(ctx, [], 0.0, TaskStatus.ERROR, {"task": f"internal_error: {type(exc).__name__}"},
                                    started)

    async def predict_task(
        self, task: dict[str, Any], ctx: ProjectContext, pool: FewShotPool | None = None
    ) -> Prediction:
        started = time.perf_counter()
        texts = self._texts(task, ctx)
        if isinstance(texts, tuple):  # the input itself is unusable: no LLM call
            return self._no_prediction(ctx, *texts, started)
        pool = pool or ctx.pool
        examples = pool.select(texts, self.settings.fewshot_k, exclude=f"task:{task.get('id')}")
        candidates = ctx.candidates(texts, pool)
        window = await self.budget.window()
        key = cache_key(
            model=self.llm.model, prompt=ctx.prompt.version, config=ctx.schema.config_hash, texts=texts,
            examples=[[e.texts, e.answer] for e in examples], temperature=self.llm.temperature,
            occurrence=self.settings.span_occurrence, **({"candidates": candidates} if candidates else {}),
            **({"window": window} if window else {}),
        )
        cached = await self._cached(key, started)
        if cached is not None:
            return cached
        answer_tokens = answer_budget(ctx.schema, texts, self.llm.max_tokens, candidates)
        fitted = await self._fit(ctx, texts, examples, answer_tokens, candidates, pool)
        if isinstance(fitted, TooLong):
            return self._no_prediction(ctx, "context_too_long", str(fitted), started)
        try:
            outcome, attempts = await self._label(ctx, texts, fitted, candidates)
        except LLMError as exc:
            if exc.kind == "context_too_long":  # the server counted more than we did: no retry helps
                return self._no_prediction(ctx, "context_too_long", str(exc), started)
            metrics.TASKS.labels(TaskStatus.ERROR, "miss").inc()
            metrics.NEEDS_HUMAN.labels(f"llm_{exc.kind}").inc()
            return self._prediction(ctx, [], 0.0, TaskStatus.ERROR, {"llm": f"{exc.kind}: {exc}"}, started,
                                    provenance={"llm_error": exc.kind})
        prediction = self._answered(ctx, outcome, attempts, fitted, candidates, started)
        if prediction["meta"]["status"] == TaskStatus.OK and self.cache is not None:
            await self.cache.set(key, prediction)
        return prediction

    def _texts(self, task: Any, ctx: ProjectContext) -> dict[str, str] | tuple[str, str]:
        """The task's texts per object, or (reason, message) when there is nothing to ask the model
        (unusable data, a guideline input rule, an empty or too long text)."""
        try:
            texts = ctx.schema.object_texts(task.get("data") if isinstance(task, dict) else None)
        except TaskDataError as exc:
            return "bad_task_data", str(exc)
        problem = ctx.guideline.input_problem(task["data"], ctx.schema)
        if problem:
            return "bad_task_data", problem
        if not any(text.strip() for text in texts.values()):
            return "empty_input", "task text is empty"
        size = sum(len(text) for text in texts.values())
        if size > self.settings.max_text_chars:
            return "text_too_long", f"{size} characters > max_text_chars={self.settings.max_text_chars}"
        return texts

    async def _cached(self, key: str, started: float) -> Prediction | None:
        """The cached prediction for ``key``, stamped as a cache hit now."""
        cached = await self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            cached["meta"]["provenance"].update(cached=True, time=_now(), latency_ms=_ms(started))
            for region in cached["result"]:
                region["prelabel"].update({"cached": True, "time": cached["meta"]["provenance"]["time"]})
            metrics.TASKS.labels(cached["meta"]["status"], "hit").inc()
        return cached

    def _answered(self, ctx: ProjectContext, outcome: _Outcome, attempts: list[_Attempt], fitted: Fitted,
                  candidates: dict[str, list[str]], started: float) -> Prediction:
        """The prediction of what the model answered: its status, score and provenance."""
        completion = attempts[-1].completion
        status = TaskStatus.OK if not outcome.errors else TaskStatus.NEEDS_HUMAN
        for error in outcome.errors.values():
            metrics.NEEDS_HUMAN.labels(error.reason).inc()
        score = min(outcome.scores.values()) if outcome.scores and outcome.regions else (
            FALLBACK_SCORE if outcome.regions else 0.0)
        prediction = self._prediction(
            ctx, outcome.regions, score, status,
            {name: f"{error.reason}: {error.message}" for name, error in outcome.errors.items()},
            started,
            provenance={
                # ``model`` stays the configured name (the route: what model_version, the calibration
                # maps and the cascade key on); a server may answer with another, e.g. a dated one
                "served_model": completion.model,
                "endpoint": completion.endpoint,
                "structured_output": completion.mode,
                "llm_calls": len(attempts),
                "llm_attempts": sum(a.completion.attempts for a in attempts),
                "fewshot": [e.source for e in fitted.examples],
                "score_source": outcome.score_source,
                "raw_score": round(score, 6),
                "calibration": "uncalibrated",
                "control_scores": outcome.scores,
                "control_score_sources": outcome.score_sources,
                "usage": completion.usage,
                "queue_ms": round(sum(a.completion.queue_s for a in attempts) * 1000, 2),
                "prompt_fit": fitted.provenance(),
                **({"shortlist": candidates} if candidates else {}),
            },
        )
        metrics.TASKS.labels(status, "miss").inc()
        if status != TaskStatus.OK:  # what the model said, for debugging (never cached: failures are not)
            prediction["meta"]["raw_output"] = [a.completion.content[:RAW_OUTPUT_CHARS] for a in attempts]
        return prediction

    async def _fit(
        self, ctx: ProjectContext, texts: dict[str, str], examples: list[Example], answer_tokens: int,
        candidates: dict[str, list[str]], pool: FewShotPool,
    ) -> Fitted | TooLong:
        """The task's prompt fitted to the context window (``context_budget``)."""
        order = ctx.pool_order(pool)
        return await self.budget.fit(ctx.prompt, texts, examples, answer_tokens, candidates, order)

    async def _label(
        self, ctx: ProjectContext, texts: dict[str, str], fitted: Fitted, candidates: dict[str, list[str]]
    ) -> tuple[_Outcome, list[_Attempt]]:
        messages = fitted.messages
        schema = answer_schema(ctx.schema, candidates) if candidates else ctx.schema.json_schema()
        first = await self._ask(ctx, messages, texts, 1, schema, fitted.max_tokens, candidates)
        attempts = [first]
        # "none of the candidates" is an answer, not a mistake to correct
        correctable = {n: e for n, e in first.checked.errors.items() if e.reason != "not_in_shortlist"}
        if correctable:
            retry_messages = messages + [
                {"role": "assistant", "content": first.completion.content},
                {"role": "user", "content": feedback(correctable)},
            ]
            if await self.budget.fits_followup(retry_messages, fitted.max_tokens):
                attempts.append(await self._ask(ctx, retry_messages, texts, 2, schema, fitted.max_tokens, candidates))
        return _merge(ctx, attempts), attempts

    async def _ask(
        self, ctx: ProjectContext, messages: list[dict[str, str]], texts: dict[str, str], attempt: int,
        schema: dict[str, Any], max_tokens: int, candidates: dict[str, list[str]],
    ) -> _Attempt:
        completion = await self.llm.complete(messages, schema, max_tokens=max_tokens)
        metrics.LLM_LATENCY.observe(completion.latency_s)
        try:
            answer, start = parse_answer(completion.content)
        except AnswerError as exc:
            metrics.VALIDATION_ERRORS.labels("answer", exc.reason, str(attempt)).inc()
            errors = {c.name: AnswerError(c.name, exc.reason, exc.message) for c in ctx.schema.fields}
            return _Attempt(completion, CheckedAnswer({}, errors=errors))
        answer, declined = _declined(answer, candidates)
        checked = check_answer(ctx.schema, ctx.guideline.constraints, answer, texts, self.region_limits)
        checked.errors.update(declined)
        for name, error in checked.errors.items():
            metrics.VALIDATION_ERRORS.labels(ctx.schema.field(name).tag, error.reason, str(attempt)).inc()
        confidences = answer_confidences(completion.content, start, completion.tokens, ctx.schema.fields, answer)
        label_probs = answer_label_probs(completion.content, start, completion.tokens, ctx.schema.fields, answer)
        span_scores = span_confidences(completion.content, start, completion.tokens, ctx.schema.fields, answer)
        return _Attempt(completion, checked, confidences, label_probs, span_scores)

    # --- output --------------------------------------------------------------------------
    def _no_prediction(self, ctx: ProjectContext, reason: str, message: str, started: float) -> Prediction:
        metrics.NEEDS_HUMAN.labels(reason).inc()
        metrics.TASKS.labels(TaskStatus.NEEDS_HUMAN, "none").inc()
        return self._prediction(ctx, [], 0.0, TaskStatus.NEEDS_HUMAN, {"task": f"{reason}: {message}"}, started)

    def timed_out(self, ctx: ProjectContext, reason: str, message: str, started: float) -> Prediction:
        """The error answer of a task whose caller stopped waiting (counted as ``reason``)."""
        metrics.TASKS.labels(TaskStatus.ERROR, "miss").inc()
        metrics.NEEDS_HUMAN.labels(reason).inc()
        return self._prediction(ctx, [], 0.0, TaskStatus.ERROR, {"task": f"{reason}: {message}"}, started,
                                provenance={"llm_error": reason})

    def _prediction(
        self, ctx: ProjectContext, regions: list[dict[str, Any]], score: float, status: str,
        errors: dict[str, str], started: float, provenance: dict[str, Any] | None = None,
    ) -> Prediction:
        """A Label Studio prediction.

        Label Studio stores only ``result``, ``score`` and ``model_version`` of a prediction
        (other keys are dropped) but keeps extra keys inside regions verbatim. So each region
        carries a compact ``prelabel`` provenance record, and a task that is not fully labeled
        shows it in ``model_version`` (``…#needs_human`` / ``…#error``), which the Data Manager
        can filter on. ``meta`` holds everything, for API and CLI callers.
        """
        record = {
            "model": self.llm.model,
            "prompt_version": ctx.prompt.version,
            "guideline": ctx.guideline_name,
            "guideline_hash": ctx.guideline.hash,
            "config_hash": ctx.schema.config_hash,
            "time": _now(),
            "cached": False,
            "latency_ms": _ms(started),
            **(provenance or {}),
        }
        stamp = {key: record.get(key) for key in REGION_PROVENANCE} | {"status": status}
        result: list[Any] = [{**region, "prelabel": {**stamp_of(region), **stamp}} for region in regions]
        return {
            "result": result,
            "score": round(score, 6),
            "model_version": with_status(self.model_version(ctx), status),
            "meta": {
                "status": status,
                "errors": errors,
                "skipped_controls": [f"{u.tag}:{u.name}" for u in ctx.schema.unsupported],
                "provenance": record,
            },
        }

    def model_version(self, ctx: ProjectContext) -> str:
        return ModelVersion(self.llm.model, ctx.prompt.version).family


def _merge(ctx: ProjectContext, attempts: list[_Attempt]) -> _Outcome:
    """Per control, the first attempt's valid value wins; the corrective attempt fills the rest.

    Domain constraints are re-checked on the merged answer because two individually valid
    values from different attempts can still break a cross-field rule together.
    """
    merged = CheckedAnswer({})
    scores: dict[str, float] = {}
    sources: dict[str, str] = {}
    distributions: dict[str, dict[str, float]] = {}
    span_scores: dict[str, dict[tuple[str, str], float]] = {}
    for control in ctx.schema.fields:
        for attempt in attempts:
            if control.name in attempt.checked.regions:
                merged.answer[control.name] = attempt.checked.answer.get(control.name)
                merged.regions[control.name] = attempt.checked.regions[control.name]
                if attempt.confidences and control.name in attempt.confidences:
                    scores[control.name], sources[control.name] = attempt.confidences[control.name], "logprobs"
                    span_scores[control.name] = attempt.span_scores.get(control.name, {})
                if control.name in attempt.label_probs:
                    distributions[control.name] = attempt.label_probs[control.name]
                    score = distribution_score(control, merged.answer[control.name], distributions[control.name])
                    if score is not None:
                        scores[control.name], sources[control.name] = round(score, 6), "label_probs"
                break
            if control.name not in attempt.checked.errors and control.name in attempt.checked.answer:
                merged.answer[control.name] = attempt.checked.answer[control.name]  # valid but empty
                break
        else:
            error = next((a.checked.errors[control.name] for a in reversed(attempts)
                          if control.name in a.checked.errors), None)
            if error is not None:
                merged.errors[control.name] = error
    apply_constraints(merged, ctx.guideline.constraints)
    outcome = _Outcome(errors=merged.errors)
    for control in ctx.schema.fields:
        for region in merged.regions.get(control.name, []):
            if control.name in scores:
                region = {**region, "score": _region_score(region, span_scores.get(control.name), scores[control.name])}
            if control.name in distributions:
                region = {**region, "prelabel": {"label_probs": distributions[control.name],
                                                 "label_probs_kind": kind_of(control)}}
            outcome.regions.append(region)
    outcome.scores = {name: score for name, score in scores.items() if name in merged.regions}
    outcome.score_sources = {name: source for name, source in sources.items() if name in outcome.scores}
    return outcome


def _region_score(region: dict[str, Any], own: dict[tuple[str, str], float] | None, control_score: float) -> float:
    """A span region's own confidence (from the tokens of its text and label), else its control's."""
    value = region.get("value") or {}
    labels = value.get("labels") or []
    if own and labels:
        return own.get((str(value.get("text")), str(labels[0])), control_score)
    return control_score


def _declined(
    answer: dict[str, Any], candidates: dict[str, list[str]]
) -> tuple[dict[str, Any], dict[str, AnswerError]]:
    """Take shortlisted controls answered with ``none_of_these`` out of the answer, as errors."""
    declined: dict[str, AnswerError] = {}
    for name, labels in candidates.items():
        value = answer.get(name)
        if value == NONE_OF_THESE or (isinstance(value, list) and NONE_OF_THESE in value):
            answer = {k: v for k, v in answer.items() if k != name}
            declined[name] = AnswerError(
                name, "not_in_shortlist", f"none of the {len(labels)} candidate labels fits ({', '.join(labels)})")
    return answer, declined


async def gather_until(coros: list[Awaitable[T]], deadline: float) -> list[T | None]:
    """Run ``coros`` concurrently until ``deadline`` (event-loop time); the unfinished ones are
    cancelled (their LLM calls too) and come back as ``None``."""
    jobs = [asyncio.ensure_future(coro) for coro in coros]
    if not jobs:
        return []
    _, pending = await asyncio.wait(jobs, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
    for job in pending:
        job.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return [job.result() if job.done() and not job.cancelled() else None for job in jobs]


def _signature(schema: OutputSchema) -> tuple:
    return tuple(sorted((c.name, c.tag, tuple(c.label_values)) for c in schema.fields))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


@asynccontextmanager
async def open_predictor(settings: Settings) -> AsyncIterator[Predictor]:
    """A Predictor wired to the configured LLM endpoints and the Redis cache, closed on exit.

    The server, the CLI and the worker's batch job all pre-annotate through this one door.
    """
    client = async_client(settings)
    llm = LLMClient(settings)
    predictor = Predictor(settings, llm, PredictionCache(client, settings.cache_ttl))
    try:
        await client.ping()
        yield predictor
    finally:
        await llm.aclose()
        await predictor.budget.counter.aclose()
        await client.aclose()
        await client.connection_pool.disconnect()  # a pool passed in is not closed by aclose()
