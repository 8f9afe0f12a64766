"""The data flywheel as one job: export -> train -> merge -> eval -> promote.

On the local stack (no ``serve.base_url``) it also converts the merged model to GGUF, serves it
with llama.cpp, evaluates both models through the backend and hands the promoted model over to
``prelabel up`` (``prelabel.train.local_serving``), then writes ``flywheel.md``. With
``serve.adapter_dir`` (compose) it merges nothing: the adapter goes where the running vLLM at
``serve.base_url`` loads adapters from, and both models are evaluated there through the backend
(``prelabel.train.adapter_serving``). A worker without the train extra fails the run in one line.

``run_flywheel(project_id)`` is the RQ job function (Label Studio's START_TRAINING event, or
``note_verified_labels`` reaching ``PRELABEL_TRAIN_MIN_NEW_LABELS``). Its progress is visible in
the Redis hash ``prelabel:train:<tenant>:<project>`` (``state``, ``stage``, ``run_id``, ``started``,
``finished``, ``error``, ``<stage>_started`` / ``<stage>_finished``, ``decision``) and in the RQ
job's ``meta``. One run per project at a time (a Redis lock); a second trigger while one runs
is recorded as skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prelabel.contract import ActiveModel, ProjectRef, active_model_key, train_lock_key, train_status_key
from prelabel.errors import UserError
from prelabel.jobs.training import FLYWHEEL_TIMEOUT
from prelabel.settings import Settings, get_settings
from prelabel.stack.record import stack_running
from prelabel.train.models import MissingExtraError, require_train_extra

log = logging.getLogger(__name__)

STAGES = ("export", "train", "merge", "eval", "promote")


class FlywheelError(UserError, RuntimeError):
    """A stage that cannot run (no config, export not available, ...)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Status:
    """The run's status hash (and the RQ job's meta when running under RQ)."""

    def __init__(self, client: Any, project: ProjectRef, console: Any | None = None) -> None:
        self.client = client
        self.key = train_status_key(project)
        self.stage: str | None = None
        self.console = console  # the CLI's: one line per stage

    def set(self, **fields: Any) -> None:
        values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        self.client.hset(self.key, mapping=values)
        from rq import get_current_job

        job = get_current_job()  # None outside an RQ worker
        if job is not None:
            job.meta.update(fields)
            job.save_meta()

    @contextmanager
    def step(self, stage: str) -> Iterator[None]:
        self.stage = stage
        self.set(stage=stage, **{f"{stage}_started": _now()})
        log.info("flywheel %s: %s", self.key, stage)
        if self.console is not None:
            self.console.print(f"[bold cyan]\\[flywheel][/bold cyan] {stage} ...")
        yield
        self.set(**{f"{stage}_finished": _now()})


def read_status(client: Any, project: ProjectRef) -> dict[str, str]:
    raw = client.hgetall(train_status_key(project))
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def export_dataset(project: ProjectRef, out_dir: Path, options: dict[str, Any], settings: Settings,
                   client: Any = None) -> Path:
    """The project's human-verified tasks as a dataset folder (``prelabel export`` with ``options``),
    from the project's own Label Studio (its ``/setup`` record names a listed one; else the configured)."""
    from prelabel.export.pipeline import export_project
    from prelabel.export.source import SourceError
    from prelabel.jobs.projects import load_project
    from prelabel.studio.access import AccessRefused
    from prelabel.studio.tenancy import access_for

    record = load_project(client, project) if client is not None else None
    try:
        access = access_for(settings, project, record.hostname if record else None,
                            record.access_token if record else None)
    except AccessRefused as exc:
        raise SourceError(str(exc)) from None
    return Path(export_project(str(project.id), out_dir=out_dir, ls_url=access.url,
                               ls_token=access.token.get_secret_value(), **options))


def project_guideline(client: Any, project: ProjectRef) -> str | dict | None:
    """The guideline the backend prompts this project with (learned at ``/setup``), so the export
    renders the same prompt; None (the config's matching template) when the backend has not seen it."""
    from prelabel.jobs.projects import load_project

    return load_project(client, project).guideline


