"""Create (or find) a Label Studio project wired to prelabel, idempotently.

``prelabel init`` and ``prelabel up`` (on every start) run this, so each step first looks at what is there: the project
is found by title, the backend connected only if no ML backend points at it, the webhook header
set only where missing, the sample tasks imported only into an empty project.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from prelabel.jobs.outcomes import Outcome, Tally

WEBHOOK_HEADER = "X-Prelabel-Secret"


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


def _plain(obj: Any) -> dict[str, Any]:
    return obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)


def ensure_project(
    client: Any, *, title: str, label_config: str, tasks: list[dict[str, Any]], backend_url: str,
    webhook_secret: str, basic_auth: tuple[str, str] | None = None, guideline: str | None = None,
) -> ProjectSetup:
    existing = [p for p in (_plain(p) for p in client.projects.list()) if p.get("title") == title]
    if existing:
        setup = ProjectSetup(min(p["id"] for p in existing))
    else:
        setup = ProjectSetup(_plain(client.projects.create(title=title, label_config=label_config))["id"], True)
    pid = setup.project_id

    backends = [_plain(b) for b in client.ml.list(project=pid)]
    if not any(b.get("url", "").rstrip("/") == backend_url.rstrip("/") for b in backends):
        auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]} \
            if basic_auth else {}
        client.ml.create(project=pid, url=backend_url, title="prelabel", is_interactive=True,
                         extra_params={"guideline": guideline} if guideline else None, **auth)
        setup.connected = True

    hook_url = backend_url.rstrip("/") + "/webhook"
    hooks = [_plain(h) for h in client.webhooks.list(project=pid) if _plain(h).get("url") == hook_url]
    if not hooks:  # Label Studio creates it when the backend is connected; make sure it exists
        client.webhooks.create(project=pid, url=hook_url, send_payload=True, send_for_all_actions=True,
                               headers={WEBHOOK_HEADER: webhook_secret})
        setup.webhooks_signed += 1
    for hook in hooks:
        if (hook.get("headers") or {}).get(WEBHOOK_HEADER) != webhook_secret:
            client.webhooks.update(id=hook["id"], url=hook_url, headers={WEBHOOK_HEADER: webhook_secret})
            setup.webhooks_signed += 1

    if tasks and not _plain(client.projects.get(id=pid)).get("task_number"):
        client.projects.import_tasks(id=pid, request=tasks)
        setup.imported = len(tasks)
    return setup


def preannotation_tally(client: Any, project_id: int, recorded: Callable[[], dict[int, Outcome]]) -> Tally:
    """Per task of the project: pre-annotated (its latest prelabel prediction has a valid region),
    failed (with the reason the worker recorded, else the ``#status`` of the prediction), or pending.

    The worker records a reason before it writes the prediction, so the records are read after
    the predictions: every prediction seen then has its reason."""
    from prelabel.jobs.reconcile import is_own_preannotation

    latest: dict[int, dict[str, Any]] = {}
    for prediction in (_plain(p) for p in client.predictions.list(project=project_id)):
        if is_own_preannotation(prediction.get("model_version") or ""):
            task = prediction["task"]
            if task not in latest or prediction["id"] > latest[task]["id"]:
                latest[task] = prediction
    task_ids = [_plain(t)["id"] for t in client.tasks.list(project=project_id)]
    reasons = recorded()
    per_task: list[Outcome | None] = []
    for task_id in task_ids:
        prediction = latest.get(task_id)
        status = (prediction or {}).get("model_version", "").partition("#")[2] or "ok"
        if prediction and prediction.get("result"):
            per_task.append(Outcome(status, None, labeled=True))
        elif task_id in reasons and not reasons[task_id].labeled:
            per_task.append(reasons[task_id])
        else:
            per_task.append(Outcome(status, status) if prediction else None)
    return Tally.of(per_task)
