"""``prelabel prompts eval|use|history|show``: guideline versions judged on the project's ground truth.

``eval`` runs a candidate (guideline x model) and the project's current version on the project's
human-verified tasks and reports both (``prelabel.train.prompt_eval``); ``use`` makes a
guideline the project's active version (the backend and the worker read it per request);
``history`` lists the activations with their eval scores; ``show`` prints the exact prompt of
any ``p-<hash>`` a prediction carries. Label Studio is reached through ``prelabel.studio.access``
(``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``); Redis is the backend's (``REDIS_URL`` or the
embedded one under ``PRELABEL_DATA_DIR``).
"""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import redis
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prelabel.errors import UserError
from prelabel.settings import Settings, get_settings
from prelabel.studio.tenancy import configured

app = typer.Typer(help="Guideline versions: evaluate on human-verified tasks, activate, list, resolve.",
                  no_args_is_help=True)
console = Console(stderr=True)
# Piped into a file or another program, tables keep whole model versions on one line.
out_console = Console(width=None if sys.stdout.isatty() else 200)

PROMPT_VERSION = re.compile(r"p-[0-9a-f]{10}")
GUIDELINE_HASH = re.compile(r"[0-9a-f]{12}")


def _fail(message: str, code: int) -> typer.Exit:
    """Exit ``code`` for the outcomes that are not input errors (nothing stored yet: 1); input errors
    are ``UserError``s, reported by the root command group with exit code 2."""
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _redis(settings: Settings) -> redis.Redis:
    from prelabel.redis_conn import connection

    return connection(settings)


def _label_studio(settings: Settings) -> Any:
    """A Label Studio client through ``studio.access`` (``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``)."""
    from prelabel.studio.access import connect

    return connect(settings)


def _project_config(client: Any, project: int) -> str:
    from prelabel.export.source import project_info

    return project_info(client, project)["label_config"]


def resolve_guideline(ref: str, conn: redis.Redis, settings: Settings) -> dict[str, Any]:
    """A guideline by template name, YAML file, prompt version ``p-<hash>`` or guideline hash."""
    from prelabel.label_config import guideline_store as store
    from prelabel.label_config.guideline import load_guideline, named_guideline_path

    if PROMPT_VERSION.fullmatch(ref):
        guideline = store.stored_guideline(conn, store.prompt_version(conn, ref)["guideline_hash"])
    elif GUIDELINE_HASH.fullmatch(ref):
        guideline = store.stored_guideline(conn, ref)
    elif Path(ref).is_file():
        guideline = load_guideline(Path(ref))
    else:
        guideline = load_guideline(named_guideline_path(ref, settings.guidelines_dir))
    return guideline.model_dump(mode="json")


def current_version(settings: Settings, conn: redis.Redis, project: int) -> Any:
    """What the backend uses for this project now: the active guideline (else the one /setup named,
    else the config's matching template) and the promoted model (else the configured one)."""
    from prelabel.jobs.projects import load_project
    from prelabel.label_config import guideline_store as store
    from prelabel.prediction.service import choose_guideline
    from prelabel.train.promote import active_model
    from prelabel.train.prompt_eval import Version

    ref = configured(settings, project)
    guideline = choose_guideline(None, store.active_guideline(store.active(conn, ref)),
                                 load_project(conn, ref).guideline)
    promoted: dict[str, Any] = dict(active_model(conn, ref) or {})
    model = promoted.get("model") or settings.llm_model
    urls = [promoted["base_url"]] if promoted.get("model") and promoted.get("base_url") else settings.llm_base_urls
    return Version("current", guideline, model, urls)


