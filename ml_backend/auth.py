"""Who may call the backend: HTTP basic auth for everything, the webhook's own proof for ``/webhook``.

Label Studio sends basic auth for backend URLs like ``http://user:pass@host:port``, and project
webhooks with the headers they were registered with (the shared secret). A request that carries
an auth header twice is refused: which copy counts differs between servers and proxies.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from prelabel.contract import WEBHOOK_HEADER
from prelabel.prediction import metrics
from prelabel.settings import Settings

AUTH_HEADERS = (b"authorization", WEBHOOK_HEADER.lower().encode())


class SingleAuthHeaders:
    """Refuse a request that carries an auth header twice (400 ``duplicate_header``).

    Which copy counts differs between servers and proxies (here the last would win, a proxy may
    check the first): a request that could mean two callers is not guessed at.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = [name.lower() for name, _ in scope["headers"] if name.lower() in AUTH_HEADERS]
            if len(names) != len(set(names)):
                metrics.BAD_REQUESTS.labels("auth", "duplicate_header").inc()
                shown = ", ".join(sorted({n.decode() for n in names if names.count(n) > 1}))
                response = JSONResponse({"error": f"header sent more than once: {shown}",
                                         "reason": "duplicate_header"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BasicAuthMiddleware:
    """Reject requests without the configured basic-auth credentials (constant-time compare)."""

    def __init__(self, app: ASGIApp, user: str, password: str) -> None:
        self.app = app
        self.expected = basic_header(user, password)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/webhook":  # /webhook checks its own callers
            await self.app(scope, receive, send)
            return
        supplied = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(_normalise_basic(supplied), self.expected):
            metrics.BAD_REQUESTS.labels("auth", "unauthorized").inc()
            response = JSONResponse(
                {"error": "authentication required", "reason": "unauthorized"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="prelabel"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def basic_header(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def webhook_caller_ok(settings: Settings, headers: dict[bytes, bytes]) -> bool:
    """A webhook call is genuine when it carries the shared secret or the basic-auth credentials.

    Label Studio sends project webhooks with the headers they were registered with (the
    secret), but without the ML backend's basic-auth credentials, so either proves the caller.
    With neither configured nothing is accepted: unauthenticated calls could queue paid work.
    """
    ok = False
    if settings.webhook_secret is not None:
        supplied = headers.get(WEBHOOK_HEADER.lower().encode(), b"")
        ok |= hmac.compare_digest(supplied, settings.webhook_secret.get_secret_value().encode())
    if settings.basic_auth_user and settings.basic_auth_password:
        expected = basic_header(settings.basic_auth_user, settings.basic_auth_password.get_secret_value())
        ok |= hmac.compare_digest(_normalise_basic(headers.get(b"authorization", b"")), expected)
    return ok


def _normalise_basic(header: bytes) -> bytes:
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"basic":
        return b""
    try:
        return b"Basic " + base64.b64encode(base64.b64decode(token.strip(), validate=True))
    except (binascii.Error, ValueError):
        return b""




def webhook_headers(settings: Settings) -> dict[str, str] | None:
    """What proves a webhook call genuine (``webhook_caller_ok``): the secret, else basic auth."""
    if settings.webhook_secret is not None:
        return {WEBHOOK_HEADER: settings.webhook_secret.get_secret_value()}
    if settings.basic_auth_user and settings.basic_auth_password:
        return {"Authorization": basic_header(settings.basic_auth_user,
                                              settings.basic_auth_password.get_secret_value()).decode()}
    return None


def webhook_auth_configured(settings: Settings) -> bool:
    return settings.webhook_secret is not None or bool(settings.basic_auth_user and settings.basic_auth_password)
