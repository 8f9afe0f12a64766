"""``prelabel quality`` and ``prelabel spotcheck``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from prelabel.errors import UserError
from prelabel.settings import get_settings
from prelabel.studio.tenancy import configured

console = Console()


def _client():  # the SDK's client type
    from prelabel.studio.access import AccessRefused, connect

    try:
        return connect(get_settings())
    except AccessRefused as exc:
        raise UserError(f"{exc} (set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)") from None


def quality(
    project: int = typer.Option(..., "--project", "-p", help="Label Studio project id."),
    out: Path = typer.Option(Path("quality"), "--out", "-o", help="Folder for quality.json and confusion.png."),
    bar: float = typer.Option(0.9, min=0.0, max=1.0, help="Agreement under which a class is flagged."),
    calibration: str = typer.Option("auto", help="Calibration map: auto (platt, isotonic from 200 labels), "
                                                 "platt or isotonic."),
    store: bool = typer.Option(True, help="Store the fitted calibration maps for the backend (Redis)."),
) -> None:
    """Per-class agreement of pre-annotations with human labels (confusion matrix PNG) and the
    score's calibration: ECE/AUROC before and after, reliability diagram PNG, map stored."""
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
    _learning_curve(project, out)
    _calibration(project, out, calibration, store)


def _learning_curve(project: int, out: Path) -> None:
    """Held-out accuracy vs human labels per stage, as the worker measured it on every refresh."""
    from redis.exceptions import RedisError

    from prelabel.prediction.stage_router import learning_curve
    from prelabel.quality.plots import learning_curve_png
    from prelabel.redis_conn import connection

    try:
        curve = learning_curve(connection(get_settings()), configured(get_settings(), project))
    except RedisError as exc:
        console.print(f"learning curve: Redis unreachable ({type(exc).__name__})")
        return
    if not curve:
        console.print("learning curve: no stage measured yet (the worker measures on every refresh)")
        return
    png = learning_curve_png(curve, out / "learning_curve.png", f"project {project}: held-out accuracy vs labels")
    last = ", ".join(f"{stage} {points[-1][1]:.0%} at {points[-1][0]} labels"
                     for stage, points in sorted(curve.items()))
    console.print(f"learning curve: {last}; wrote {png}")


def _calibration(project: int, out: Path, method: str, store: bool) -> None:
    from prelabel.quality.calibration_fit import project_calibration, reliability_png, store_maps

    if method not in ("auto", "platt", "isotonic"):
        raise typer.BadParameter("--calibration must be auto, platt or isotonic")
    reports = project_calibration(_client(), project, method)  # type: ignore[arg-type]
    if not reports:
        console.print("score: [yellow]uncalibrated[/yellow]: no human-labeled pre-annotations yet")
        (out / "calibration.json").write_text(json.dumps({"status": "uncalibrated", "models": []}, indent=2))
        return
    table = Table(title=f"project {project}: calibration of the score (after = out of fold)")
    for column in ("model", "human labels", "accuracy", "ECE before", "ECE after", "AUROC before", "AUROC after",
                   "status"):
        table.add_column(column)
    for r in reports:
        after = r.after or {}
        table.add_row(r.model, str(r.n), _fmt(r.accuracy), _fmt(r.before.get("ece")), _fmt(after.get("ece")),
                      _fmt(r.before.get("auroc")), _fmt(after.get("auroc")), r.status)
        png = reliability_png(r, out / f"reliability-{_safe(r.model)}.png", f"project {project}")
        console.print(f"wrote {png}")
    console.print(table)
    if store:
        from prelabel.redis_conn import connection

        ids = store_maps(connection(get_settings()), configured(get_settings(), project), reports)
        console.print(f"calibration maps stored: {', '.join(ids) or 'none'}")
    (out / "calibration.json").write_text(json.dumps({"models": [r.as_dict() for r in reports]}, indent=2))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def spotcheck(
    project: int = typer.Option(..., "--project", "-p", help="Label Studio project id."),
    n: int = typer.Option(150, "-n", min=1, help="Tasks to sample."),
    abnormal_share: float = typer.Option(0.6, min=0.0, max=1.0, help="Share drawn from abnormal tasks."),
    seed: int = typer.Option(0, help="Random seed (same seed, same sample)."),
) -> None:
    """Sample tasks for human review and tag them (data.prelabel_spotcheck) in Label Studio."""
    from prelabel.quality.project import spotcheck_project
    from prelabel.redis_conn import connection

    # the workers' lock on task fields, so a review or ranking job running now keeps its fields
    batch, chosen = spotcheck_project(_client(), configured(get_settings(), project), n, abnormal_share, seed,
                                      connection(get_settings()))
    console.print(f"tagged {len(chosen.ids)} tasks as {batch}: " +
                  ", ".join(f"{k} {v}" for k, v in sorted(chosen.counts().items())))
    console.print(f"filter the Data Manager on data.prelabel_spotcheck = {batch}")
