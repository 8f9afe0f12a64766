"""``prelabel train lora|merge|promote|flywheel|status`` and ``prelabel eval``.

Heavy libraries (torch, transformers, peft, vllm) are imported by the commands that need them,
so ``prelabel --help`` and the backend stay light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from prelabel.errors import UserError

app = typer.Typer(help="LoRA fine-tuning, merge, promotion and the export->train->promote flywheel.",
                  no_args_is_help=True)
console = Console(stderr=True)


def _redis() -> Any:
    import redis

    from prelabel.redis_conn import redis_url
    from prelabel.settings import get_settings

    return redis.Redis.from_url(redis_url(get_settings()))


@app.command("lora")
def lora_command(
    config: Path = typer.Option(..., "--config", "-c", help="Run YAML (LLaMA-Factory style keys)."),
) -> None:
    """Train a LoRA adapter on an exported dataset; resumes an interrupted run in the same output_dir."""
    from prelabel.train.config import TrainConfig, load_yaml
    from prelabel.train.lora import prepare, train

    run = load_yaml(config, TrainConfig)
    prepared = prepare(run)
    console.print(f"dataset {run.dataset_dir}: {len(prepared.dataset.splits['train'])} train / "
                  f"{len(prepared.dataset.splits['val'])} val ({prepared.dataset.manifest.task_type}); "
                  f"precision {prepared.precision}; best checkpoint by {prepared.metric}"
                  + (f"; resuming from {prepared.resume}" if prepared.resume else ""))
    result = train(run, console=console)
    typer.echo(json.dumps({"adapter": str(result.adapter_dir), "best_checkpoint": result.best_checkpoint,
                           "metric": result.metric, "best_metric": result.best_metric,
                           "initial_eval": result.initial_eval, "final_eval": result.final_eval,
                           "global_step": result.global_step, "resumed_from": result.resumed_from}, indent=2))


@app.command("merge")
def merge_command(
    adapter: Path = typer.Option(..., "--adapter", "-a", help="Adapter directory written by `train lora`."),
    out: Path = typer.Option(..., "--out", "-o", help="New directory for the merged model."),
    dtype: str = typer.Option("auto", help="auto (the base's dtype), float32, bfloat16 or float16."),
    base: str = typer.Option(None, help="Base model path (default: the one recorded at training)."),
) -> None:
    """Merge the adapter into its base (merge_and_unload): safetensors + tokenizer + merge record."""
    from prelabel.train.merge import merge

    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise typer.BadParameter("auto, float32, bfloat16 or float16", param_hint="--dtype")
    result = merge(adapter, out, dtype=dtype, base=base)
    typer.echo(json.dumps({"merged": str(result.out_dir), "dtype": result.dtype,
                           "max_abs_logit_diff": result.max_abs_diff}, indent=2))


def eval_command(
    model: str = typer.Option(..., "--model", "-m",
                              help="Model directory / .gguf (transformers, vllm) or served model name (openai)."),
    data: Path = typer.Option(..., "--data", "-d", help="test.jsonl (manifest.json beside it) or a dataset dir."),
    engine: str = typer.Option("auto", "--engine", "-e",
                               help="vllm, openai, transformers, backend (through the backend's prompt and "
                                    "validation, on an exported dataset), or auto."),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (engine openai)."),
    adapter: Path = typer.Option(None, "--adapter", help="LoRA adapter on top of --model (transformers)."),
    out: Path = typer.Option(Path("eval-report"), "--out", "-o", help="Folder for report.json/.md and the PNG."),
    manifest: Path = typer.Option(None, "--manifest", help="manifest.json when not beside --data."),
    max_new_tokens: int = typer.Option(64, help="Answer length cap."),
    batch_size: int = typer.Option(16, help="Batch size (transformers)."),
    concurrency: int = typer.Option(8, help="Requests in flight (openai)."),
    max_samples: int = typer.Option(None, help="Evaluate only the first N test items."),
) -> None:
    """Evaluate a model on a test split: accuracy, F1, confusions, invalid outputs, latency -> JSON + Markdown."""
    from prelabel.settings import get_settings
    from prelabel.train.engines import make_engine
    from prelabel.train.evaluate import run_eval
    from prelabel.train.report import write_report

    settings = get_settings()
    chosen = make_engine(engine, model, base_url=base_url,
                         api_key=settings.llm_api_keys[0].get_secret_value() if settings.llm_api_keys else None,
                         adapter=str(adapter) if adapter else None, max_new_tokens=max_new_tokens,
                         batch_size=batch_size, concurrency=concurrency)
    try:
        run = run_eval(chosen, data, manifest_path=manifest, max_samples=max_samples)
    finally:
        chosen.close()
    report = write_report(run, out)
    table = Table(title=f"{report['model']} ({report['engine']['engine']})")
    table.add_column("metric")
    table.add_column("value")
    for key in ("primary_metric", "primary_value", "macro_f1", "weighted_f1", "field_match", "invalid_rate"):
        if key in report:
            value = report[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    perf = report["performance"]
    table.add_row("latency p50 / p95 (s)", f"{perf['latency_s']['p50']:.3f} / {perf['latency_s']['p95']:.3f}")
    table.add_row("completion tokens/s", f"{perf['completion_tokens_per_s'] or 0:.1f}")
    console.print(table)
    console.print(f"report: {out / 'report.json'}, {out / 'report.md'}")


@app.command("promote")
def promote_command(
    candidate: Path = typer.Option(..., help="Candidate's report.json (or its folder)."),
    current: Path = typer.Option(..., help="Current pre-annotator's report.json on the same test split."),
    model: str = typer.Option(..., help="Served name of the candidate (becomes the backend's model)."),
    base_url: str = typer.Option(..., help="OpenAI-compatible URL serving the candidate."),
    model_path: str = typer.Option(None, help="Merged model directory, for the record."),
    project: str = typer.Option(None, help="Label Studio project id (default: the global active model)."),
    margin: float = typer.Option(0.01, help="Required improvement of the primary metric."),
    max_class_drop: float = typer.Option(0.05, help="Largest allowed per-class (per-field) drop."),
    cascade_threshold: float = typer.Option(None, help="Cost cascade: previous model below this confidence."),
    prompt_style: str = typer.Option(None, help="full or compact (default: the prompt of the candidate's evaluation: "
                                                "the backend's, else its dataset's)."),
    fewshot_k: int = typer.Option(None, min=0, help="Few-shot turns (default: its evaluation's; 0 for a dataset)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Decide and print; log and change nothing."),
) -> None:
    """Compare two evaluation reports and promote the candidate if it is better; every decision is logged."""
    from prelabel.settings import get_settings
    from prelabel.train.config import PromotionPolicy
    from prelabel.train.promote import apply_decision, current_model, decide
    from prelabel.train.report import load_report

    if prompt_style not in (None, "full", "compact"):
        raise typer.BadParameter("full or compact", param_hint="--prompt-style")
    policy = PromotionPolicy(margin=margin, max_class_drop=max_class_drop, cascade_threshold=cascade_threshold)
    served = {k: v for k, v in (("prompt_style", prompt_style), ("fewshot_k", fewshot_k)) if v is not None}
    try:
        decision = decide(load_report(candidate), load_report(current), policy)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot compare the reports: {exc}") from None
    if not dry_run:
        from prelabel.studio.tenancy import configured

        client = _redis()
        ref = configured(get_settings(), project) if project else None
        apply_decision(decision, client=client, data_dir=get_settings().data_dir, model=model,
                       base_url=base_url, model_path=model_path, project=ref,
                       current=current_model(client, get_settings(), ref), extra=served)
    verdict = "[green]PROMOTED[/green]" if decision["promote"] else "[yellow]kept the current model[/yellow]"
    console.print(f"{verdict}: " + "; ".join(decision["reasons"]) + (" (dry run)" if dry_run else ""))
    typer.echo(json.dumps({k: decision[k] for k in ("id", "promote", "reasons", "delta", "class_deltas",
                                                     "cascade")}, indent=2))
    if not decision["promote"]:
        raise typer.Exit(1)


@app.command("flywheel")
def flywheel_command(
    project_arg: str = typer.Argument(None, metavar="[PROJECT]", help="Label Studio project id."),
    project: str = typer.Option(None, "--project", "-p", help="Label Studio project id."),
    config: Path = typer.Option(None, "--config", "-c",
                                help="Flywheel YAML (default PRELABEL_TRAIN_CONFIG; without one, on the local "
                                     "stack: the packaged SmolLM2, CPU settings, served by llama.cpp)."),
    dataset_dir: Path = typer.Option(None, help="Use this exported dataset instead of exporting now."),
    enqueue: bool = typer.Option(False, "--enqueue",
                                 help="Queue it for `prelabel worker` (same Redis) instead of running here."),
) -> None:
    """Export -> train -> merge -> (GGUF -> serve) -> eval through the backend -> promote, for one project.

    Next to a running `prelabel up` (same PRELABEL_DATA_DIR) it uses that stack's Label Studio and
    LLM, and `up` serves the promoted model to the project's new tasks. Writes a Markdown report
    (flywheel.md in the run folder); exit 1 when the current model is kept.
    """
    from prelabel.settings import get_settings
    from prelabel.stack.up import stack_settings
    from prelabel.train.pipeline import run_flywheel

    project = project or project_arg
    if not project:
        raise typer.BadParameter("give the project id (--project N)", param_hint="--project")
    kwargs = {"config_path": str(config.resolve()) if config else None,
              "dataset_dir": str(dataset_dir.resolve()) if dataset_dir else None}
    if enqueue:
        from prelabel.jobs.queue import train_queue
        from prelabel.jobs.training import enqueue_flywheel
        from prelabel.studio.tenancy import configured

        queue = train_queue(_redis())  # consumed by `prelabel worker` (default queues) or a trainer
        job = enqueue_flywheel(queue, configured(get_settings(), project), **kwargs)
        console.print(f"queued job {job.id} on '{queue.name}' (run by `prelabel worker`)")
        return

    result = run_flywheel(project, settings=stack_settings(get_settings()), console=console, **kwargs)
    if result.get("state") == "failed":
        raise UserError(result["error"])
    if result.get("report"):
        console.print(Path(result["report"]).read_text(encoding="utf-8"))
    typer.echo(json.dumps(result, indent=2))
    if result.get("state") == "finished" and not result["promoted"]:
        raise typer.Exit(1)


@app.command("gguf")
def gguf_command(
    merged: Path = typer.Option(..., "--merged", "-m", help="Merged model directory (`prelabel train merge`)."),
    out: Path = typer.Option(..., "--out", "-o", help="The GGUF file to write."),
    outtype: str = typer.Option("f16", help="f32, f16, bf16 or q8_0."),
) -> None:
    """Convert a merged model to GGUF with llama.cpp's converter, for the local llama.cpp server."""
    from prelabel.train.gguf import convert

    result = convert(merged, out, outtype=outtype)
    typer.echo(json.dumps({"gguf": str(result.path), "outtype": result.outtype, "size_bytes": result.size_bytes,
                           "seconds": round(result.seconds, 1)}, indent=2))


@app.command("status")
def status_command(project: str = typer.Argument(..., help="Label Studio project id.")) -> None:
    """Show the flywheel status of a project and its active model record."""
    from prelabel.settings import get_settings
    from prelabel.studio.tenancy import configured
    from prelabel.train.pipeline import read_status
    from prelabel.train.promote import active_model

    client = _redis()
    ref = configured(get_settings(), project)
    typer.echo(json.dumps({"status": read_status(client, ref), "active_model": active_model(client, ref)},
                          indent=2))
