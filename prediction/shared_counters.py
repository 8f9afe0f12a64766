"""Counters that the backend and the worker processes both add to, kept in Redis.

Pre-annotation runs in the backend (``/predict``) and in workers (batch jobs). A Prometheus
counter in one process would show half the truth, so these counts are Redis hash fields,
incremented by whichever process did the work and read by the backend's ``/metrics`` at scrape
time (as the queue's state is, see ``jobs.status``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from prelabel.contract import CASCADE_STATS_KEY, REUSE_STATS_KEY, REVIEWER_INDEPENDENCE_KEY, as_text

INDEPENDENCE_METRIC = "prelabel_reviewer_independence"
INDEPENDENCE_DOC = ("1 for the verdict of the last check whether the reviewer serves other weights than the "
                    "pre-annotator (different_weights, same_weights, unknown).")
_FAMILIES = {
    CASCADE_STATS_KEY: ("prelabel_cascade_routes", ("Tasks answered per cascade route (cheap model, or fallback "
                                              "below the calibrated threshold), backend and workers."), "route"),
    REUSE_STATS_KEY: ("prelabel_near_duplicate_tasks", ("Near-duplicate tasks that reused their representative's "
                                                  "answer, or failed revalidation and were asked individually."),
                "outcome"),
}


async def count(client: Any, key: str, field: str, n: int = 1) -> None:
    """Add ``n`` to a shared counter; a Redis hiccup costs the count, never the prediction."""
    if client is None or n <= 0:
        return
    with contextlib.suppress(RedisError):
        await client.hincrby(key, field, n)


def read(conn: Any, key: str) -> dict[str, int]:
    return {as_text(k): int(v) for k, v in conn.hgetall(key).items()}


class SharedCounters:
    """Prometheus collector over the Redis counters; reads them through ``conn``, which the backend
    sets to its Redis connection while it runs (None: nothing to report)."""

    conn: Any = None

    def describe(self) -> Iterator[Metric]:
        """The families without values: registering must not read Redis (or import the queue)."""
        for name, doc, label in _FAMILIES.values():
            yield CounterMetricFamily(name, doc, labels=[label])
        yield GaugeMetricFamily(INDEPENDENCE_METRIC, INDEPENDENCE_DOC, labels=["verdict"])

    def collect(self) -> Iterator[Metric]:
        conn = self.conn
        if conn is None:
            return
        for key, (name, doc, label) in _FAMILIES.items():
            try:
                values = read(conn, key)
            except RedisError:
                return
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, n in sorted(values.items()):
                family.add_metric([value], n)
            yield family
        try:
            raw = conn.get(REVIEWER_INDEPENDENCE_KEY)
        except RedisError:
            return
        if raw:
            gauge = GaugeMetricFamily(INDEPENDENCE_METRIC, INDEPENDENCE_DOC, labels=["verdict"])
            gauge.add_metric([json.loads(raw)["verdict"]], 1)
            yield gauge


SHARED_COUNTERS = SharedCounters()
REGISTRY.register(SHARED_COUNTERS)
