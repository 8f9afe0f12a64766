"""One-time moves of what older versions stored in Redis into today's key formats.

``tenancy``: keys written before a project carried its Label Studio hold a bare id
(``prelabel:outcome:4711``); they belong to the configured Label Studio (``LABEL_STUDIO_URL``: the
only one whose projects had keys then... or the one that shared them), so they are renamed to its
tenant (``prelabel:outcome:ls3f9a1c2b7d:4711``), TTLs kept. The backend and the worker run it at
start, and ``prelabel migrate`` runs it by hand. It is safe twice and concurrently: it runs under a
Redis lock, is marked done in ``MIGRATIONS_KEY``, and a key already moved (or moved by another
process meanwhile) is skipped. A key whose new name already exists is left where it is and counted
as a conflict (nothing is overwritten); ``prelabel migrate --force`` looks again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

import redis
from redis.exceptions import ResponseError

from prelabel.contract import (
    MIGRATIONS_KEY,
    PREFIX,
    WEBHOOK_WIRING_KEY,
    ProjectRef,
    as_text,
    legacy_key_target,
)
from prelabel.settings import Settings
from prelabel.studio.tenancy import default_tenant

log = logging.getLogger(__name__)

TENANCY = "tenancy"
LOCK_S = 600  # the longest one run may hold the lock (a SCAN of a large Redis)


@dataclass
class Report:
    """What one run did (also stored, as JSON, under ``MIGRATIONS_KEY``)."""

    tenant: str
    renamed: int = 0
    fields: int = 0  # webhook-wiring entries moved
    conflicts: list[str] = field(default_factory=list)
    skipped: bool = False  # marked done by an earlier run: nothing looked at


def migrate_tenancy(conn: redis.Redis, settings: Settings, force: bool = False) -> Report:
    """Rename every bare-id key to the configured Label Studio's tenant (once; see the module doc)."""
    tenant = default_tenant(settings)
    if not force and conn.hexists(MIGRATIONS_KEY, TENANCY):
        return Report(tenant, skipped=True)
    with conn.lock(f"{MIGRATIONS_KEY}:{TENANCY}:lock", timeout=LOCK_S, blocking_timeout=LOCK_S):
        if not force and conn.hexists(MIGRATIONS_KEY, TENANCY):  # another process ran it while we waited
            return Report(tenant, skipped=True)
        report = Report(tenant)
        for key in conn.scan_iter(match=PREFIX + "*", count=1000):
            target = legacy_key_target(key, tenant)
            if target is None:
                continue
            try:
                moved = conn.renamenx(key, target)
            except ResponseError:  # gone since the scan saw it (expired, or moved by an older process)
                continue
            if moved:
                report.renamed += 1
            else:
                report.conflicts.append(as_text(key))
        for name, value in conn.hgetall(WEBHOOK_WIRING_KEY).items():
            pid = as_text(name)
            if pid.isdigit():
                conn.hsetnx(WEBHOOK_WIRING_KEY, str(ProjectRef(tenant, int(pid))), value)
                conn.hdel(WEBHOOK_WIRING_KEY, name)
                report.fields += 1
        conn.hset(MIGRATIONS_KEY, TENANCY, json.dumps({**asdict(report), "time": time.time()}))
    if report.renamed or report.fields:
        log.info("tenancy migration: %d key(s) and %d webhook record(s) moved to the configured Label Studio's "
                 "tenant %s", report.renamed, report.fields, tenant)
    if report.conflicts:
        log.warning("tenancy migration: %d key(s) left under their old name, their new one exists: %s",
                    len(report.conflicts), ", ".join(report.conflicts[:5]))
    return report