@app.command("eval")
def evaluate(
    project: int = typer.Option(..., "--project", "-p", help="Label Studio project id."),
    guideline: str = typer.Option(None, "--guideline", "-g", help="Candidate guideline: template name, YAML file, "
                                  "p-<hash> or guideline hash (default: the current one)."),
    model: str = typer.Option(None, "--model", help="Candidate model (default: the current one)."),
    base_url: str = typer.Option(None, "--base-url", help="Candidate model's OpenAI-compatible base URL."),
    sample_k: int = typer.Option(None, "--sample", min=1, help="Evaluate on K verified tasks drawn at random."),
    seed: int = typer.Option(0, help="Seed of --sample."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for report.json, report.md and the confusion "
                             "PNGs (default prompts-eval/<project>-<time>)."),
    ground_truth_only: bool = typer.Option(False, help="Only tasks with a ground-truth annotation (as export)."),
    min_annotators: int = typer.Option(1, min=1, help="Tasks need this many distinct annotators (as export)."),
    min_agreement: float = typer.Option(0.5, min=0.0, max=1.0, help="Share of annotators that must agree."),
) -> None:
    """Run a candidate guideline x model and the current version on the project's human-verified tasks."""
    from prelabel.export.source import project_tasks
    from prelabel.export.verify import VerifyOptions
    from prelabel.label_config import guideline_store as store
    from prelabel.label_config.schema import build_schema
    from prelabel.train import prompt_eval

    settings = get_settings()
    conn = _redis(settings)
    client = _label_studio(settings)
    config = _project_config(client, project)
    verify = VerifyOptions(ground_truth_only, min_annotators, min_agreement)
    schema = build_schema(config, settings.span_occurrence)
    current = current_version(settings, conn, project)
    wanted = resolve_guideline(guideline, conn, settings) if guideline else current.guideline
    urls = [base_url] if base_url else current.base_urls
    candidate = prompt_eval.Version("candidate", wanted, model or current.model, urls)

    with console.status(f"reading project {project}'s tasks"):
        selection = prompt_eval.verified_cases(project_tasks(client, project), schema, verify)
    if not selection.cases:
        reasons = ", ".join(f"{n} {why}" for why, n in selection.skipped.most_common()) or "none at all"
        raise UserError(f"project {project} has no human-verified tasks to evaluate on ({selection.total} tasks: "
                        f"{reasons}); label some in Label Studio first")
    cases = prompt_eval.sample(selection.cases, sample_k, seed)
    console.print(f"project {project}: {len(cases)} of {len(selection.cases)} human-verified tasks "
                  f"({selection.total} in the project)")

    runs = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        for version in (current, candidate):
            job = bar.add_task(f"{version.label} ({version.model})", total=len(cases))
            runs.append(asyncio.run(prompt_eval.run_version(
                settings, version, config, cases, partial(bar.advance, job))))

    stamp = datetime.now(UTC)
    meta = {"project": project, "time": stamp.isoformat(timespec="seconds"),
            "verification": f"ground_truth_only={ground_truth_only}, min_annotators={min_annotators}, "
                            f"min_agreement={min_agreement}",
            "sample": sample_k, "seed": seed, "verified_tasks": len(selection.cases),
            "skipped": dict(selection.skipped)}
    report = prompt_eval.compare(runs, cases, meta)
    folder = out or Path("prompts-eval") / f"{project}-{stamp.strftime('%Y%m%d-%H%M%S')}"
    files = prompt_eval.write_outputs(report, folder)
    for run in runs:  # both versions resolvable and their scores listed by `prompts history`
        conn.mset(run.ctx.version_writes())
        side = report[run.version.label]
        store.record_scores(conn, configured(settings, project), run.model_version, {
            key: side[key] for key in ("exact_match", "macro_f1", "invalid_rate", "needs_human_rate", "ece", "n")
        } | {"at": meta["time"], "report": str(files["json"].resolve())})
    out_console.print(comparison_table(report))
    console.print(f"{report['changed_count']} tasks changed ({report['improved']} now right, "
                  f"{report['worsened']} now wrong); wrote {files['json']} and {files['markdown']}")


def comparison_table(report: dict[str, Any]) -> Table:
    from prelabel.train.prompt_eval import HEADLINE, fmt

    cur, cand = report["current"], report["candidate"]
    table = Table(title=f"project {report['project']}: {cur['n']} human-verified tasks")
    table.add_column("metric")
    table.add_column(f"current\n{cur['model_version']}", overflow="fold")
    table.add_column(f"candidate\n{cand['model_version']}", overflow="fold")
    for key, title in HEADLINE:
        table.add_row(title, fmt(cur[key]), fmt(cand[key]))
    for name, metrics in cur["controls"].items():
        other = cand["controls"][name]
        table.add_row(f"{name}: accuracy", fmt(metrics.get("accuracy")), fmt(other.get("accuracy")))
        for label, score in (metrics.get("per_class") or {}).items():
            table.add_row(f"{name}: F1 {label}", fmt(score), fmt((other.get("per_class") or {}).get(label)))
    table.add_row("tasks changed", "", f"{report['changed_count']} (+{report['improved']} / -{report['worsened']})")
    return table