def run_flywheel(
    project_id: ProjectRef | str | int, *, config_path: str | None = None, dataset_dir: str | None = None,
    run_id: str | None = None, settings: Settings | None = None, console: Any | None = None,
) -> dict[str, Any]:
    """Export, train, merge, evaluate against the current pre-annotator, promote if better."""
    import redis

    from prelabel.redis_conn import redis_url
    from prelabel.studio.tenancy import as_ref

    settings = settings or get_settings()
    project = as_ref(settings, project_id)  # a bare id (CLI, a job queued before tenancy): the configured LS
    run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    client = redis.Redis.from_url(redis_url(settings))
    status = Status(client, project, console)
    lock = train_lock_key(project)
    if not client.set(lock, run_id, nx=True, ex=FLYWHEEL_TIMEOUT):
        status.set(last_skipped=_now())
        return {"state": "skipped", "reason": "a flywheel run for this project is already in progress"}
    client.delete(status.key)
    run_dir = Path(settings.data_dir) / "train" / str(project.id) / run_id
    status.set(state="running", run_id=run_id, run_dir=str(run_dir), started=_now())
    try:
        require_train_extra()
    except MissingExtraError as exc:  # one line in the log, the status and the job's meta; no traceback
        log.error("flywheel for project %s: %s", project, exc)
        status.set(state="failed", error=str(exc), finished=_now())
        client.delete(lock)
        return {"state": "failed", "run_id": run_id, "error": str(exc)}
    try:
        result = _run(project, run_dir, status, client, settings, config_path, dataset_dir, run_id, console)
    except Exception as exc:
        status.set(state="failed", error=f"{status.stage}: {type(exc).__name__}: {exc}", finished=_now())
        raise
    finally:
        if client.get(lock) in (run_id, run_id.encode()):
            client.delete(lock)
    status.set(state="finished", finished=_now(), decision="promoted" if result["promoted"] else "kept")
    return result


def _run(project: ProjectRef, run_dir: Path, status: Status, client: Any, settings: Settings,
         config_path: str | None, dataset_dir: str | None, run_id: str, console: Any | None) -> dict[str, Any]:
    from prelabel.train.config import ConfigError, FlywheelConfig, load_yaml, local_flywheel_config
    from prelabel.train.lora import prepare, train
    from prelabel.train.merge import merge
    from prelabel.train.promote import current_model

    with status.step("config"):
        path = config_path or settings.train_config
        if path:
            config = load_yaml(Path(path), FlywheelConfig)
        elif (packaged := _local_gguf()) is not None:
            config = local_flywheel_config(packaged)  # the local stack's own model, CPU-sized settings
        else:
            raise ConfigError("no flywheel config: set PRELABEL_TRAIN_CONFIG or pass config_path")
    with status.step("export"):
        options = {"guideline": project_guideline(client, project), **config.export}
        data = Path(dataset_dir) if dataset_dir else export_dataset(project, run_dir / "dataset", options, settings,
                                                                    client)
        status.set(dataset_dir=str(data))
    config = _with_schedule(config, data, explicit=bool(path), status=status, console=console)
    train_config = config.train_config(data, run_dir / "lora")
    prepare(train_config)  # dataset / model / options checked before any stage starts for real
    with status.step("train"):
        trained = train(train_config, console=console)
        status.set(best_metric=trained.best_metric, metric=trained.metric)
    model_name = config.serve.model_name or f"prelabel-{project.id}-{run_id}".lower()
    if config.serve.base_url is not None and config.serve.adapter_dir is not None:
        return _serve_adapter(project, run_id, run_dir, status, client, settings, config, data,
                              Path(trained.adapter_dir), model_name)
    with status.step("merge"):
        merged = merge(trained.adapter_dir, run_dir / "merged", dtype=config.merge_dtype)
    if config.serve.base_url is None:
        return _serve_locally(project, run_id, run_dir, status, client, settings, config, data, merged.out_dir,
                              model_name, trained)
    with status.step("eval"):
        options = {"max_new_tokens": config.eval.max_new_tokens, "batch_size": config.eval.batch_size,
                   "concurrency": config.eval.concurrency}
        from prelabel.train.engines import make_engine

        candidate = _evaluate(make_engine(config.eval.engine, str(merged.out_dir), **options), data,
                              run_dir / "eval-candidate", model_name, config.eval.max_samples)
        current = current_model(client, settings, project)
        current_report = _evaluate(_current_engine(current, settings, data, options), data, run_dir / "eval-current",
                                   current["model"], config.eval.max_samples)
    return _promote(project, run_id, run_dir, status, client, settings, config, merged.out_dir, model_name,
                    candidate, current_report, current, config.serve.base_url, {})


