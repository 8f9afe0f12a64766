"""Create (or find) a Label Studio project wired to prelabel, idempotently.

``prelabel init`` and ``prelabel up`` (on every start) run this, so each step first looks at what is there: the project
is found by title, the backend connected only if no ML backend points at it, the webhook header
set only where missing, the sample tasks imported only into an empty project.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from prelabel.contract import WEBHOOK_HEADER
from prelabel.studio.client import plain


@dataclass
class ProjectSetup:
    project_id: int
    created: bool = False
    connected: bool = False
    imported: int = 0
    webhooks_signed: int = 0
    notes: list[str] = field(default_factory=list)


def template_files(name: str) -> tuple[str, list[dict[str, Any]]]:
    """The shipped template's labeling config and sample tasks."""
    folder = resources.files("prelabel.label_config") / "templates"
    if not re.fullmatch(r"[a-z0-9_]+", name) or not (folder / f"{name}.xml").is_file():
        raise FileNotFoundError(f"no template {name!r}")
    config = (folder / f"{name}.xml").read_text(encoding="utf-8")
    sample = folder / f"{name}.sample.jsonl"
    tasks = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if sample.is_file() else []
    return config, tasks


def ensure_project(
    client: Any, *, title: str, label_config: str, tasks: list[dict[str, Any]], backend_url: str,
    webhook_secret: str, basic_auth: tuple[str, str] | None = None, guideline: str | None = None,
) -> ProjectSetup:
    existing = [p for p in (plain(p) for p in client.projects.list()) if p.get("title") == title]
    if existing:
        setup = ProjectSetup(min(p["id"] for p in existing))
    else:
        setup = ProjectSetup(plain(client.projects.create(title=title, label_config=label_config))["id"], True)
    pid = setup.project_id

    backends = [plain(b) for b in client.ml.list(project=pid)]
    if not any(b.get("url", "").rstrip("/") == backend_url.rstrip("/") for b in backends):
        auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]} \
            if basic_auth else {}
        client.ml.create(project=pid, url=backend_url, title="prelabel", is_interactive=True,
                         extra_params={"guideline": guideline} if guideline else None, **auth)
        setup.connected = True

    hook_url = backend_url.rstrip("/") + "/webhook"
    hooks = [plain(h) for h in client.webhooks.list(project=pid) if plain(h).get("url") == hook_url]
    if not hooks:  # Label Studio creates it when the backend is connected; make sure it exists
        client.webhooks.create(project=pid, url=hook_url, send_payload=True, send_for_all_actions=True,
                               headers={WEBHOOK_HEADER: webhook_secret})
        setup.webhooks_signed += 1
    for hook in hooks:
        if (hook.get("headers") or {}).get(WEBHOOK_HEADER) != webhook_secret:
            client.webhooks.update(id=hook["id"], url=hook_url, headers={WEBHOOK_HEADER: webhook_secret})
            setup.webhooks_signed += 1

    if tasks and not plain(client.projects.get(id=pid)).get("task_number"):
        client.projects.import_tasks(id=pid, request=tasks)
        setup.imported = len(tasks)
    return setup
