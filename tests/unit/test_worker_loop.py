"""``prelabel worker`` outlives RQ's work loop when that loop quits on an error between two jobs
(Redis gone while RQ writes its heartbeat: seen in the Redis-restart e2e), and still stops on
request (``jobs/worker.work_until_stopped``)."""

from __future__ import annotations

import pytest
import redis
from rq.exceptions import StopRequested

from prelabel.jobs import worker as worker_module
from prelabel.jobs.worker import work_until_stopped


class FakeWorker:
    """RQ's loop as seen from outside: ``work`` returns (quit on an error) or a stop was asked."""

    def __init__(self, name: str, outcome: str) -> None:
        self.name, self.outcome, self.stop_asked, self.ran = name, outcome, False, False

    def work(self, **_: object) -> None:
        self.ran = True
        if self.outcome == "stop":
            self.stop_asked = True
        elif self.outcome == "teardown-error":
            raise redis.ConnectionError("Error 111 connecting: Connection refused.")


class FlakyRedis:
    def __init__(self, down_for: int) -> None:
        self.pings, self.down_for = 0, down_for

    def ping(self) -> bool:
        self.pings += 1
        if self.pings <= self.down_for:
            raise redis.ConnectionError("Connection refused")
        return True


def test_a_loop_rq_quit_is_started_again_once_redis_answers(monkeypatch, caplog) -> None:
    monkeypatch.setattr(worker_module.time, "sleep", lambda s: None)
    workers = iter([FakeWorker("w1", "quit"), FakeWorker("w2", "teardown-error"), FakeWorker("w3", "stop")])
    made: list[FakeWorker] = []

    def make() -> FakeWorker:
        made.append(next(workers))
        return made[-1]

    conn = FlakyRedis(down_for=3)
    with caplog.at_level("WARNING", logger="prelabel.jobs.worker"):
        work_until_stopped(make, conn, burst=False, logging_level="INFO")
    assert [w.name for w in made] == ["w1", "w2", "w3"] and all(w.ran for w in made)
    assert conn.pings == 5  # three refused while Redis was down, then one answer before each new loop
    assert "RQ's loop ended without a stop request" in caplog.text and "Redis went away" in caplog.text


def test_a_stop_request_or_a_burst_ends_it(monkeypatch) -> None:
    made: list[FakeWorker] = []
    work_until_stopped(lambda: made.append(FakeWorker("w", "stop")) or made[-1], FlakyRedis(0), burst=False,
                       logging_level="INFO")
    work_until_stopped(lambda: made.append(FakeWorker("b", "quit")) or made[-1], FlakyRedis(0), burst=True,
                       logging_level="INFO")
    assert [w.name for w in made] == ["w", "b"]

    def stopped(_: float) -> None:  # SIGTERM while waiting for Redis: RQ's handler raises StopRequested
        raise StopRequested()

    monkeypatch.setattr(worker_module.time, "sleep", stopped)
    work_until_stopped(lambda: made.append(FakeWorker("q", "quit")) or made[-1], FlakyRedis(10), burst=False,
                       logging_level="INFO")
    assert [w.name for w in made] == ["w", "b", "q"]


def test_the_worker_records_a_stop_asked_between_jobs(embedded_redis) -> None:
    from prelabel.jobs.queue import job_queue
    from prelabel.jobs.worker import CountingWorker

    worker = CountingWorker([job_queue(embedded_redis)], connection=embedded_redis)
    with pytest.raises(StopRequested):  # idle: RQ raises it to leave its loop, and keeps no flag itself
        worker.request_stop(15, None)
    assert worker.stop_asked
