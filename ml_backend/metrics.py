"""Prometheus metrics of the backend. Every failure kind has its own label value so an operator
can see *why* tasks went to humans, not just how many did."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LLM_REQUESTS = Counter(
    "prelabel_llm_requests_total",
    "LLM call attempts by outcome (ok, rate_limited, server_error, timeout, connection_error, "
    "bad_response, bad_request).",
    ["outcome"],
)
LLM_RETRIES = Counter("prelabel_llm_retries_total", "LLM retries by the failure that caused them.", ["reason"])
LLM_LATENCY = Histogram(
    "prelabel_llm_latency_seconds", "Wall time of one successful LLM completion, retries included.",
    buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
VALIDATION_ERRORS = Counter(
    "prelabel_validation_errors_total",
    "Invalid LLM answers per control type and reason (before and after the corrective retry).",
    ["control_type", "reason", "attempt"],
)
TASKS = Counter(
    "prelabel_tasks_total", "Tasks processed by final status (ok, needs_human, error).", ["status", "cache"]
)
NEEDS_HUMAN = Counter(
    "prelabel_needs_human_total", "Tasks or controls left for humans, by reason.", ["reason"]
)
CACHE = Counter("prelabel_cache_requests_total", "Prediction cache lookups.", ["result"])
BAD_REQUESTS = Counter("prelabel_bad_requests_total", "Rejected HTTP requests by reason.", ["endpoint", "reason"])
UNSUPPORTED_CONTROLS = Counter(
    "prelabel_unsupported_controls_total", "Controls skipped because they cannot be filled from text.", ["tag"]
)
PREDICT_LATENCY = Histogram(
    "prelabel_predict_request_seconds", "Wall time of one /predict request.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
WEBHOOK_EVENTS = Counter("prelabel_webhook_events_total", "Webhook events received by action.", ["action"])
INTERACTIVE_CONTEXT = Counter(
    "prelabel_interactive_context_total",
    "Parts of interactive /predict contexts: used (prompt, selected_span, given) or ignored (malformed).",
    ["part"],
)
