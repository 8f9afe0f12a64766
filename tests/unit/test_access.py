"""``prelabel.studio.access``: which Label Studio may be called, with which token, and no redirects."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from prelabel.contract import ProjectRef, tenant_slug
from prelabel.settings import Settings
from prelabel.studio.access import REFUSED, AccessRefused, for_operator, origin_of, resolve
from prelabel.studio.tenancy import configured
from tests.support.hostile import Listener

LS = "http://ls.internal:8080"
KEY = "configured-key-123"


def settings(**kw: object) -> Settings:
    base = {"label_studio_url": LS, "label_studio_api_key": SecretStr(KEY), "label_studio_hosts": []}
    return Settings(**{**base, **kw})


def refused(reason: str) -> float:
    return REFUSED.labels(reason)._value.get()


def test_origin_ignores_path_query_fragment_and_userinfo() -> None:
    assert origin_of("HTTP://User:pw@LS.internal:8080/admin/delete?all=1#x") == origin_of(LS)
    assert str(origin_of("https://h.example/x")) == "https://h.example"
    assert str(origin_of("http://[::1]:81/")) == "http://[::1]:81"
    for bad in ("ftp://h", "file:///etc/passwd", "javascript:alert(1)", "//h", "http://h:99999", "http://a b"):
        with pytest.raises(AccessRefused) as info:
            origin_of(bad)
        assert info.value.reason == "bad_url"


def test_configured_key_goes_only_to_the_configured_origin() -> None:
    s = settings()
    for hostname in (None, "", LS, LS + "/admin/delete?all=1#", "HTTP://ls.internal:8080"):
        access = resolve(s, hostname, "request-token")
        assert (access.url, access.token.get_secret_value(), access.source) == (LS, KEY, "configured")
    before = refused("host_not_allowed")
    access = resolve(s, "http://evil.example/steal", "request-token")
    assert (access.url, access.token.get_secret_value()) == (LS, KEY), "a stranger is never called"
    assert refused("host_not_allowed") == before + 1
    assert "request-token" not in repr(access) and KEY not in repr(access)


def test_request_token_goes_only_to_its_own_listed_host() -> None:
    s = settings(label_studio_hosts=["http://other-ls:9000"])
    access = resolve(s, "http://other-ls:9000/x?y#z", "own-token")
    assert (access.url, access.token.get_secret_value(), access.source) == ("http://other-ls:9000", "own-token",
                                                                           "listed")
    with pytest.raises(AccessRefused) as info:  # never the configured key to a listed host
        resolve(s, "http://other-ls:9000", None)
    assert info.value.reason == "no_token"
    # a request naming a host that is not allowed: its token is not sent to the configured one either
    no_key = settings(label_studio_api_key=None)
    with pytest.raises(AccessRefused) as info:
        resolve(no_key, "http://evil.example", "own-token")
    assert info.value.reason == "no_token"


def test_nothing_configured_refuses() -> None:
    with pytest.raises(AccessRefused) as info:
        resolve(settings(label_studio_url=None), "http://evil.example", "token")
    assert info.value.reason == "not_configured"


def test_operator_url_needs_its_own_token() -> None:
    s = settings()
    assert for_operator(s, LS + "/", None).label_studio_api_key.get_secret_value() == KEY  # same origin
    elsewhere = for_operator(s, "http://other:1", None)
    assert elsewhere.label_studio_api_key is None
    with pytest.raises(AccessRefused):
        resolve(elsewhere)
    assert resolve(for_operator(s, "http://other:1", "tok")).token.get_secret_value() == "tok"


def test_redirects_are_not_followed() -> None:
    """A (listed or configured) Label Studio that redirects cannot forward the token anywhere."""
    with Listener("target") as target, \
            Listener("ls", status=302, headers={"Location": f"{target.url}/steal"}) as ls:
        client = resolve(settings(label_studio_url=ls.url)).client(timeout=5)
        with pytest.raises(Exception):  # noqa: B017 - the SDK's ApiError for the 302
            client.projects.get(id=1)
        assert [c.target.split("?")[0] for c in ls.snapshot()] == ["/api/projects/1/"]
        assert ls.snapshot()[0].headers["authorization"] == f"Token {KEY}"
        assert target.snapshot() == [], "the redirect was followed"


def test_the_webhook_is_wired_only_where_the_project_lives() -> None:
    """The backend edits a project's webhook only on the Label Studio ``/setup`` named, when that is
    the configured one or a listed one: a hostname outside the allow-list gets no fallback to the
    configured Label Studio (its project ids are another server's)."""
    from prelabel.contract import ProjectRecord
    from prelabel.ml_backend.auth import webhook_headers
    from prelabel.ml_backend.wiring import WebhookWirer

    wirer = WebhookWirer(settings(label_studio_hosts=["https://other.example"]))
    token = "their-token"
    ours, theirs = configured(wirer.settings, 5), ProjectRef(tenant_slug("https://other.example"), 5)
    assert wirer.access(ours, ProjectRecord(None, LS + "/", None)).source == "configured"
    assert wirer.access(theirs, ProjectRecord(None, "https://other.example", token)).source == "listed"
    assert wirer.access(ours, ProjectRecord(None, "http://evil.example:8080", token)) is None
    assert wirer.access(theirs, ProjectRecord(None, "https://other.example", None)) is None  # no token
    # a listed instance's project whose record lost its hostname: never the configured Label Studio
    assert wirer.access(theirs, ProjectRecord(None, None, None)) is None
    assert webhook_headers(wirer.settings) is None  # neither a secret nor basic auth: nothing to add
    assert webhook_headers(settings(webhook_secret=SecretStr("s3cret-x"))) == {"X-Prelabel-Secret": "s3cret-x"}
