"""A real Label Studio server from its own virtualenv (``prelabel up`` and the test session).

Facts this module relies on (Label Studio 1.23.2):

* ``label-studio start --no-browser --port P --username U --password W --user-token T`` creates
  the admin user with legacy API token ``T`` on first start, SQLite under
  ``LABEL_STUDIO_BASE_DATA_DIR``; first start (migrations) takes ~40 s on 2 cores.
* Legacy tokens (``Authorization: Token T``) are *disabled* for new organizations unless the
  organization is created with ``--enable-legacy-api-token`` (or
  ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``). We pass both and, should the token still be
  refused, log in through the web form (CSRF) and ``POST /api/jwt/settings
  {"legacy_api_tokens_enabled": true}`` as the org admin.
* ``POST /api/token/`` (logged in) creates a personal access token: a JWT *refresh* token that
  the SDK (2.1.2) accepts as ``api_key`` too (it exchanges it for access tokens itself). Only
  one may exist per user (409 afterwards), so it is created once and cached.
* Backends / webhooks on 127.0.0.1 are refused unless ``ML_BLOCK_LOCAL_IP=false`` and
  ``SSRF_PROTECTION_ENABLED=false``.
* ``/setup`` sends ``hostname`` = ``LABEL_STUDIO_HOST`` (else ``http://localhost:<port>``), so we
  set the host to ``http://127.0.0.1:P``: the backend can call Label Studio back there.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from prelabel.stack.locations import ls_venv, require_venv
from prelabel.stack.ports import free_port
from prelabel.stack.processes import ManagedProcess, StartupError, child_env

DEFAULT_START_TIMEOUT = float(os.environ.get("PRELABEL_LS_START_TIMEOUT", "240"))
# A folder holding a migrated, user-less database that new data folders start from (the test suite sets it).
DATA_TEMPLATE_ENV = "PRELABEL_LS_DATA_TEMPLATE"
DATABASE = "label_studio.sqlite3"


@dataclass
class LabelStudioServer:
    """A Label Studio server process this code started (``sdk()`` gives the SDK's client for it)."""

    url: str
    api_key: str  # legacy token: `Authorization: Token <api_key>`, works with the SDK
    username: str
    password: str
    data_dir: Path
    process: ManagedProcess | None = None
    _pat: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def log_path(self) -> Path | None:
        return self.process.log_path if self.process else None

    # -- clients ---------------------------------------------------------------------------
    def sdk(self, api_key: str | None = None, **kwargs):
        """``label_studio_sdk.client.LabelStudio`` bound to this server."""
        from label_studio_sdk.client import LabelStudio as Client

        return Client(base_url=self.url, api_key=api_key or self.api_key, **kwargs)

    def http(self, **kwargs) -> httpx.Client:
        """httpx client with the legacy token header, base_url set."""
        headers = {"Authorization": f"Token {self.api_key}", **kwargs.pop("headers", {})}
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 60), **kwargs
        )

    def login_session(self) -> httpx.Client:
        """A browser-like session logged in as the admin (cookies + CSRF header set)."""
        return login(self.url, self.username, self.password)

    def personal_access_token(self) -> str:
        """A personal access token (JWT refresh token) for the admin, created once."""
        with self._lock:
            if self._pat is None:
                with closing(self.login_session()) as s:
                    r = s.post("/api/token/")
                    if r.status_code != 201:
                        raise RuntimeError(f"POST /api/token/ -> {r.status_code}: {r.text[:500]}")
                    self._pat = r.json()["token"]
            return self._pat

    def whoami(self, api_key: str | None = None) -> httpx.Response:
        return httpx.get(
            f"{self.url}/api/current-user/whoami",
            timeout=30,
            headers={"Authorization": f"Token {api_key or self.api_key}"},
        )


