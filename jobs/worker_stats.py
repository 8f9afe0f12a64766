"""The worker's counters, in the backend's ``/metrics``: one view of the system.

A worker process counts what it does in the same Prometheus counters as the backend (tasks by
status, LLM calls by outcome, validation errors, tasks left for humans) plus its own (jobs by kind
and outcome, reconcile rounds). Nobody scrapes a worker, so after every job it adds what its
counters grew by since its last flush to one Redis hash (``WORKER_STATS_KEY``); the backend's
``/metrics`` reads that hash at scrape time and exports each series as ``prelabel_worker_<name>``
with the same labels. Several workers add to the same fields; a crashed worker loses at most the
counts of the job it was running.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import Counter
from prometheus_client.core import REGISTRY, CounterMetricFamily, Metric
from redis.exceptions import RedisError

from prelabel.contract import WORKER_STATS_KEY, as_text
from prelabel.prediction import metrics

log = logging.getLogger(__name__)

JOBS = Counter("prelabel_jobs_done_total", "Jobs a worker ran, by kind (the job function) and outcome.",
               ["kind", "outcome"])
RECONCILE_ROUNDS = Counter(
    "prelabel_reconcile_rounds_total",
    "Reconcile rounds by result: nothing (nothing to do), healed (tasks pre-annotated again), still_failing "
    "(the LLM still fails), aftercare (reviews or a ranking queued for tasks that never got them).",
    ["result"],
)
# What a worker exports: the shared prediction counters and its own.
EXPORTED: tuple[Counter, ...] = (
    metrics.TASKS, metrics.LLM_REQUESTS, metrics.LLM_RETRIES, metrics.VALIDATION_ERRORS, metrics.NEEDS_HUMAN,
    JOBS, RECONCILE_ROUNDS,
)
PREFIX = "prelabel_worker_"


def _field(name: str, labels: dict[str, str]) -> str:
    return f"{name}|{json.dumps(labels, sort_keys=True)}"


def _samples(counters: Iterable[Counter]) -> Iterator[tuple[str, float]]:
    for counter in counters:
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    yield _field(sample.name, dict(sample.labels)), sample.value


class Flusher:
    """Adds the growth of this process's counters since the last flush to the shared hash."""

    def __init__(self, counters: Iterable[Counter] = EXPORTED) -> None:
        self.counters = tuple(counters)
        self._sent: dict[str, float] = {}

    def flush(self, conn: redis.Redis) -> int:
        """Send the deltas (whole counts); returns how many series grew. A Redis error keeps them
        for the next flush."""
        deltas = {}
        for key, value in _samples(self.counters):
            delta = int(value - self._sent.get(key, 0.0))
            if delta > 0:
                deltas[key] = delta
        if not deltas:
            return 0
        try:
            pipe = conn.pipeline()
            for key, delta in deltas.items():
                pipe.hincrby(WORKER_STATS_KEY, key, delta)
            pipe.execute()
        except RedisError as exc:
            log.warning("worker counters not flushed (%s); kept for the next job", type(exc).__name__)
            return 0
        for key, delta in deltas.items():
            self._sent[key] = self._sent.get(key, 0.0) + delta
        return len(deltas)


def read_families(conn: Any) -> list[Metric]:
    """The shared hash as Prometheus counter families named ``prelabel_worker_<name>``."""
    families: dict[str, CounterMetricFamily] = {}
    rows: list[tuple[str, dict[str, str], int]] = []
    for raw_key, raw_value in conn.hgetall(WORKER_STATS_KEY).items():
        name, _, encoded = as_text(raw_key).partition("|")
        try:
            rows.append((name, json.loads(encoded or "{}"), int(raw_value)))
        except ValueError:
            continue
    for name, labels, value in sorted(rows, key=lambda r: (r[0], sorted(r[1].items()))):
        base = PREFIX + name.removeprefix("prelabel_").removesuffix("_total")
        family = families.get(base)
        if family is None:
            family = families[base] = CounterMetricFamily(
                base, f"{name} as counted by the worker processes (summed over workers).", labels=sorted(labels))
        family.add_metric([labels[k] for k in sorted(labels)], value)
    return list(families.values())


class WorkerCounters:
    """Prometheus collector over the shared hash (the backend sets ``conn`` while it runs)."""

    conn: Any = None

    def collect(self) -> Iterator[Metric]:
        if self.conn is None:
            return
        try:
            yield from read_families(self.conn)
        except RedisError:
            return


WORKER_COUNTERS = WorkerCounters()
REGISTRY.register(WORKER_COUNTERS)
