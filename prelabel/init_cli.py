"""``prelabel init``: a Label Studio project from a template, wired to prelabel, in one command."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from prelabel.errors import UserError
from prelabel.settings import get_settings

console = Console(soft_wrap=True)


def init(
    template: str = typer.Option(..., "--template", "-t", help="Shipped template name (e.g. search_intent, ner)."),
    title: str = typer.Option(None, help="Project title (default: '<template> (prelabel)'); reused when it exists."),
    ls_url: str = typer.Option(None, "--ls-url", help="Label Studio URL (default LABEL_STUDIO_URL)."),
    ls_token: str = typer.Option(None, "--ls-token", help="Label Studio token (default LABEL_STUDIO_API_KEY)."),
    backend_url: str = typer.Option(None, "--backend-url",
                                    help="URL Label Studio reaches the backend at (default http://PRELABEL_HOST:PORT)."),
    tasks: Path = typer.Option(None, "--tasks", exists=True, dir_okay=False,
                               help="Tasks JSON/JSONL to import (default: the template's sample tasks)."),
) -> None:
    """Create (or reuse) a project from a template, connect the backend, sign its webhook, import tasks.

    Next to a running `prelabel up` (same PRELABEL_DATA_DIR) it needs no other setting."""
    from prelabel.stack.up import stack_settings
    from prelabel.studio.access import AccessRefused, for_operator, resolve
    from prelabel.studio.project_setup import ensure_project, template_files

    settings = stack_settings(get_settings())  # next to a running `prelabel up`: its Label Studio and backend
    try:
        access = resolve(for_operator(settings, ls_url, ls_token))
    except AccessRefused as exc:
        raise UserError(f"{exc}: give --ls-url/--ls-token or set LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY") from None
    url, token = access.url, access.token.get_secret_value()
    if settings.webhook_secret is None:
        raise UserError("set PRELABEL_WEBHOOK_SECRET (the backend must use the same value)")
    try:
        config, sample = template_files(template)
    except FileNotFoundError:
        raise UserError(f"unknown template {template!r} (see label_config/templates/)") from None
    if tasks is not None:
        text = tasks.read_text(encoding="utf-8").strip()
        sample = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    auth = None
    if settings.basic_auth_user and settings.basic_auth_password:
        auth = (settings.basic_auth_user, settings.basic_auth_password.get_secret_value())
    try:
        setup = ensure_project(
            access.client(), title=title or f"{template} (prelabel)", label_config=config,
            tasks=sample, backend_url=backend_url or f"http://{settings.host}:{settings.port}",
            webhook_secret=settings.webhook_secret.get_secret_value(), basic_auth=auth, guideline=template)
    except Exception as exc:  # LS unreachable, bad token, refused backend: one clear line
        message = str(exc).replace(token, "***")
        console.print(f"[red]error:[/red] Label Studio at {url}: {type(exc).__name__}: {message[:300]}")
        raise typer.Exit(1) from None
    console.print(f"project {setup.project_id}: {'created' if setup.created else 'reused'}; backend "
                  f"{'connected' if setup.connected else 'already connected'}; {setup.webhooks_signed} webhook(s) "
                  f"signed; {setup.imported} task(s) imported")
    console.print(f"{url.rstrip('/')}/projects/{setup.project_id}/data")
