"""Which Label Studio a request's project belongs to (its tenant), so two instances never share one.

Every Label Studio numbers its projects from 1. A backend that serves the configured Label Studio
and one listed in ``PRELABEL_LABEL_STUDIO_HOSTS`` sees project 4711 from both; keyed by the id alone,
the second's ``/setup`` overwrote the first's record (host, token) and its labels became the
first's few-shot examples. So a project is a ``contract.ProjectRef``: a tenant plus the id.

Only ``/setup`` names its Label Studio (``hostname``). ``/setup`` and ``/predict`` both carry
Label Studio's project stamp ``"<id>.<created_at seconds>"`` (``ml/api_connector.py``:
``int(project.created_at.timestamp())``), and a webhook's project object has the same ``id`` and
``created_at``. So:

* ``/setup`` with the hostname of a listed Label Studio (not the configured one) is that origin's
  tenant, and its stamp is remembered (``TENANT_STAMPS_KEY``);
* ``/predict`` and webhooks look their stamp up;
* anything else (no hostname, the configured origin, a hostname that is not allowed and so is
  served by the configured Label Studio, an unknown stamp) is the configured Label Studio's tenant:
  a single-instance deployment sees no change.

The residual ambiguity: two instances whose project has the same id *and* was created in the same
second have one stamp; ``/setup`` logs it, and their ``/predict`` calls go to the tenant that
named the stamp last.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import redis
from pydantic import SecretStr

from prelabel.contract import TENANT_STAMPS_KEY, ProjectRef, as_text, tenant_slug
from prelabel.lru import LRU
from prelabel.settings import Settings
from prelabel.studio.access import REFUSED, Access, AccessRefused, listed_origins, origin_of, resolve

log = logging.getLogger(__name__)

UNCONFIGURED = "-"  # the origin named when LABEL_STUDIO_URL is not set (its tenant is still stable)


def default_tenant(settings: Settings) -> str:
    """The configured Label Studio's tenant (``LABEL_STUDIO_URL``)."""
    if not settings.label_studio_url:
        return tenant_slug(UNCONFIGURED)
    try:
        return tenant_slug(str(origin_of(settings.label_studio_url)))
    except AccessRefused:
        return tenant_slug(UNCONFIGURED)


def configured(settings: Settings, project_id: int | str) -> ProjectRef:
    """Project ``project_id`` of the configured Label Studio (what ``--project N`` means)."""
    return ProjectRef(default_tenant(settings), int(project_id))


def as_ref(settings: Settings, project: ProjectRef | int | str) -> ProjectRef:
    """A job's project argument: a reference, or a bare id (a job queued before tenancy: the
    configured Label Studio's project, as everything was then)."""
    return project if isinstance(project, ProjectRef) else configured(settings, project)


def tenant_of_host(settings: Settings, hostname: str | None) -> str | None:
    """The tenant of a ``/setup`` hostname when it names a listed Label Studio other than the
    configured one; None otherwise (the configured tenant, or the stamp decides)."""
    if not hostname or not hostname.strip():
        return None
    try:
        wanted = origin_of(hostname)
    except AccessRefused:
        return None
    if wanted not in listed_origins(settings) or tenant_slug(str(wanted)) == default_tenant(settings):
        return None
    return tenant_slug(str(wanted))


def stamp_of(project_id: int, created_at: Any) -> str | None:
    """Label Studio's stamp of a project from a webhook's ``created_at`` (ISO 8601, as its REST
    framework writes it), or None when it is missing or unreadable."""
    if not isinstance(created_at, str) or not created_at:
        return None
    try:
        seconds = int(datetime.fromisoformat(created_at).timestamp())
    except (ValueError, OverflowError, OSError):  # not a date, or one out of the platform's range
        return None
    return f"{project_id}.{seconds}" if seconds >= 0 else None  # /setup's stamps are digits only