def _with_schedule(config: Any, data: Path, explicit: bool, status: Status, console: Any | None) -> Any:
    """The config with the schedule picked from the dataset and the device (``schedule.py``),
    announced (console, log, status) before training starts."""
    from prelabel.train.schedule import count_records, detect_device, pick_schedule, scheduled

    device, bf16 = detect_device()
    schedule = pick_schedule(max(1, count_records(data / "train.jsonl")), count_records(data / "val.jsonl"),
                             device, bf16)
    status.set(schedule=schedule.describe(), estimate_s=schedule.estimate_s)
    log.info("flywheel schedule: %s", schedule.describe())
    if console is not None:
        console.print(f"schedule: {schedule.describe()}")
    return config.model_copy(update={"train": scheduled(config.train, schedule, explicit)})


def _serve_locally(project: ProjectRef, run_id: str, run_dir: Path, status: Status, client: Any, settings: Settings,
                   config: Any, data: Path, merged_dir: Path, model_name: str, trained: Any) -> dict[str, Any]:
    """GGUF -> llama.cpp server -> both models through the backend -> promote -> hand over to ``up``."""
    from prelabel.train.gguf import convert
    from prelabel.train.local_serving import markdown_report, record_extra, serve_candidate, wait_for_takeover

    with status.step("gguf"):
        gguf = convert(merged_dir, run_dir / f"{model_name}.gguf", outtype=config.serve.gguf_outtype)
        status.set(gguf=str(gguf.path))
    with status.step("serve"):
        server = serve_candidate(gguf.path, model_name, run_dir / "serve")
    try:
        with status.step("eval"):
            candidate, current, current_report = _evaluate_served(
                project, run_dir, status, client, settings, config, data, model_name, server.base_url)
        result = _promote(project, run_id, run_dir, status, client, settings, config, merged_dir, model_name,
                          candidate, current_report, current, server.base_url, record_extra(gguf.path))
        if result["promoted"]:
            with status.step("handover"):
                served = wait_for_takeover(client, active_model_key(project), server.base_url,
                                           stack_running(settings))
                result["served_at"] = served
    finally:
        server.process.stop()
    timings = _timings(status)
    extra = {"dataset": str(data), "train": f"{trained.metric} {trained.initial_eval.get('eval_' + trained.metric)} "
                                           f"-> {trained.best_metric} (validation, best checkpoint)",
             "GGUF": f"{gguf.path} ({gguf.outtype}, {gguf.size_bytes / 1e6:.0f} MB)",
             "served": result.get("served_at") or ("by `prelabel up` when it starts" if result["promoted"] else "-")}
    report = markdown_report({**result, "project": str(project)}, timings, candidate, current_report, extra)
    (run_dir / "flywheel.md").write_text(report, encoding="utf-8")
    result["report"] = str(run_dir / "flywheel.md")
    return result


def _serve_adapter(project: ProjectRef, run_id: str, run_dir: Path, status: Status, client: Any, settings: Settings,
                   config: Any, data: Path, adapter_dir: Path, model_name: str) -> dict[str, Any]:
    """Adapter -> vLLM's resolver folder (served on ``serve.base_url`` under ``model_name``) -> both
    models through the backend there -> promote (``prelabel.train.adapter_serving``)."""
    from prelabel.train.adapter_serving import SERVED_BY, publish_adapter

    base_url = str(config.serve.base_url)
    with status.step("publish"):
        served = publish_adapter(adapter_dir, config.serve.adapter_dir, model_name)
        status.set(adapter=str(served))
    with status.step("eval"):
        candidate, current, current_report = _evaluate_served(
            project, run_dir, status, client, settings, config, data, model_name, base_url)
    return _promote(project, run_id, run_dir, status, client, settings, config, served, model_name, candidate,
                    current_report, current, base_url, {"adapter": str(served), "served_by": SERVED_BY})


