"""The ``prelabel`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from prelabel import init_cli, predict_cli
from prelabel.errors import UserError
from prelabel.export import cli as export_cli
from prelabel.jobs import cli as jobs_cli
from prelabel.prompts_cli import app as prompts_app
from prelabel.quality import annotators_cli
from prelabel.quality import cli as quality_cli
from prelabel.ranking import cli as ranking_cli
from prelabel.redis_conn import embedded_redis_stopped_on_exit
from prelabel.settings import Settings, get_settings
from prelabel.stack import cli as stack_cli
from prelabel.train.cli import app as train_app
from prelabel.train.cli import eval_command

console = Console(stderr=True)
errors = Console(stderr=True, soft_wrap=True)  # one line per error, however long (log files, grep)


class Commands(TyperGroup):
    """The root command group: a ``UserError`` from any command becomes one red line on stderr and
    its exit code (2), here once instead of a try/except per command; other errors keep their
    traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except UserError as exc:
            errors.print("[red]error:[/red]", escape(str(exc)))
            sys.exit(exc.exit_code)
        except ValidationError as exc:  # the environment's settings (a blank secret, a bad number)
            if exc.title != Settings.__name__:
                raise
            for error in exc.errors():
                errors.print("[red]error:[/red] setting", escape(".".join(map(str, error["loc"]))) + ":",
                             escape(error["msg"]))
            sys.exit(UserError.exit_code)


app = typer.Typer(help="LLM pre-annotation, review and active learning for Label Studio.", no_args_is_help=True,
                  cls=Commands)
config_app = typer.Typer(help="Inspect labeling configs and guidelines.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.command()(jobs_cli.worker)
app.command()(jobs_cli.jobs)
app.command()(quality_cli.quality)
app.command()(quality_cli.spotcheck)
app.command()(annotators_cli.annotators)
app.command("simulate-al")(ranking_cli.simulate_al)
app.command()(stack_cli.up)
app.command()(stack_cli.down)
app.command()(stack_cli.status)
app.command()(init_cli.init)
app.add_typer(train_app, name="train")
app.add_typer(prompts_app, name="prompts")
app.command("eval")(eval_command)
app.command()(export_cli.export)
app.command()(predict_cli.predict)


@app.callback()
def main(
    log_level: str = typer.Option(None, help="Log level (default from PRELABEL_LOG_LEVEL or INFO)."),
    json_logs: bool = typer.Option(None, "--json-logs/--plain-logs", help="Log JSON lines."),
) -> None:
    from prelabel.logs import configure_logging

    settings = get_settings()
    if log_level:
        settings.log_level = log_level
    if json_logs is not None:
        settings.log_json = json_logs
    configure_logging(settings.log_level, settings.log_json, settings.secret_values())


@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default PRELABEL_HOST or 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default PRELABEL_PORT or 9090)."),
) -> None:
    """Run the Label Studio ML backend (GET /health, POST /setup /predict /webhook, GET /metrics)."""
    import uvicorn

    from prelabel.ml_backend.server import create_app

    settings = get_settings()
    with embedded_redis_stopped_on_exit():
        uvicorn.run(
            create_app(settings), host=host or settings.host, port=port or settings.port,
            log_level=settings.log_level.lower(), access_log=False, log_config=None,
        )


@app.command()
def migrate(
    force: bool = typer.Option(False, "--force", help="Look again even when a run is marked done (keys an older "
                                                      "process wrote since, or ones left by a conflict)."),
) -> None:
    """Move what older versions stored in Redis to today's key formats (the backend and the worker do
    it at start; safe to run twice). Tenancy: keys with a bare project id become the configured Label
    Studio's (LABEL_STUDIO_URL), e.g. prelabel:outcome:4711 -> prelabel:outcome:<tenant>:4711."""
    from dataclasses import asdict

    from prelabel.migrate import migrate_tenancy
    from prelabel.redis_conn import connection

    settings = get_settings()
    with embedded_redis_stopped_on_exit():
        conn = connection(settings)
        try:
            report = migrate_tenancy(conn, settings, force=force)
        finally:
            conn.close()
    typer.echo(json.dumps({"tenancy": asdict(report)}, indent=2))


@config_app.command("check")
def config_check(
    config: Path = typer.Argument(..., exists=True, help="Labeling config XML file."),
    guideline: str = typer.Option(None, "--guideline", "-g", help="Guideline template name or YAML path."),
) -> None:
    """Validate a labeling config (+ guideline) and show the answer schema the LLM must fill."""
    from prelabel.label_config.guideline import default_guideline, load_guideline
    from prelabel.label_config.schema import build_schema
    from prelabel.prediction.prompt import Prompt

    schema = build_schema(config.read_text(encoding="utf-8"))
    rules = load_guideline(guideline) if guideline else default_guideline(schema)
    table = Table(title=f"{config.name}: controls")
    for column in ("control", "tag", "object", "answer", "status"):
        table.add_column(column)
    for control in schema.fields:
        table.add_row(control.name, control.tag, control.object_name, control.describe(), "[green]filled[/green]")
    for item in schema.unsupported:
        table.add_row(item.name, item.tag, "", item.reason, "[yellow]skipped[/yellow]")
    Console().print(table)
    errors, warnings = rules.check_against(schema)
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    for error in errors:
        console.print(f"[red]error:[/red] {error}")
    prompt = Prompt(schema, rules)
    Console().print_json(json.dumps({
        "config_hash": schema.config_hash,
        "guideline": rules.name,
        "guideline_hash": rules.hash,
        "prompt_version": prompt.version,
        "answer_schema": schema.json_schema(),
    }))
    if errors:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
