"""``prelabel export``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

console = Console(soft_wrap=True)


def export(
    project: int = typer.Option(None, "--project", "-p", help="Label Studio project id (LABEL_STUDIO_URL/_API_KEY)."),
    fmt: str = typer.Option("alpaca", "--format", "-f", help="alpaca | sharegpt | pairwise | classification-jsonl"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (replaced only when the export succeeds)."),
    from_file: Path = typer.Option(None, "--from-file", exists=True, dir_okay=False,
                                   help="Read a Label Studio JSON/JSONL export instead of the API."),
    config: Path = typer.Option(None, "--config", "-c", exists=True, dir_okay=False,
                                help="Labeling config XML (with --from-file)."),
    guideline: str = typer.Option(None, "--guideline", "-g", help="Guideline template name or YAML path."),
    ground_truth_only: bool = typer.Option(False, help="Only tasks with a ground-truth annotation."),
    min_annotators: int = typer.Option(1, min=1, help="Tasks need this many distinct annotators."),
    min_agreement: float = typer.Option(0.5, min=0.0, max=1.0, help="Share of annotators that must agree."),
    max_chars: int = typer.Option(8000, min=1, help="Drop records longer than this (input + output)."),
    near_threshold: float = typer.Option(0.9, min=0.0, max=1.0, help="MinHash Jaccard for near-duplicates (0: off)."),
    keep_near_duplicates: bool = typer.Option(False, help="Keep near-duplicates (group them with --group-by)."),
    prefix_chars: int = typer.Option(0, min=0, help="Drop texts sharing their first N characters (0: off)."),
    max_per_annotator: int = typer.Option(None, min=1, help="Cap records per annotator."),
    user_field: str = typer.Option(None, help="Task data field naming the submitting user: capped per user "
                                              "(--max-per-user) and split by user."),
    max_per_user: int = typer.Option(None, min=1, help="Records per user (default 200 with --user-field)."),
    pii: str = typer.Option("redact", help="redact | drop | keep personal information (searched in free text "
                                           "only, never in structured answer fields)."),
    include_reference: bool = typer.Option(False, help="Export reference-set tasks (annotators "
                                                       "--import-reference) as training data too."),
    min_per_class: int = typer.Option(10, min=0, help="Classes with fewer verified examples are rare."),
    rare_classes: str = typer.Option("drop", help="drop (from every split) | report rare classes."),
    augment: bool = typer.Option(False, "--augment", help="Add synthetic train examples to small classes."),
    augment_below: int = typer.Option(50, min=1, help="With --augment: classes with fewer train examples."),
    augment_method: str = typer.Option("synonyms", help="synonyms (offline word substitution) | llm "
                                                        "(paraphrases from OPENAI_BASE_URL)."),
    augment_synonyms: Path = typer.Option(None, exists=True, dir_okay=False,
                                          help="Own synonym table: one comma-separated group per line."),
    group_by: str = typer.Option(None, help="task | annotator | near_duplicate | data:<field> (never split); "
                                            "default data:<user-field> or task."),
    ratios: str = typer.Option("0.8,0.1,0.1", help="train,val,test shares."),
    seed: int = typer.Option(0, help="Split seed."),
    prompt_style: str = typer.Option("compact", help="The backend's prompt in the records: compact (for "
                                                    "fine-tuning; the promoted model is served with it) or full."),
) -> None:
    """Export human-verified tasks into train/val/test files, dataset_info.json and a manifest."""
    from prelabel.export.pipeline import ExportOptions, export_studio_project, export_tasks
    from prelabel.export.source import file_tasks
    from prelabel.export.verify import VerifyOptions

    try:
        train_share, val_share, test_share = (float(x) for x in ratios.split(","))
    except ValueError:  # not numbers, or not three of them
        raise typer.BadParameter("three comma-separated numbers, e.g. 0.8,0.1,0.1", param_hint="--ratios") from None
    verify = VerifyOptions(ground_truth_only=ground_truth_only, min_annotators=min_annotators,
                           min_agreement=min_agreement)
    options = ExportOptions(format=fmt, verify=verify, max_chars=max_chars, near_threshold=near_threshold or None,
                            keep_near_duplicates=keep_near_duplicates, prefix_chars=prefix_chars,
                            max_per_annotator=max_per_annotator, user_field=user_field, max_per_user=max_per_user,
                            pii=pii, min_per_class=min_per_class, rare_classes=rare_classes,
                            augment_below=augment_below if augment else 0, augment_method=augment_method,
                            augment_synonyms=augment_synonyms, group_by=group_by,
                            ratios=(train_share, val_share, test_share), seed=seed, prompt_style=prompt_style,
                            include_reference=include_reference)
    with Progress(SpinnerColumn(), TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("export", total=None)
        step = lambda n: bar.advance(task, n)  # noqa: E731
        if from_file is not None:
            if config is None:
                raise typer.BadParameter("--from-file needs --config", param_hint="--config")
            result = export_tasks(file_tasks(from_file), config.read_text(encoding="utf-8"), out, options,
                                  {"id": None, "title": from_file.name}, guideline, step)
        elif project is not None:
            result = export_studio_project(project, out, options, guideline=guideline, progress=step)
        else:
            raise typer.BadParameter("give --project or --from-file", param_hint="--project")
    import json

    manifest = json.loads((result / "manifest.json").read_text())
    splits = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
    console.print(f"{result}: {manifest['task_type']} -> {fmt}; {splits}; counts {manifest['counts']}")
    if manifest["dropped_classes"]:
        console.print(f"[yellow]dropped classes under {min_per_class} examples:[/yellow] {manifest['dropped_classes']}")
    elif manifest["rare_classes"]:
        console.print(f"[yellow]classes under {min_per_class} examples:[/yellow] {manifest['rare_classes']}")
    if manifest["counts"].get("synthetic"):
        console.print(f"synthetic train examples (marked): {manifest['splits']['train']['synthetic_distribution']}")