@app.command("use")
def use(
    project: int = typer.Option(..., "--project", "-p", help="Label Studio project id."),
    guideline: str = typer.Option(..., "--guideline", "-g", help="Template name, YAML file, p-<hash> or guideline "
                                  "hash."),
) -> None:
    """Make a guideline the project's active version: new predictions use it at once (no restart)."""
    from prelabel.label_config import guideline_store as store
    from prelabel.label_config.guideline import parse_guideline
    from prelabel.prediction.predictor import ContextBuilder

    settings = get_settings()
    conn = _redis(settings)
    config = _project_config(_label_studio(settings), project)
    chosen = resolve_guideline(guideline, conn, settings)
    ctx = ContextBuilder(settings).context(config, chosen)
    before = store.active(conn, configured(settings, project))
    conn.mset(ctx.version_writes())
    store.activate(conn, configured(settings, project), parse_guideline(chosen), source=guideline,
                   prompt_version=ctx.prompt.version)
    was = f" (was {before['name']} {before['prompt_version']})" if before else ""
    out_console.print(f"project {project}: active guideline {ctx.guideline.name} {ctx.guideline.hash}, prompt version "
                      f"{ctx.prompt.version}{was}; new predictions: model_version <model>@{ctx.prompt.version}")


@app.command("history")
def history(project: int = typer.Option(..., "--project", "-p", help="Label Studio project id.")) -> None:
    """The project's guideline activations, newest last, and every evaluated version with its scores."""
    from prelabel.label_config import guideline_store as store
    from prelabel.train.prompt_eval import fmt

    conn = _redis(get_settings())
    ref = configured(get_settings(), project)
    entries, scored = store.history(conn, ref), store.scores(conn, ref)
    active = store.active(conn, ref)
    if not entries and not scored:
        raise _fail(f"project {project} has no guideline versions yet (`prelabel prompts use` / `prompts eval`)", 1)
    by_prompt = {key.rpartition("@")[2]: value for key, value in sorted(scored.items(), key=lambda kv: kv[1]["at"])}
    table = Table(title=f"project {project}: guideline versions")
    for column in ("#", "set at", "guideline", "hash", "prompt version", "exact match", "macro-F1", "source"):
        table.add_column(column, overflow="fold")
    for index, entry in enumerate(entries, 1):
        score = by_prompt.get(entry["prompt_version"], {})
        mark = " [green](active)[/green]" if active and index == len(entries) else ""
        table.add_row(str(index), entry["set_at"], entry["name"] + mark, entry["guideline_hash"],
                      entry["prompt_version"], fmt(score.get("exact_match")), fmt(score.get("macro_f1")),
                      entry["source"])
    out_console.print(table)
    evaluated = Table(title="evaluated versions (prelabel prompts eval)")
    for column in ("model_version", "tasks", "exact match", "macro-F1", "invalid", "needs_human", "ECE", "at"):
        evaluated.add_column(column, overflow="fold")
    for key, value in sorted(scored.items(), key=lambda kv: kv[1]["at"]):
        evaluated.add_row(key, str(value["n"]), fmt(value["exact_match"]), fmt(value["macro_f1"]),
                          fmt(value["invalid_rate"]), fmt(value["needs_human_rate"]), fmt(value["ece"]), value["at"])
    out_console.print(evaluated)


@app.command("show")
def show(
    version: str = typer.Argument(..., help="A prompt version p-<hash> (from a prediction's model_version)."),
) -> None:
    """Print the exact prompt of a version and the guideline it was rendered from."""
    from prelabel.label_config import guideline_store as store

    conn = _redis(get_settings())
    try:
        record = store.prompt_version(conn, version)
        guideline = store.stored_guideline(conn, record["guideline_hash"])
    except store.VersionNotFound as exc:
        raise _fail(str(exc), 1) from None
    out_console.print(f"# {version}: guideline {record['guideline_name']} {record['guideline_hash']}, "
                      f"labeling config {record['config_hash']}", markup=False)
    out_console.print("## system\n" + record["system"], markup=False, highlight=False)
    out_console.print("## user turn (per task, after the few-shot turns)\n" + record["input_template"], markup=False,
                      highlight=False)
    out_console.print("## guideline\n" + yaml.safe_dump(guideline.model_dump(mode="json"), sort_keys=False,
                                                       allow_unicode=True), markup=False, highlight=False)