class Tenants:
    """Stamp -> tenant, remembered in Redis (shared by every backend process) and in memory.

    Only stamps of listed Label Studios are stored: the configured one is the default, so a flood of
    ``/setup`` calls from it (or from hosts that are not allowed) stores nothing.
    """

    def __init__(self, settings: Settings, size: int = 4096) -> None:
        self.settings = settings
        self.default = default_tenant(settings)
        self._known: LRU[str, str] = LRU(size)

    def at_setup(self, conn: redis.Redis | None, project_id: int, stamp: str | None, hostname: str | None
                 ) -> ProjectRef:
        """The project a ``/setup`` is about; remembers its stamp when it is a listed Label Studio's.

        A named host that is not listed (or not a URL) is served by the configured Label Studio
        (``studio.access``), so it is the configured tenant; without a hostname the stamp decides.
        """
        if not self.settings.label_studio_hosts:  # one Label Studio: nothing to tell apart, nothing looked up
            return ProjectRef(self.default, project_id)
        named = tenant_of_host(self.settings, hostname)
        if named is None and hostname and hostname.strip():
            named = self.default
        if named is None:
            return ProjectRef(self.lookup(conn, stamp), project_id)
        if stamp is not None:
            known = self.lookup(conn, stamp)
            if known != named:
                if known != self.default:
                    log.warning("project stamp %s is named by two Label Studio instances (same id, created in the "
                                "same second); /predict calls with it now go to the one set up last", stamp)
                self._store(conn, stamp, named)
        return ProjectRef(named, project_id)

    def needs_lookup(self, stamp: str | None) -> bool:
        """Whether ``stamp`` can name another tenant than the configured one: only with listed Label
        Studios (one Label Studio: nothing to tell apart, nothing looked up)."""
        return bool(self.settings.label_studio_hosts) and stamp is not None

    def lookup(self, conn: redis.Redis | None, stamp: str | None) -> str:
        """The tenant a stamp was set up for; the configured one when unknown (or Redis is away)."""
        if stamp is None or not self.needs_lookup(stamp):
            return self.default
        found = self._known.get(stamp)
        if found is None and conn is not None:  # not cached when absent: another process may store it
            raw = conn.hget(TENANT_STAMPS_KEY, stamp)
            found = as_text(raw) if raw else None
            if found is not None:
                self._known.put(stamp, found)
        return found or self.default

    def shown(self, key: str) -> str:
        """A project as operators read it: ``4711`` on the configured Label Studio, ``4711@<tenant>``
        on another (``key``: ``str(ProjectRef)``; anything else as it is)."""
        ref = ProjectRef.parse(key)
        if ref is None:
            return key
        return str(ref.id) if ref.tenant == self.default else f"{ref.id}@{ref.tenant}"

    def _store(self, conn: redis.Redis | None, stamp: str, tenant: str) -> None:
        self._known.put(stamp, tenant)
        if conn is not None:
            if tenant == self.default:
                conn.hdel(TENANT_STAMPS_KEY, stamp)
            else:
                conn.hset(TENANT_STAMPS_KEY, stamp, tenant)


def tenant_of_access(settings: Settings, access: Access) -> str:
    """The tenant whose Label Studio ``access`` calls (a listed host's own, else the configured one)."""
    return tenant_slug(str(origin_of(access.url))) if access.source == "listed" else default_tenant(settings)


def access_for(settings: Settings, project: ProjectRef, hostname: str | None = None,
               token: str | SecretStr | None = None) -> Access:
    """Where to call ``project``'s Label Studio (``access.resolve`` with what its ``/setup`` recorded),
    but never another instance: a listed Label Studio's project whose record is gone (expired, never
    set up) would otherwise fall back to the configured one, whose project with that id is another's.
    Raises ``AccessRefused("other_instance")`` then (nothing is sent)."""
    access = resolve(settings, hostname, token)
    if tenant_of_access(settings, access) != project.tenant:
        REFUSED.labels("other_instance").inc()
        raise AccessRefused("other_instance", f"project {project.id} belongs to another Label Studio than "
                                              f"{origin_of(access.url)}; its /setup record is gone (set it up again)")
    return access
