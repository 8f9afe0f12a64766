"""``POST /webhook``: authenticate, validate, queue, answer (Label Studio waits 1 s, never retries).

The event's work is the worker's (``jobs``); this module only decides whether the caller may send
it, which project (of which Label Studio) it is about, and whether it was queued or a duplicate.
"""

from __future__ import annotations

import dataclasses
import logging

import redis
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from prelabel.contract import WEBHOOK_HEADER, Event
from prelabel.jobs.dispatch import Enqueued, enqueue_event
from prelabel.jobs.events import parse_event
from prelabel.ml_backend import auth, protocol
from prelabel.ml_backend.limits import check_webhook
from prelabel.prediction import metrics
from prelabel.settings import Settings
from prelabel.studio.tenancy import Tenants

log = logging.getLogger(__name__)


class WebhookReceiver:
    def __init__(self, settings: Settings, tenants: Tenants) -> None:
        self.settings = settings
        self.tenants = tenants

    async def receive(self, request: Request, conn: redis.Redis) -> Response:
        if not auth.webhook_caller_ok(self.settings, dict(request.scope["headers"])):
            return self._refused()
        body = await protocol.read_json(request, self.settings.max_request_bytes)
        check_webhook(body, self.settings)
        event = parse_event(body)
        if event is None:
            metrics.WEBHOOK_EVENTS.labels("ignored").inc()
            return JSONResponse({"status": "ignored"})
        try:
            queued = await run_in_threadpool(self._enqueue, conn, event)
        except RedisError as exc:
            metrics.WEBHOOK_EVENTS.labels("queue_unavailable").inc()
            log.error("webhook %s for project %s not queued: %s", event.action, event.project_id, exc)
            return JSONResponse({"error": "job queue unavailable", "reason": "queue_unavailable"}, status_code=503)
        metrics.WEBHOOK_EVENTS.labels(event.action if not queued.duplicate else "duplicate").inc()
        return JSONResponse({"status": "duplicate" if queued.duplicate else "queued", "job_id": queued.job_id,
                             "action": event.action})

    def _refused(self) -> Response:
        """401: no way to authenticate webhooks is configured, or the caller did not."""
        if not auth.webhook_auth_configured(self.settings):
            return protocol.error("webhook", protocol.RequestError(
                401, "webhook_auth_not_configured", "set PRELABEL_WEBHOOK_SECRET to accept webhooks"))
        response = protocol.error("webhook", protocol.RequestError(
            401, "unauthorized", f"webhook caller not authenticated ({WEBHOOK_HEADER} or basic auth)"))
        if self.settings.basic_auth_user:
            response.headers["WWW-Authenticate"] = 'Basic realm="prelabel"'
        return response

    def _enqueue(self, conn: redis.Redis, event: Event) -> Enqueued:
        """Queue the event as its project's (its instance: the stamp of its project's ``created_at``)."""
        tenant = self.tenants.lookup(conn, event.stamp)
        return enqueue_event(conn, self.settings, dataclasses.replace(event, tenant=tenant))
