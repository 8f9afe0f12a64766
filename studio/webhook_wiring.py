"""The backend wires its own project's webhook, however the model was connected.

Connecting a model in Label Studio creates a project webhook to ``<model URL>/webhook`` with no
headers. Connected with the UI's *Basic auth* fields, every event then reaches ``/webhook``
without credentials and is refused: no reviews, no ranking, no few-shot learning. So when the
backend is set up for a project on a Label Studio it may call (``studio.access``), it makes sure
that webhook carries its secret:

* the project's own ML backend is found in Label Studio's list of the project's backends; only
  when exactly one is connected is it certainly this backend (``/setup`` came from that project),
  so with several nothing is changed (a secret must never go to another service's webhook);
* the webhook to ``<that URL>/webhook`` gets the header (``PATCH``, its other settings kept);
  when there is none (deleted by hand) one is created, the way Label Studio creates it; never a
  second one;
* when it cannot (no key, no permission, a host outside the allow-list, no secret configured,
  several backends), the state says why and the exact manual step; the backend logs it once, and
  ``/metrics`` and ``prelabel status`` show it.

The state of every project is kept in Redis (``WEBHOOK_WIRING_KEY``) so that the backend's
``/metrics`` and ``prelabel status`` read the same thing whichever process wired it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import redis
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from prelabel.contract import WEBHOOK_HEADER, WEBHOOK_WIRING_KEY, ProjectRef, as_text
from prelabel.studio.client import plain

State = Literal["wired", "already_wired", "unwired"]
Reason = Literal["no_secret", "no_access", "no_permission", "no_ml_backend", "several_ml_backends", "error"]
METRIC = "prelabel_project_webhook"
LABELS = ["project", "tenant", "state", "reason", "step"]  # tenant: the project's Label Studio (contract.ProjectRef)
METRIC_DOC = ("1 per project the backend was set up for, by the state of its webhook to /webhook (wired, "
              "already_wired, unwired); an unwired one names the reason and the manual step.")


@dataclass(frozen=True)
class WiringState:
    """What the backend could do about one project's webhook (no secret in it, ever)."""

    state: State
    reason: Reason | None = None
    step: str | None = None
    webhook_id: int | None = None
    time: str = ""

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> WiringState:
        return cls(**json.loads(as_text(raw)))

    @property
    def ok(self) -> bool:
        return self.state != "unwired"


def manual_step(project_id: int | str, webhook_url: str | None, header: str | None) -> str:
    """The exact step an operator takes when the backend could not wire the webhook itself."""
    where = f"the webhook to {_without_credentials(webhook_url or '<model URL>/webhook')}"
    name = header or WEBHOOK_HEADER
    value = "<PRELABEL_WEBHOOK_SECRET>" if name == WEBHOOK_HEADER else "<the backend's basic-auth header>"
    return (f"In Label Studio open project {project_id} > Settings > Webhooks, edit {where} and add the header "
            f"{name}: {value} (or give the backend LABEL_STUDIO_API_KEY of a user who may edit the project)")


def unwired(project_id: int | str, reason: Reason, webhook_url: str | None = None, header: str | None = None
            ) -> WiringState:
    return WiringState("unwired", reason, manual_step(project_id, webhook_url, header), time=_now())


def wire_webhook(sdk: Any, project_id: int, headers: dict[str, str]) -> WiringState:
    """Make the project's webhook to its (only) ML backend carry ``headers``; idempotent.

    ``sdk`` is a label-studio-sdk client from ``studio.access`` (an allowed origin, no redirects).
    Label Studio errors (a 403 for a user without the right, an unreachable server) become an
    ``unwired`` state with the reason; nothing is raised.
    """
    from label_studio_sdk.core.api_error import ApiError

    header = next(iter(headers))
    try:
        backends = [plain(b) for b in sdk.ml.list(project=project_id)]
        if len(backends) != 1:
            return unwired(project_id, "no_ml_backend" if not backends else "several_ml_backends", None, header)
        url = str(backends[0]["url"]).rstrip("/") + "/webhook"
        hooks = [plain(h) for h in sdk.webhooks.list(project=str(project_id))]
        mine = sorted((h for h in hooks if h.get("url") == url), key=lambda h: h["id"])
        if not mine:
            created = plain(sdk.webhooks.create(project=project_id, url=url, send_payload=True,
                                                send_for_all_actions=True, headers=headers))
            return WiringState("wired", webhook_id=int(created["id"]), time=_now())
        hook = mine[0]
        current = hook.get("headers") or {}
        if all(current.get(k) == v for k, v in headers.items()):
            return WiringState("already_wired", webhook_id=int(hook["id"]), time=_now())
        sdk.webhooks.update(id=hook["id"], headers={**current, **headers})
        return WiringState("wired", webhook_id=int(hook["id"]), time=_now())
    except ApiError as exc:
        reason: Reason = "no_permission" if exc.status_code in (401, 403) else "error"
        return unwired(project_id, reason, None, header)
    except Exception:  # Label Studio unreachable, a redirect refused, a malformed answer
        return unwired(project_id, "error", None, header)


def record(conn: redis.Redis, project: ProjectRef, state: WiringState) -> None:
    conn.hset(WEBHOOK_WIRING_KEY, str(project), state.encode())


def load_all(conn: redis.Redis) -> dict[str, WiringState]:
    """Every project's wiring state, by ``str(ProjectRef)``."""
    return {as_text(k): WiringState.decode(v) for k, v in conn.hgetall(WEBHOOK_WIRING_KEY).items()}


class WiringCollector:
    """``prelabel_project_webhook{project,state,reason,step}`` read from Redis at scrape time."""

    conn: Any = None

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(METRIC, METRIC_DOC, labels=LABELS)

    def collect(self) -> Iterator[Metric]:
        if self.conn is None:
            return
        try:
            states = load_all(self.conn)
        except RedisError:
            return
        family = GaugeMetricFamily(METRIC, METRIC_DOC, labels=LABELS)
        for key, state in sorted(states.items()):
            ref = ProjectRef.parse(key)  # None: an entry of the format before tenancy (prelabel migrate)
            project, tenant = (str(ref.id), ref.tenant) if ref else (key, "")
            family.add_metric([project, tenant, state.state, state.reason or "", state.step or ""], 1)
        yield family


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


WIRING_COLLECTOR = WiringCollector()
REGISTRY.register(WIRING_COLLECTOR)
