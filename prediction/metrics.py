"""Prometheus metrics of this process (the backend's; a worker's reach its ``/metrics`` via ``jobs.worker_stats``).
Every failure kind has its own label value so an operator can see *why* tasks went to humans, not
just how many did. Counts that the backend and the workers add to together live in Redis instead:
``shared_counters.py``."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Histogram

LLM_REQUESTS = Counter(
    "prelabel_llm_requests_total",
    "LLM call attempts by outcome (ok, rate_limited, server_error, timeout, connection_error, "
    "bad_response, bad_request; local_error: a request that could not be serialised, never sent).",
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
LLM_QUEUE_WAIT = Histogram(
    "prelabel_llm_queue_wait_seconds",
    "Time an LLM call waited for a permit of the adaptive limiter (queueing, not generation).",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
LLM_RETRIES_DENIED = Counter(
    "prelabel_llm_retries_denied_total", "Retries not sent because the retry budget was spent.", ["reason"]
)
LLM_SHAPE_STEPDOWNS = Counter(
    "prelabel_llm_shape_stepdowns_total",
    "Structured-output shape parts an endpoint rejected (mode, logprobs); retried after a while.", ["part"],
)


class LoadCollector:
    """Gauges read from the live LLM clients at scrape time: each endpoint's adaptive limit,
    calls in flight, base latency and queueing delay, calls waiting for a permit, retry budget."""

    def __init__(self) -> None:
        self.clients: list = []

    def collect(self):  # prometheus collector protocol
        from prometheus_client.core import GaugeMetricFamily

        families = {
            "limit": GaugeMetricFamily("prelabel_llm_concurrency_limit", "Current adaptive concurrency limit.",
                                       labels=["model", "endpoint"]),
            "in_flight": GaugeMetricFamily("prelabel_llm_in_flight", "LLM calls in flight.",
                                           labels=["model", "endpoint"]),
            "queue_delay_s": GaugeMetricFamily(
                "prelabel_llm_queue_delay_seconds",
                "Smoothed latency above the endpoint's base latency (queueing inside the server).",
                labels=["model", "endpoint"]),
            "base_rtt_s": GaugeMetricFamily("prelabel_llm_base_latency_seconds",
                                            "Latency of a call with nothing queued (last confirmed).",
                                            labels=["model", "endpoint"]),
        }
        waiting = GaugeMetricFamily("prelabel_llm_waiting", "LLM calls waiting for a permit.", labels=["model"])
        budget = GaugeMetricFamily("prelabel_llm_retry_budget_available",
                                   "Retries the budget still allows in its window.", labels=["model"])
        seen: set[str] = set()
        for client in list(self.clients):
            snap = client.load_snapshot()
            if snap["model"] in seen:  # several clients of one model (a job's, the server's): the first
                continue
            seen.add(snap["model"])
            waiting.add_metric([snap["model"]], snap["waiting"])
            budget.add_metric([snap["model"]], snap["retry_budget"]["available"])
            for row in snap["endpoints"]:
                for key, family in families.items():
                    if row[key] is not None:
                        family.add_metric([snap["model"], row["endpoint"]], row[key])
        yield from families.values()
        yield waiting
        yield budget


LOAD_COLLECTOR = LoadCollector()
REGISTRY.register(LOAD_COLLECTOR)


def register_client(client: object) -> None:
    LOAD_COLLECTOR.clients.append(client)


def unregister_client(client: object) -> None:
    if client in LOAD_COLLECTOR.clients:
        LOAD_COLLECTOR.clients.remove(client)
PREDICT_HANDOFF = Counter(
    "prelabel_predict_handoff_total",
    "Tasks /predict could not finish before Label Studio's deadline, handed to the worker.",
)
INTERACTIVE_CONTEXT = Counter(
    "prelabel_interactive_context_total",
    "Parts of interactive /predict contexts: used (prompt, selected_span, given) or ignored (malformed).",
    ["part"],
)
AFTERCARE_QUEUED = Counter(
    "prelabel_predict_aftercare_queued_total",
    "Tasks /predict answered with a stored prediction whose review and ranking were queued (once per version).",
)