def login(url: str, username: str, password: str) -> httpx.Client:
    """Log in through the Django login form; the client then sends the CSRF header itself."""
    client = httpx.Client(base_url=url, timeout=60, follow_redirects=False)
    page = client.get("/user/login/")
    page.raise_for_status()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    csrf = match.group(1) if match else client.cookies.get("csrftoken")
    if not csrf:
        raise RuntimeError("Label Studio login page has no CSRF token")
    r = client.post(
        "/user/login/",
        data={"email": username, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{url}/user/login/"},
    )
    if r.status_code not in (301, 302) or "sessionid" not in client.cookies:
        raise RuntimeError(f"Label Studio login as {username} failed: HTTP {r.status_code}")
    fresh = client.cookies.get("csrftoken")  # Django rotates the token at login
    client.headers["X-CSRFToken"] = fresh if fresh is not None else csrf
    client.headers["Referer"] = f"{url}/"
    return client


def enable_legacy_tokens(url: str, username: str, password: str) -> None:
    with closing(login(url, username, password)) as s:
        r = s.post(
            "/api/jwt/settings",
            json={"legacy_api_tokens_enabled": True, "api_tokens_enabled": True},
        )
        if r.status_code != 200 or not r.json().get("legacy_api_tokens_enabled"):
            raise RuntimeError(f"POST /api/jwt/settings -> {r.status_code}: {r.text[:500]}")


def new_credentials() -> tuple[str, str, str]:
    """A fresh admin (username, password, legacy API token)."""
    return "admin@example.com", "prelabel-" + secrets.token_hex(8), secrets.token_hex(20)


def start_label_studio(
    workdir: Path,
    *,
    timeout: float = DEFAULT_START_TIMEOUT,
    venv: Path | None = None,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    credentials: tuple[str, str, str] | None = None,
    data_dir: Path | None = None,
) -> LabelStudioServer:
    """Start Label Studio, wait until the API answers to the admin token, return it.

    ``credentials`` = (username, password, legacy token) of the admin; they are set when the
    data directory is new, so a restart on the same ``data_dir`` must pass the same ones. A new
    data directory starts from ``$PRELABEL_LS_DATA_TEMPLATE`` when that is set (see
    ``seed_from_template``).
    """
    venv = require_venv(venv or ls_venv(), "Label Studio")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    username, password, token = credentials or new_credentials()
    data_dir = data_dir or workdir / "data"
    env = _server_env(venv, data_dir, extra_env)
    template = os.environ.get(DATA_TEMPLATE_ENV)
    if template:
        seed_from_template(data_dir, Path(template), venv=venv, env=env, timeout=timeout)
    command: list[str | os.PathLike[str]] = [
        venv / "bin" / "label-studio", "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1",
        "--host", url, "--username", username, "--password", password, "--user-token", token,
        "--enable-legacy-api-token", "--data-dir", str(data_dir)]
    proc = ManagedProcess("label-studio", command, log_path=workdir / "label-studio.log", env=env,
                          cwd=workdir).start()
    ls = LabelStudioServer(url=url, api_key=token, username=username, password=password, data_dir=data_dir,
                           process=proc)
    try:
        _await_admin(ls, proc, timeout)
    except BaseException:
        proc.stop()
        raise
    return ls


def _server_env(venv: Path, data_dir: Path, extra_env: dict[str, str] | None) -> dict[str, str]:
    """The environment of a Label Studio process: a private SQLite, local backends allowed, no phoning home."""
    return child_env(
        venv,
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LATEST_VERSION_CHECK": "false",  # no call to pypi.org at start
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": None,
            "FRONTEND_SENTRY_DSN": None,
            "DJANGO_DB": None,
            "POSTGRE_HOST": None,  # always the private SQLite
            "REDIS_LOCATION": None,  # LS runs its jobs synchronously, no RQ worker needed
            **(extra_env or {}),
        },
    )


def _await_admin(ls: LabelStudioServer, proc: ManagedProcess, timeout: float) -> None:
    """Wait for /health, then make sure the admin's legacy token is accepted."""
    proc.wait_until(
        lambda: httpx.get(f"{ls.url}/health", timeout=2).status_code == 200,
        timeout=timeout,
        what="serving /health",
    )
    status = ls.whoami().status_code
    if status == 401:  # legacy tokens off for this organization: switch them on
        enable_legacy_tokens(ls.url, ls.username, ls.password)
        status = ls.whoami().status_code
    if status != 200:
        raise proc.fail(f"admin token refused: GET /api/current-user/whoami -> {status}")


def seed_from_template(data_dir: Path, template: Path, *, venv: Path, env: dict[str, str],
                       timeout: float = DEFAULT_START_TIMEOUT) -> bool:
    """Give a new ``data_dir`` the migrated database of ``template``; True when it was copied.

    A first start spends most of its time (~25 s of ~30 s on 2 cores) in Django migrations; the
    test suite starts many fresh servers (its session server, every `prelabel up` test), so it
    migrates one template per run and copies its database. The template holds no user and no
    secret key (only ``label_studio.sqlite3`` is copied; Label Studio writes its own ``.env``),
    so each server still creates its own admin with its own credentials. An existing database is
    never replaced.
    """
    if (data_dir / DATABASE).exists():
        return False
    database = migrated_template(template, venv=venv, env=env, timeout=timeout)
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(database, data_dir / DATABASE)
    return True


def migrated_template(template: Path, *, venv: Path, env: dict[str, str],
                      timeout: float = DEFAULT_START_TIMEOUT) -> Path:
    """The database of ``template`` with every migration applied and no user, made once.

    ``label-studio version`` applies the migrations and exits without creating a user. Concurrent
    callers (pytest-xdist workers) wait on a file lock; the database is moved into place only
    when the command succeeded, so a half-migrated one is never copied.
    """
    database = template / DATABASE
    template.mkdir(parents=True, exist_ok=True)
    with open(template / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if database.exists():
            return database
        scratch = Path(tempfile.mkdtemp(prefix="migrating-", dir=template))
        try:
            run = subprocess.run([str(venv / "bin" / "label-studio"), "version", "--data-dir", str(scratch)],
                                 env={**env, "LABEL_STUDIO_BASE_DATA_DIR": str(scratch)}, cwd=scratch,
                                 capture_output=True, text=True, timeout=timeout, check=False)
            if run.returncode != 0 or not (scratch / DATABASE).exists():
                raise StartupError(f"Label Studio migrations for the data template {template} failed "
                                   f"(exit {run.returncode}): {run.stderr[-2000:]}")
            os.replace(scratch / DATABASE, database)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return database


__all__ = ["DATA_TEMPLATE_ENV", "LabelStudioServer", "StartupError", "enable_legacy_tokens", "login",
           "migrated_template", "new_credentials", "seed_from_template", "start_label_studio"]
