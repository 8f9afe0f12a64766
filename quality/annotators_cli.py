"""``prelabel annotators``: screen annotators against reference labels and each other."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=140)


def annotators(
    project: int = typer.Option(..., "--project", "-p", help="Label Studio project id."),
    out: Path = typer.Option(Path("quality"), "--out", "-o", help="Folder for annotators.json and annotators.png."),
    bar: float = typer.Option(0.8, min=0.0, max=1.0, help="Agreement under which an annotator is flagged."),
    min_tasks: int = typer.Option(5, min=1, help="Fewer compared tasks than this is flagged too."),
    import_reference: Path | None = typer.Option(
        None, "--import-reference", exists=True, dir_okay=False,
        help="JSONL of {data, answer}: import it as a qualification set (tasks with a ground-truth annotation)."),
    qualification: bool = typer.Option(
        False, "--qualification", help="Score only the qualification set's tasks; say who qualifies."),
) -> None:
    """Per annotator: agreement with reference and majority, per-class accuracy, ranking agreement,
    tasks done, flags. Table + annotators.json + annotators.png."""
    from prelabel.label_config.schema import build_schema
    from prelabel.quality.annotators import reference_tasks, screen, screening_png
    from prelabel.quality.cli import _client

    client = _client()
    config = client.projects.get(id=project).label_config
    schema = build_schema(config)
    if import_reference is not None:
        name = f"ref-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        records = reference_tasks(import_reference, schema, name)
        for record in records:
            task = client.tasks.create(project=project, data=record["data"])
            client.annotations.create(id=task.id, result=record["result"], ground_truth=True)
        console.print(f"imported {len(records)} reference tasks as {name} (ground truth); "
                      f"annotators label them, then run with --qualification")
    tasks = [t.model_dump() for t in client.tasks.list(project=project, fields="all")]
    report = screen(tasks, schema, bar, min_tasks, qualification)
    title = f"project {project}: annotators" + (" (qualification set)" if qualification else "")
    table = Table(title=title)
    for column in ("annotator", "tasks", "reference", "majority", "ranking", "weakest classes", "flags"):
        table.add_column(column)
    for a in report.annotators:
        weakest = sorted(a.per_class.items(), key=lambda item: (item[1][0] / item[1][1], item[0]))[:2]
        per_class = ", ".join(f"{c} {agreed}/{n}" for c, (agreed, n) in weakest)
        flags = "; ".join(a.flags)
        table.add_row(a.annotator, str(a.tasks), _share(a.reference, a.reference_n), _share(a.majority, a.majority_n),
                      "-" if a.ranking_agreement is None else f"{a.ranking_agreement:.0%}", per_class,
                      f"[green]{flags}[/green]" if flags == "qualified" else f"[red]{flags}[/red]" if flags else "")
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotators.json").write_text(json.dumps(report.as_dict(), indent=2))
    png = screening_png(report, out / "annotators.png", title)
    console.print(f"wrote {out / 'annotators.json'} and {png}")


def _share(value: float | None, n: int) -> str:
    return "-" if value is None else f"{value:.0%} of {n}"
