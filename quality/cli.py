"""``prelabel quality`` and ``prelabel spotcheck``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from prelabel.settings import get_settings

console = Console()


def _client():  # noqa: ANN202 - the SDK's client type
    from prelabel.studio.access import AccessRefused, connect

    try:
        return connect(get_settings())
    except AccessRefused as exc:
        console.print(f"[red]error:[/red] {exc} (set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)")
        raise typer.Exit(2) from None


def quality(
    project: int = typer.Option(..., "--project", "-p", help="Label Studio project id."),
    out: Path = typer.Option(Path("quality"), "--out", "-o", help="Folder for quality.json and confusion.png."),
    bar: float = typer.Option(0.9, min=0.0, max=1.0, help="Agreement under which a class is flagged."),
) -> None:
    """Per-class agreement of pre-annotations with human labels; confusion matrix PNG."""
    from prelabel.quality.plots import confusion_png
    from prelabel.quality.project import project_agreement

    report = project_agreement(_client(), project, bar)
    table = Table(title=f"project {project}: pre-annotation vs human ({report.compared} tasks)")
    for column in ("class", "human labels", "agreed", "agreement", "top confusions"):
        table.add_column(column)
    for c in report.classes:
        rate = "-" if c.rate is None else f"{c.rate:.0%}"
        if c in report.flagged:
            rate = f"[red]{rate} < {bar:.0%}[/red]"
        confusions = ", ".join(f"{label} x{count}" for label, count in c.confusions[:3])
        table.add_row(c.label, str(c.n), str(c.agreed), rate, confusions)
    console.print(table)
    overall = "-" if report.overall is None else f"{report.overall:.1%}"
    console.print(f"overall agreement {overall}; flagged: {', '.join(c.label for c in report.flagged) or 'none'}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(report.as_dict(), indent=2))
    png = confusion_png(report.matrix, report.labels, report.labels + ["(none)"], out / "confusion.png",
                        f"project {project}: pre-annotation vs human")
    console.print(f"wrote {out / 'quality.json'} and {png}")


def spotcheck(
    project: int = typer.Option(..., "--project", "-p", help="Label Studio project id."),
    n: int = typer.Option(150, "-n", min=1, help="Tasks to sample."),
    abnormal_share: float = typer.Option(0.6, min=0.0, max=1.0, help="Share drawn from abnormal tasks."),
    seed: int = typer.Option(0, help="Random seed (same seed, same sample)."),
) -> None:
    """Sample tasks for human review and tag them (data.prelabel_spotcheck) in Label Studio."""
    from prelabel.quality.project import spotcheck_project

    batch, chosen = spotcheck_project(_client(), project, n, abnormal_share, seed)
    console.print(f"tagged {len(chosen.ids)} tasks as {batch}: " +
                  ", ".join(f"{k} {v}" for k, v in sorted(chosen.counts().items())))
    console.print(f"filter the Data Manager on data.prelabel_spotcheck = {batch}")
