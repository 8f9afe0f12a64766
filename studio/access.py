"""The one way prelabel reaches Label Studio: configured origins only, each token to its own host.

``/setup`` tells the backend where Label Studio lives (``hostname``) and hands it a token; both come
from whoever may call ``/setup``, so neither is trusted to pick where a credential goes:

- ``LABEL_STUDIO_URL`` is *the* configured Label Studio. ``LABEL_STUDIO_API_KEY`` is sent there and
  nowhere else.
- ``PRELABEL_LABEL_STUDIO_HOSTS`` lists other origins a ``/setup`` may name. Such a host gets the
  request's own token, never the configured key.
- Any other hostname is recorded but never called: the refusal is counted
  (``prelabel_label_studio_refused_total{reason}``) and logged once per host, and the configured
  Label Studio (with the configured key only) is used instead when there is one.
- Only the *origin* of a requested hostname is used (scheme, host, port): the API paths are the
  SDK's, so ``http://host/admin/delete?all=1#`` cannot choose what is called.
- Redirects are not followed (a 3xx is an error), so an allowed host cannot bounce a token on.

The backend (few-shot examples), the worker (jobs), export, quality and ``prelabel init`` all get
their SDK client from ``connect`` here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from prometheus_client import Counter
from pydantic import SecretStr

from prelabel.errors import UserError
from prelabel.lru import Once
from prelabel.settings import Settings

if TYPE_CHECKING:
    from label_studio_sdk.client import LabelStudio

log = logging.getLogger(__name__)

Reason = Literal["host_not_allowed", "bad_url", "no_token", "not_configured", "other_instance"]
REFUSED = Counter(
    "prelabel_label_studio_refused_total",
    "Label Studio calls refused before any connection: a hostname outside the configured origins "
    "(host_not_allowed), an unusable URL (bad_url), no token for the host (no_token), no Label Studio "
    "configured (not_configured), a project of another Label Studio than the one reachable (other_instance).",
    ["reason"],
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9_.\-]+|[0-9a-f:.]*:[0-9a-f:.]*")  # a DNS name / IPv4, or an IPv6 literal
_warned = Once(256)


class AccessRefused(UserError, LookupError):
    """Label Studio must not (or cannot) be called for this request; nothing was sent."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port of a URL: what decides where a request (and its token) goes."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if _DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}"


def origin_of(url: str) -> Origin:
    """The origin of an http(s) URL; ``AccessRefused("bad_url")`` for anything else."""
    try:
        parts = urlsplit(str(url).strip())
        scheme, host, port = parts.scheme.lower(), parts.hostname or "", parts.port
    except ValueError:  # an out-of-range or non-numeric port, a broken IPv6 literal
        raise AccessRefused("bad_url", f"not a usable URL: {_shown(url)}") from None
    if scheme not in _DEFAULT_PORTS or not _HOST.fullmatch(host):
        raise AccessRefused("bad_url", f"not an http(s) URL with a plain host: {_shown(url)}")
    return Origin(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])


@dataclass(frozen=True)
class Access:
    """Where to call Label Studio and with which token (never shown in a repr)."""

    url: str
    token: SecretStr = field(repr=False)
    source: Literal["configured", "listed"]

    def client(self, timeout: float = 30.0) -> LabelStudio:
        """label-studio-sdk client that does not follow redirects."""
        from label_studio_sdk.client import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.token.get_secret_value(), timeout=timeout,
                           follow_redirects=False)


def resolve(settings: Settings, hostname: str | None = None, token: str | SecretStr | None = None) -> Access:
    """Where and with which token to call Label Studio for a request that named ``hostname``/``token``.

    Raises ``AccessRefused`` when there is no allowed way (nothing is sent then).
    """
    configured = origin_of(settings.label_studio_url) if settings.label_studio_url else None
    key = _secret(settings.label_studio_api_key)
    own = _secret(token)
    if hostname and hostname.strip():
        try:
            wanted = origin_of(hostname)
        except AccessRefused as exc:
            _refused(exc.reason, hostname)
        else:
            if wanted == configured:
                return _configured_access(settings, key or own)
            if wanted in listed_origins(settings):
                if own is None:
                    _refused("no_token", hostname)
                    raise AccessRefused("no_token", f"no token of its own for Label Studio at {wanted}")
                return Access(str(wanted), own, "listed")
            _refused("host_not_allowed", hostname)
        own = None  # the request's token belongs to the host it named: never sent elsewhere
    if configured is None:
        REFUSED.labels("not_configured").inc()
        raise AccessRefused("not_configured", "no Label Studio to call: set LABEL_STUDIO_URL (and "
                                              "PRELABEL_LABEL_STUDIO_HOSTS for other hosts /setup may name)")
    return _configured_access(settings, key or own)


def connect(settings: Settings, hostname: str | None = None, token: str | SecretStr | None = None,
            timeout: float = 30.0) -> LabelStudio:
    """A label-studio-sdk client for ``resolve(settings, hostname, token)``."""
    return resolve(settings, hostname, token).client(timeout)


def for_operator(settings: Settings, url: str | None = None, token: str | None = None) -> Settings:
    """Settings whose configured Label Studio is the one a command line names (``--ls-url/--ls-token``).

    The operator may point a command anywhere, but ``LABEL_STUDIO_API_KEY`` still only goes to
    ``LABEL_STUDIO_URL``: another URL needs its own token.
    """
    update: dict[str, object] = {}
    if url:
        update["label_studio_url"] = url
        same = settings.label_studio_url and origin_of(url) == origin_of(settings.label_studio_url)
        if not same:
            update["label_studio_api_key"] = None
    if token:
        update["label_studio_api_key"] = SecretStr(token)
    return settings.model_copy(update=update)


def _configured_access(settings: Settings, token: SecretStr | None) -> Access:
    if token is None:
        REFUSED.labels("no_token").inc()
        raise AccessRefused("no_token", "no token for Label Studio: set LABEL_STUDIO_API_KEY")
    return Access(str(settings.label_studio_url).rstrip("/"), token, "configured")


def listed_origins(settings: Settings) -> set[Origin]:
    origins = set()
    for entry in settings.label_studio_hosts:
        try:
            origins.add(origin_of(entry))
        except AccessRefused:
            if _warned.first(("listed", entry)):
                log.warning("PRELABEL_LABEL_STUDIO_HOSTS entry %s is not an http(s) origin; ignored", _shown(entry))
    return origins


def _refused(reason: Reason, hostname: str) -> None:
    REFUSED.labels(reason).inc()
    if _warned.first((reason, hostname[:300])):
        log.warning("Label Studio at %s is not called (%s): only LABEL_STUDIO_URL and PRELABEL_LABEL_STUDIO_HOSTS "
                    "are; the configured Label Studio is used instead, if any", _shown(hostname), reason)


def _secret(value: str | SecretStr | None) -> SecretStr | None:
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return SecretStr(raw) if raw and raw.strip() else None


def _shown(url: str, limit: int = 120) -> str:
    """A URL for a log line or an error: shortened, without credentials in its user-info part."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        text = f"{scheme}://***@{rest.split('@', 1)[1]}"
    return repr(text if len(text) <= limit else text[:limit] + "...")
