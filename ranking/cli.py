"""``prelabel simulate-al``."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

console = Console()


def _read(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[str]]:
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {text_col, label_col} - set(reader.fieldnames or [])
        if missing:
            raise typer.BadParameter(f"{path} has no column(s) {sorted(missing)}; it has {reader.fieldnames}")
        rows = [(r[text_col], r[label_col]) for r in reader if r[text_col] and r[label_col]]
    return [t for t, _ in rows], [y for _, y in rows]


def simulate_al(
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False, help="Labeled CSV."),
    text_col: str = typer.Option("text", "--text-col", help="Column with the text."),
    label_col: str = typer.Option("label", "--label-col", help="Column with the label."),
    budget: int = typer.Option(3000, min=1, help="Labels to spend per strategy."),
    batch: int = typer.Option(100, min=1, help="Labels asked per round."),
    initial: int = typer.Option(50, min=2, help="Random seed set shared by all strategies."),
    strategies: str = typer.Option("random,least_confidence,margin,entropy,margin+diversity",
                                   help="Comma-separated strategies."),
    seed: int = typer.Option(0, help="Random seed."),
    out: Path = typer.Option(Path("al-simulation"), "--out", "-o", help="Folder for CSV, PNG and summary."),
) -> None:
    """Pool-based active-learning simulation: strategies vs random sampling, learning curves."""
    from prelabel.ranking.simulate import simulate, write_curves

    texts, labels = _read(data, text_col, label_col)
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    rounds = -(-(min(budget, len(texts)) - initial) // batch) + 1
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("simulating", total=rounds * len(names))
        try:
            result = simulate(texts, labels, budget=budget, batch=batch, initial=initial, strategies=names,
                              seed=seed, progress=lambda name, n: bar.update(task, advance=1,
                                                                             description=f"{name} @ {n}"))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    csv_path, png_path = write_curves(result, out, f"{data.name}: active learning vs random")
    savings = result.savings()
    (out / "summary.json").write_text(json.dumps({"pool": result.pool_size, "test": result.test_size,
                                                   "classes": result.classes, "seconds": result.seconds,
                                                   "savings": savings}, indent=2))
    table = Table(title=f"{len(texts)} texts, {len(result.classes)} classes, pool {result.pool_size}, "
                        f"test {result.test_size}, {result.seconds:.1f} s")
    for column in ("strategy", "final accuracy", "labels to reach random's final", "labels saved"):
        table.add_column(column)
    for name, row in savings.items():
        table.add_row(name, f"{row['final_accuracy']:.4f}", str(row["labels_needed"] or "never"),
                      str(row["labels_saved"] if row["labels_saved"] is not None else "-"))
    console.print(table)
    console.print(f"wrote {csv_path}, {png_path}, {out / 'summary.json'}")
