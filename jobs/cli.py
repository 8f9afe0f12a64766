"""``prelabel worker`` and ``prelabel jobs``."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.table import Table

from prelabel.contract import QUEUE_NAME, TRAIN_QUEUE_NAME, WORKER_QUEUES
from prelabel.settings import get_settings

console = Console()


def worker(
    processes: int = typer.Option(1, "--processes", "-p", min=1, help="Worker processes (one job at a time each)."),
    burst: bool = typer.Option(False, "--burst", help="Exit when the queue is empty (batch runs, tests)."),
    maintenance_interval: int = typer.Option(
        60, min=1, help="Seconds between RQ maintenance runs (abandoned jobs of dead workers on other hosts)."
    ),
    queues: str = typer.Option(
        ",".join(WORKER_QUEUES), "--queues", "-q",
        help=f"Comma-separated queues to consume: {QUEUE_NAME} (pre-annotation, review, ranking) and/or "
             f"{TRAIN_QUEUE_NAME} (fine-tuning runs, needs the train extra)."),
) -> None:
    """Run background jobs: batch pre-annotation, second-model review, ranking, quality, training."""
    from prelabel.jobs.worker import run_workers

    names = tuple(dict.fromkeys(q.strip() for q in queues.split(",") if q.strip()))
    unknown = set(names) - set(WORKER_QUEUES)
    if not names or unknown:
        raise typer.BadParameter(f"queues are {', '.join(WORKER_QUEUES)}", param_hint="--queues")
    run_workers(get_settings(), processes, burst, maintenance_interval, names)


def jobs(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    failed: int = typer.Option(10, help="How many of the most recent failed jobs to list."),
) -> None:
    """Queue depth, running and failed jobs (with their reasons), workers, review outcomes."""
    from prelabel.jobs.queue import connection
    from prelabel.jobs.status import queue_status

    settings = get_settings()
    conn = connection(settings)
    try:
        status = queue_status(conn, failed)
    finally:
        conn.close()
    if as_json:
        typer.echo(json.dumps(asdict(status), indent=2, default=str))
        return
    summary = Table(title="prelabel queue")
    for column in ("queued", "running", "scheduled (retries)", "finished", "failed", "workers"):
        summary.add_column(column, justify="right")
    summary.add_row(*(str(v) for v in (status.queued, status.running, status.scheduled, status.finished,
                                       status.failed, len(status.workers))))
    console.print(summary)
    if status.running_jobs:
        running = Table(title="running")
        running.add_column("job")
        running.add_column("what")
        for job in status.running_jobs:
            running.add_row(job["id"], job["description"])
        console.print(running)
    if status.failed_jobs:
        table = Table(title=f"failed (latest {len(status.failed_jobs)})")
        for column in ("job", "what", "ended", "reason"):
            table.add_column(column)
        for failed_job in status.failed_jobs:
            table.add_row(failed_job.id, failed_job.description, failed_job.ended_at or "", failed_job.reason)
        console.print(table)
    if status.reviews:
        console.print("reviews: " + ", ".join(f"{k} {v}" for k, v in sorted(status.reviews.items())))
