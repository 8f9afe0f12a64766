"""``prelabel predict``: pre-annotate a file of tasks offline, the way batch labeling jobs run.

Tasks come as a JSON array, JSONL (task objects or bare data objects) or plain text with one
item per line (it fills the config's only text object). A line goes to stderr every
``--progress-every`` tasks; at the end a truthful summary: only tasks whose prediction has at
least one region count as pre-annotated, ``needs_human`` and ``error`` tasks are counted apart
with their most frequent reason, and the label distribution (count, %) of each choice or rating
control. A failed task's prediction keeps the model's raw output (truncated) in ``meta`` for
debugging. The exit code is 1 when every task failed, 2 for unusable input.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from prelabel.contract import Prediction, TaskStatus
from prelabel.prediction.outcomes import Tally, prediction_outcome
from prelabel.settings import Settings, get_settings

console = Console(stderr=True)
FORMATS = ("auto", "json", "jsonl", "text")


def read_tasks(text: str, fmt: str, text_key: str | None) -> list[dict[str, Any]]:
    """Tasks from a JSON array, JSONL or plain text (one item per line, into ``data[text_key]``)."""
    stripped = text.lstrip()
    lines = [line for line in text.splitlines() if line.strip()]
    if fmt == "auto":
        fmt = "json" if stripped.startswith("[") else "jsonl" if lines and all(
            line.lstrip().startswith("{") for line in lines) else "text"
    if fmt == "text":
        if not text_key:
            raise ValueError("plain text input needs a config with exactly one text object")
        return [{"data": {text_key: line.strip()}} for line in lines]
    tasks = json.loads(stripped) if fmt == "json" else [json.loads(line) for line in lines]
    if not isinstance(tasks, list):
        raise TypeError("a JSON file must hold an array of tasks")
    return [t if isinstance(t, dict) and "data" in t else {"data": t} for t in tasks]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start: start + size]


class Summary:
    """Counts of one batch: outcomes (as the worker and `prelabel up` count them), labels per control."""

    def __init__(self, label_controls: list[str]) -> None:
        self.tally = Tally()
        self.labels: dict[str, Counter[str]] = {name: Counter() for name in label_controls}

    def add(self, prediction: Prediction) -> None:
        self.tally.add(prediction_outcome(prediction))
        for region in prediction.get("result") or []:
            counts = self.labels.get(region.get("from_name"))
            value = region.get("value") or {}
            if counts is not None:
                counts.update(str(v) for v in value.get("choices") or ([value["rating"]] if "rating" in value else []))

    @property
    def total(self) -> int:
        return self.tally.total

    @property
    def failed(self) -> int:
        return self.tally.unlabeled

    def progress_line(self) -> str:
        done = self.tally
        return (f"[predict] {done.total} done: {done.labeled} pre-annotated, "
                f"{sum(n for (s, _), n in done.failed.items() if s == TaskStatus.NEEDS_HUMAN)} needs_human, "
                f"{sum(n for (s, _), n in done.failed.items() if s == TaskStatus.ERROR)} error")

    def final_line(self) -> str:
        done = self.tally
        partly = f" ({done.partly} of them partly, needs_human)" if done.partly else ""
        return f"done: {done.total} tasks; " + "; ".join([f"{done.labeled} pre-annotated{partly}", *done.details()])

    def distribution(self) -> Table | None:
        rows = [(name, label, count) for name, counts in self.labels.items() for label, count in counts.most_common()]
        if not rows:
            return None
        table = Table(title="label distribution")
        for column in ("control", "label", "count", "%"):
            table.add_column(column)
        for name, label, count in rows:
            labeled = sum(self.labels[name].values())
            table.add_row(name, label, str(count), f"{100 * count / labeled:.1f}")
        return table


def predict(
    config: Path = typer.Option(..., "--config", "-c", exists=True, help="Labeling config XML."),
    tasks_path: Path = typer.Option(..., "--tasks", "-t", help="Tasks: JSON array, JSONL or plain text ('-' = stdin)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output JSONL (default stdout)."),
    guideline: str = typer.Option(None, "--guideline", "-g", help="Guideline template name or YAML path."),
    as_import: bool = typer.Option(
        False, "--import-format", help="Write LS import records (task data + predictions) instead."
    ),
    input_format: str = typer.Option("auto", "--input-format", help="auto | json | jsonl | text (one item a line)."),
    progress_every: int = typer.Option(100, "--progress-every", min=1, help="A progress line every N tasks."),
) -> None:
    """Pre-annotate tasks offline: tasks in, Label Studio predictions out (one JSON per line)."""
    from prelabel.label_config.schema import build_schema

    if input_format not in FORMATS:
        raise typer.BadParameter(" | ".join(FORMATS), param_hint="--input-format")
    settings = get_settings()
    label_config = config.read_text(encoding="utf-8")
    schema = build_schema(label_config)
    keys = {schema.objects[c.object_name].value_key for c in schema.fields}
    try:
        raw = tasks_path.read_text(encoding="utf-8") if str(tasks_path) != "-" else sys.stdin.read()
        tasks = read_tasks(raw, input_format, next(iter(keys)) if len(keys) == 1 else None)
    except (OSError, ValueError, TypeError) as exc:
        raise typer.BadParameter(f"cannot read tasks: {exc}", param_hint="--tasks") from None
    if not tasks:
        raise typer.BadParameter("no tasks in the input", param_hint="--tasks")
    summary = Summary([c.name for c in schema.fields if c.tag in ("Choices", "Rating")])
    results = asyncio.run(_predict_offline(settings, label_config, guideline, tasks, summary, progress_every))
    sink = out.open("w", encoding="utf-8") if out else sys.stdout
    try:
        for task, prediction in zip(tasks, results):
            record = {**task, "predictions": [prediction]} if as_import else {"id": task.get("id"), **prediction}
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if out:
            sink.close()
    table = summary.distribution()
    if table is not None:
        console.print(table)
    console.print(summary.final_line(), markup=False, highlight=False)
    if summary.failed == summary.total:
        raise typer.Exit(1)


async def _predict_offline(settings: Settings, label_config: str, guideline: str | None, tasks: list[dict[str, Any]],
                           summary: Summary, every: int) -> list[Prediction]:
    from prelabel.prediction.service import PreannotationService

    results: list[Prediction] = []
    async with PreannotationService.open(settings) as service:
        batch = await service.prepare(None, label_config, guideline, allow_path=True, routed=False)
        for chunk in _chunks(tasks, max(1, settings.llm_concurrency * 2)):
            for prediction in await service.predict(batch, chunk):
                results.append(prediction)
                summary.add(prediction)
                if summary.total % every == 0 or summary.total == len(tasks):
                    console.print(summary.progress_line(), markup=False, highlight=False)
    return results