def _evaluate_served(project: ProjectRef, run_dir: Path, status: Status, client: Any, settings: Settings, config: Any,
                     data: Path, model_name: str, base_url: str) -> tuple[dict[str, Any], ActiveModel,
                                                                           dict[str, Any]]:
    """The candidate served at ``base_url`` and the current pre-annotator, both through the backend
    on the same test split: the candidate with the prompt it was trained on and no few-shot turns,
    the current one exactly as the backend runs it. (candidate report, current record, its report)."""
    from prelabel.train.backend_engine import BackendEngine
    from prelabel.train.data import load_manifest
    from prelabel.train.local_serving import FINE_TUNED_FEWSHOT_K
    from prelabel.train.promote import current_model

    style = load_manifest(data).raw.get("prompt_style") or "full"  # the prompt it is trained on
    concurrency = config.eval.concurrency
    candidate = _evaluate(BackendEngine(model_name, base_url=base_url, settings=settings,
                                        fewshot_k=FINE_TUNED_FEWSHOT_K, prompt_style=style,
                                        concurrency=concurrency, console=status.console),
                          data, run_dir / "eval-candidate", model_name, config.eval.max_samples)
    current = current_model(client, settings, project)
    current_report = _evaluate(_current_engine(current, settings, data, {"concurrency": concurrency}, status.console),
                               data, run_dir / "eval-current", current["model"], config.eval.max_samples)
    return candidate, current, current_report


def _promote(project: ProjectRef, run_id: str, run_dir: Path, status: Status, client: Any, settings: Settings,
             config: Any, merged_dir: Path, model_name: str, candidate: dict[str, Any], current_report: dict[str, Any],
             current: ActiveModel, base_url: str, extra: dict[str, Any]) -> dict[str, Any]:
    from prelabel.train.promote import apply_decision, decide

    with status.step("promote"):
        decision = decide(candidate, current_report, config.promotion)
        record = apply_decision(decision, client=client, data_dir=settings.data_dir, model=model_name,
                                base_url=base_url, model_path=str(merged_dir), project=project, current=current,
                                extra=extra)
    return {"state": "finished", "run_id": run_id, "run_dir": str(run_dir), "promoted": decision["promote"],
            "reasons": decision["reasons"], "decision_id": decision["id"], "active_record": record,
            "candidate_report": candidate["_path"], "current_report": current_report["_path"]}


def _current_engine(current: ActiveModel, settings: Settings, data: Path, options: dict[str, Any],
                    console: Any | None = None) -> Any:
    """The current pre-annotator through the backend when the dataset allows it (an export), else
    its bare endpoint (hand-made datasets without task data)."""
    from prelabel.train.backend_engine import BackendEngine
    from prelabel.train.data import load_manifest
    from prelabel.train.engines import make_engine

    if load_manifest(data).raw.get("label_config"):
        return BackendEngine(current["model"], base_url=current["base_url"], settings=settings,
                             fewshot_k=current.get("fewshot_k"), prompt_style=current.get("prompt_style"),
                             concurrency=options["concurrency"], console=console)
    return make_engine("openai", current["model"], base_url=current["base_url"], api_key=_api_key(settings), **options)


def _timings(status: Status) -> dict[str, float]:
    """Seconds per stage, from the status hash's ``<stage>_started`` / ``_finished``."""
    values = {_text(k): _text(v) for k, v in status.client.hgetall(status.key).items()}
    stages = sorted((started, key[:-8]) for key, started in values.items()
                    if key.endswith("_started") and f"{key[:-8]}_finished" in values)
    return {stage: (datetime.fromisoformat(values[f"{stage}_finished"]) - datetime.fromisoformat(started))
            .total_seconds() for started, stage in stages}


def _local_gguf() -> Path | None:
    """The packaged SmolLM2 GGUF the local stack serves (the default base to fine-tune), if provisioned."""
    from prelabel.stack.llm_server import find_gguf

    try:
        path = find_gguf()
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


def _evaluate(engine: Any, data: Path, folder: Path, label: str, max_samples: int | None) -> dict[str, Any]:
    from prelabel.train.evaluate import run_eval
    from prelabel.train.report import load_report, write_report

    try:
        run = run_eval(engine, data, max_samples=max_samples)
    finally:
        engine.close()
    write_report(run, folder, model_label=label)
    return load_report(folder)


def _api_key(settings: Settings) -> str:
    return settings.llm_api_keys[0].get_secret_value() if settings.llm_api_keys else "not-needed"
