"""``prelabel up``, ``prelabel down``, ``prelabel status``."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from prelabel.settings import get_settings

console = Console(soft_wrap=True)


def _say(message: str) -> None:
    console.print(f"[bold cyan]\\[up][/bold cyan] {message}")


def up(
    ls_port: int = typer.Option(8080, "--ls-port", help="Label Studio port."),
    backend_port: int = typer.Option(9090, "--backend-port", help="Backend port."),
    llm_port: int = typer.Option(8000, "--llm-port", help="Local LLM server port (unused with OPENAI_BASE_URL)."),
    template: str = typer.Option("search_intent", help="Template of the sample project."),
) -> None:
    """Run Label Studio + backend + worker + embedded Redis + local LLM, with a sample project pre-annotated.

    Data lives in PRELABEL_DATA_DIR (default ~/.local/share/prelabel); a second `up` reuses it.
    Ctrl-C or `prelabel down` stops everything.
    """
    from prelabel.stack.up import run_up

    code = run_up(get_settings(), ls_port=ls_port, backend_port=backend_port, llm_port=llm_port,
                  template=template, say=_say)
    raise typer.Exit(code)


def down() -> None:
    """Stop a stack started by `prelabel up` (same PRELABEL_DATA_DIR)."""
    from prelabel.stack.up import run_down

    raise typer.Exit(run_down(get_settings(), _say))


def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Is the local stack running, and are its parts healthy? Exit 3 when it is not running."""
    from prelabel.stack.up import stack_status

    state = stack_status(get_settings())
    if state.get("backend_health"):
        from prelabel.stack.llm_load import fetch_llm_load
        from prelabel.stack.record import load_record

        auth = load_record(get_settings()).backend_auth()
        state["llm_load"] = fetch_llm_load(state["backend"], auth)
    if state["running"]:
        state["stages"] = _stages()
    if as_json:
        typer.echo(json.dumps(state, indent=2))
    else:
        console.print(("[green]running[/green]" if state["running"] else "[yellow]not running[/yellow]") +
                      f"  data {state['data_dir']}")
        for key in ("label_studio", "backend", "llm", "project_id", "label_studio_health", "backend_health",
                    "llm_health", "llm_error"):
            if key in state:
                console.print(f"  {key}: {state.get(key)}")
        names = {"default": "other projects", "*": "all projects"}
        for project, served in state.get("models", {}).items():
            console.print(f"  model for {names.get(project, 'project ' + project)}: {served}")
        for name, alive in state["processes"].items():
            console.print(f"  {name}: {'up' if alive else 'down'}")
        if "llm_load" in state:
            from prelabel.stack.llm_load import format_llm_load, format_webhooks

            for line in format_llm_load(state["llm_load"]):
                console.print(f"  {line}")
            for line in format_webhooks(state["llm_load"]):
                console.print(f"  {line}")
        if state.get("stages"):
            from prelabel.prediction.stage_router import format_stage_report

            for line in format_stage_report(state["stages"]):
                console.print(f"  {line}")
    raise typer.Exit(0 if state["running"] else 3)


def _stages() -> dict[str, Any]:
    """Which stage answers what share of each project's tasks, and how accurate it measured."""
    from redis.exceptions import RedisError

    from prelabel.jobs.queue import connection
    from prelabel.prediction.stage_router import stage_report

    try:
        return stage_report(connection(get_settings()))
    except RedisError:
        return {}
