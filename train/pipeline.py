"""The data flywheel as one job: export -> train -> merge -> eval -> promote.

``run_flywheel(project_id)`` is the RQ job function (Label Studio's START_TRAINING event, or
``note_verified_labels`` reaching ``PRELABEL_TRAIN_MIN_NEW_LABELS``). Its progress is visible in
the Redis hash ``prelabel:train:<project>`` (``state``, ``stage``, ``run_id``, ``started``,
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

from prelabel.contract import train_label_count_key, train_lock_key, train_status_key
from prelabel.errors import UserError
from prelabel.settings import Settings, get_settings

log = logging.getLogger(__name__)

JOB_TIMEOUT = 24 * 3600
STAGES = ("export", "train", "merge", "eval", "promote")


class FlywheelError(UserError, RuntimeError):
    """A stage that cannot run (no config, export not available, ...)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Status:
    """The run's status hash (and the RQ job's meta when running under RQ)."""

    def __init__(self, client: Any, project_id: str) -> None:
        self.client = client
        self.key = train_status_key(project_id)
        self.stage: str | None = None

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
        yield
        self.set(**{f"{stage}_finished": _now()})


def read_status(client: Any, project_id: str) -> dict[str, str]:
    raw = client.hgetall(train_status_key(project_id))
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def export_dataset(project_id: str, out_dir: Path, options: dict[str, Any]) -> Path:
    """The project's human-verified tasks as a dataset folder (``prelabel export`` with ``options``)."""
    from prelabel.export.pipeline import export_project

    return Path(export_project(project_id, out_dir=out_dir, **options))


def run_flywheel(
    project_id: str | int, *, config_path: str | None = None, dataset_dir: str | None = None,
    run_id: str | None = None, settings: Settings | None = None,
) -> dict[str, Any]:
    """Export, train, merge, evaluate against the current pre-annotator, promote if better."""
    import redis

    from prelabel.redis_conn import redis_url

    settings = settings or get_settings()
    project = str(project_id)
    run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    client = redis.Redis.from_url(redis_url(settings))
    status = Status(client, project)
    lock = train_lock_key(project)
    if not client.set(lock, run_id, nx=True, ex=JOB_TIMEOUT):
        status.set(last_skipped=_now())
        return {"state": "skipped", "reason": "a flywheel run for this project is already in progress"}
    client.delete(status.key)
    run_dir = Path(settings.data_dir) / "train" / project / run_id
    status.set(state="running", run_id=run_id, run_dir=str(run_dir), started=_now())
    try:
        result = _run(project, run_dir, status, client, settings, config_path, dataset_dir, run_id)
    except Exception as exc:
        status.set(state="failed", error=f"{status.stage}: {type(exc).__name__}: {exc}", finished=_now())
        raise
    finally:
        if client.get(lock) in (run_id, run_id.encode()):
            client.delete(lock)
    status.set(state="finished", finished=_now(), decision="promoted" if result["promoted"] else "kept")
    return result


def _run(project: str, run_dir: Path, status: Status, client: Any, settings: Settings,
         config_path: str | None, dataset_dir: str | None, run_id: str) -> dict[str, Any]:
    from prelabel.train.config import ConfigError, FlywheelConfig, load_yaml
    from prelabel.train.engines import make_engine
    from prelabel.train.lora import prepare, train
    from prelabel.train.merge import merge
    from prelabel.train.promote import apply_decision, current_model, decide

    with status.step("config"):
        path = config_path or settings.train_config
        if not path:
            raise ConfigError("no flywheel config: set PRELABEL_TRAIN_CONFIG or pass config_path")
        config = load_yaml(Path(path), FlywheelConfig)
    with status.step("export"):
        data = Path(dataset_dir) if dataset_dir else export_dataset(project, run_dir / "dataset", config.export)
        status.set(dataset_dir=str(data))
    train_config = config.train_config(data, run_dir / "lora")
    prepare(train_config)  # dataset / model / options checked before any stage starts for real
    with status.step("train"):
        trained = train(train_config)
        status.set(best_metric=trained.best_metric, metric=trained.metric)
    with status.step("merge"):
        merged = merge(trained.adapter_dir, run_dir / "merged", dtype=config.merge_dtype)
    with status.step("eval"):
        options = {"max_new_tokens": config.eval.max_new_tokens, "batch_size": config.eval.batch_size,
                   "concurrency": config.eval.concurrency}
        model_name = config.serve.model_name or f"prelabel-{project}-{run_id}"
        candidate = _evaluate(make_engine(config.eval.engine, str(merged.out_dir), **options), data,
                              run_dir / "eval-candidate", model_name, config.eval.max_samples)
        current = current_model(client, settings, project)
        baseline = make_engine("openai", current["model"], base_url=current["base_url"],
                               api_key=_api_key(settings), **options)
        current_report = _evaluate(baseline, data, run_dir / "eval-current", current["model"],
                                   config.eval.max_samples)
    with status.step("promote"):
        decision = decide(candidate, current_report, config.promotion)
        record = apply_decision(decision, client=client, data_dir=settings.data_dir, model=model_name,
                                base_url=config.serve.base_url, model_path=str(merged.out_dir),
                                project=project, current=current)
    return {"state": "finished", "run_id": run_id, "run_dir": str(run_dir), "promoted": decision["promote"],
            "reasons": decision["reasons"], "decision_id": decision["id"], "active_record": record,
            "candidate_report": candidate["_path"], "current_report": current_report["_path"]}


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


def enqueue_flywheel(queue: Any, project_id: str | int, **kwargs: Any) -> Any:
    """Queue ``run_flywheel`` on an RQ queue (the START_TRAINING handler); status becomes 'queued'."""
    job = queue.enqueue(run_flywheel, args=(str(project_id),), kwargs=kwargs, job_timeout=JOB_TIMEOUT,
                        description=f"flywheel for project {project_id}")
    Status(queue.connection, str(project_id)).set(state="queued", job_id=job.id, queued=_now())
    return job


def note_verified_labels(client: Any, project_id: str | int, count: int = 1,
                         threshold: int | None = None) -> bool:
    """Count new human-verified labels; True (and the count restarts) once ``threshold`` is reached."""
    threshold = threshold or get_settings().train_min_new_labels
    key = train_label_count_key(project_id)
    total = client.incrby(key, count)
    if total < threshold:
        return False
    client.decrby(key, total)
    return True
