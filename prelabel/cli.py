"""The ``prelabel`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from prelabel.export import cli as export_cli
from prelabel.jobs import cli as jobs_cli
from prelabel.quality import annotators_cli
from prelabel.quality import cli as quality_cli
from prelabel.ranking import cli as ranking_cli
from prelabel.redis_conn import embedded_redis_stopped_on_exit
from prelabel.settings import Settings, get_settings
from prelabel.stack import cli as stack_cli
from prelabel.studio import cli as studio_cli
from prelabel.train.cli import app as train_app
from prelabel.train.cli import eval_command

app = typer.Typer(help="LLM pre-annotation, review and active learning for Label Studio.", no_args_is_help=True)
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
app.command()(studio_cli.init)
app.add_typer(train_app, name="train")
app.command("eval")(eval_command)
app.command()(export_cli.export)
console = Console(stderr=True)


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


def _read_tasks(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8") if str(path) != "-" else sys.stdin.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        tasks = json.loads(stripped)
    else:
        tasks = [json.loads(line) for line in text.splitlines() if line.strip()]
    # Accept bare data objects as well as LS task objects.
    return [t if isinstance(t, dict) and "data" in t else {"data": t} for t in tasks]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@app.command()
def predict(
    config: Path = typer.Option(..., "--config", "-c", exists=True, help="Labeling config XML."),
    tasks_path: Path = typer.Option(..., "--tasks", "-t", help="Tasks JSON array or JSONL ('-' = stdin)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output JSONL (default stdout)."),
    guideline: str = typer.Option(None, "--guideline", "-g", help="Guideline template name or YAML path."),
    as_import: bool = typer.Option(
        False, "--import-format", help="Write LS import records (task data + predictions) instead."
    ),
) -> None:
    """Pre-annotate tasks offline: tasks in, Label Studio predictions out (one JSON per line)."""
    from prelabel.label_config.guideline import GuidelineError
    from prelabel.label_config.schema import ConfigError

    settings = get_settings()
    try:
        tasks = _read_tasks(tasks_path)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read tasks: {exc}", param_hint="--tasks") from None
    try:
        results = asyncio.run(_predict_offline(settings, config.read_text(encoding="utf-8"), guideline, tasks))
    except (ConfigError, GuidelineError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    sink = out.open("w", encoding="utf-8") if out else sys.stdout
    try:
        for task, prediction in zip(tasks, results):
            record = {**task, "predictions": [prediction]} if as_import else {"id": task.get("id"), **prediction}
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if out:
            sink.close()
    statuses: dict[str, int] = {}
    for prediction in results:
        statuses[prediction["meta"]["status"]] = statuses.get(prediction["meta"]["status"], 0) + 1
    console.print("done: " + ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())))


async def _predict_offline(
    settings: Settings, label_config: str, guideline: str | None, tasks: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    from prelabel.ml_backend.predictor import open_predictor

    results: list[dict[str, Any]] = []
    progress = Progress(
        TextColumn("pre-annotating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )
    async with open_predictor(settings) as predictor:
        context = predictor.context(label_config, guideline)
        with progress:
            bar = progress.add_task("predict", total=len(tasks))
            for chunk in _chunks(tasks, max(1, settings.llm_concurrency * 2)):
                results.extend(await predictor.predict(chunk, context))
                progress.advance(bar, len(chunk))
    return results


@config_app.command("check")
def config_check(
    config: Path = typer.Argument(..., exists=True, help="Labeling config XML file."),
    guideline: str = typer.Option(None, "--guideline", "-g", help="Guideline template name or YAML path."),
) -> None:
    """Validate a labeling config (+ guideline) and show the answer schema the LLM must fill."""
    from prelabel.label_config.guideline import GuidelineError, default_guideline, load_guideline
    from prelabel.label_config.schema import ConfigError, build_schema
    from prelabel.ml_backend.prompt import Prompt

    try:
        schema = build_schema(config.read_text(encoding="utf-8"))
        rules = load_guideline(guideline) if guideline else default_guideline(schema)
    except (ConfigError, GuidelineError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
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
