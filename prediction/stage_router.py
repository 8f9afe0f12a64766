"""The first stage of the cascade: the project's supervised model answers what it is sure of.

The worker fits the stage on the project's human labels and measures it on a held-out slice of
the most recent ones (``jobs.stage_eval``); it stores the stage with one threshold per control,
or none where the held-out slice showed the stage is no better than the LLM. Here, per request:

* a task whose every control is a ``Choices`` control with a threshold, and whose every answer
  is at or above it, is answered by the stage (milliseconds, no LLM call); provenance names the
  stage and its version, ``model_version`` stays the project's family so upserts and the
  "already pre-annotated" check see one pre-annotator;
* every other task goes to the models behind it (the LLM, or a promoted model's cascade);
* both shares are counted per project (``prelabel_stage_answers_total``, ``prelabel status``).

The stage is read from Redis per request (one HGET of its version; the pickled model only when
the version moved), so a refit reaches the backend and every worker without a restart.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from prelabel.contract import (
    STAGE_ANSWERS_PATTERN,
    Prediction,
    ProjectRef,
    TaskStatus,
    as_text,
    stage_answers_key,
    stage_curve_key,
    stage_scores_key,
    supervised_stage_key,
)
from prelabel.label_config.controls import ChoicesField
from prelabel.label_config.schema import TaskDataError
from prelabel.lru import LRU
from prelabel.prediction.predictor import ProjectContext
from prelabel.prediction.shared_counters import count

if TYPE_CHECKING:  # the stage's code (scikit-learn) loads with the first stage, not with the backend
    from prelabel.prediction.supervised import SupervisedStage

SUPERVISED, LLM = "supervised", "llm"
LABELS = ["project", "tenant", "stage"]  # tenant: the Label Studio instance (contract.ProjectRef)
_STAGES: LRU[str, SupervisedStage] = LRU(64)  # version -> unpickled stage, per process


async def load_stage(client: Any, project: ProjectRef | None) -> SupervisedStage | None:
    """The project's routed supervised stage, or None (no project, none fitted, none routed,
    Redis unreachable: the LLM answers everything, nothing is lost)."""
    if client is None or project is None:
        return None
    key = supervised_stage_key(project)
    try:
        version = await client.hget(key, "version")
        if not version:
            return None
        version = as_text(version)
        stage = _STAGES.get(version)
        if stage is None:
            from prelabel.prediction.supervised import SupervisedStage

            blob = await client.hget(key, "blob")
            loaded = SupervisedStage.loads(blob) if blob else None
            if loaded is None:
                return None
            _STAGES.put(version, loaded)
            stage = loaded
    except RedisError:
        return None
    return stage if stage.routed else None


def _answerable(stage: SupervisedStage, ctx: ProjectContext) -> list[ChoicesField] | None:
    """The controls the stage answers, when it can answer the whole task (else None)."""
    fields = ctx.schema.fields
    if not fields or any(type(f) is not ChoicesField for f in fields):
        return None  # spans, text, ratings or interactive constraints: the LLM's job
    if any(stage.thresholds.get(f.name) is None or f.name not in stage.models for f in fields):
        return None
    return [f for f in fields if isinstance(f, ChoicesField)]


def confident_answers(stage: SupervisedStage, tasks: list[Any], ctx: ProjectContext, family: str
                      ) -> dict[int, Prediction]:
    """Index -> the stage's prediction, for the tasks it is sure of (all controls at threshold)."""
    fields = _answerable(stage, ctx)
    if fields is None or not tasks:
        return {}
    started = time.perf_counter()
    texts: dict[int, dict[str, str]] = {}
    for i, task in enumerate(tasks):
        with contextlib.suppress(TaskDataError):
            found = ctx.schema.object_texts(task.get("data") if isinstance(task, dict) else None)
            if any(t.strip() for t in found.values()):
                texts[i] = found
    order = list(texts)
    per_control = {f.name: stage.models[f.name].answers([texts[i][f.object_name] for i in order])
                   for f in fields} if order else {}
    out: dict[int, Prediction] = {}
    for row, i in enumerate(order):
        answers = {f.name: per_control[f.name][row] for f in fields}
        if all(conf >= float(stage.thresholds[name] or 1.0) for name, (_, conf) in answers.items()):
            out[i] = _prediction(stage, ctx, family, fields, texts[i], answers, started)
    return out


def _prediction(stage: SupervisedStage, ctx: ProjectContext, family: str, fields: list[ChoicesField],
                texts: dict[str, str], answers: dict[str, tuple[list[str], float]], started: float
                ) -> Prediction:
    score = min(conf for _, conf in answers.values())
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "model": stage.version, "stage": SUPERVISED, "stage_version": stage.version,
        "prompt_version": ctx.prompt.version, "guideline": ctx.guideline_name,
        "guideline_hash": ctx.guideline.hash, "config_hash": ctx.schema.config_hash, "time": now,
        "cached": False, "latency_ms": round((time.perf_counter() - started) * 1000, 2), "llm_calls": 0,
        "score_source": SUPERVISED, "raw_score": round(score, 6), "calibration": "held_out_threshold",
        "thresholds": {f.name: stage.thresholds[f.name] for f in fields},
        "control_scores": {name: round(conf, 6) for name, (_, conf) in answers.items()},
        "trained_on_labels": stage.n_labels,
    }
    stamp = {"model": stage.version, "stage": SUPERVISED, "prompt_version": ctx.prompt.version,
             "config_hash": ctx.schema.config_hash, "time": now, "cached": False, "score_source": SUPERVISED,
             "raw_score": round(score, 6), "calibration": "held_out_threshold", "status": TaskStatus.OK}
    regions: list[Any] = []
    for f in fields:
        chosen, conf = answers[f.name]
        value: Any = chosen if f.multiple else chosen[0]
        for region in f.to_regions(value, texts[f.object_name]):
            regions.append({**region, "prelabel": {**stamp, "raw_score": round(conf, 6)}})
    return {"result": regions, "score": round(score, 6), "model_version": family,
            "meta": {"status": TaskStatus.OK, "errors": {}, "skipped_controls": [], "provenance": record}}


async def supervised_first(stage: SupervisedStage | None, tasks: list[Any], ctx: ProjectContext, family: str,
                           ask: Callable[[list[Any]], Awaitable[list[Prediction]]], client: Any,
                           project: ProjectRef | None) -> list[Prediction]:
    """The stage's confident answers, and ``ask``'s (the models behind it) for the rest, in order."""
    answered = confident_answers(stage, tasks, ctx, family) if stage is not None else {}
    rest = [i for i in range(len(tasks)) if i not in answered]
    asked = await ask([tasks[i] for i in rest]) if rest else []
    results = dict(answered) | dict(zip(rest, asked))
    if project is not None:
        await count(client, stage_answers_key(project), SUPERVISED, len(answered))
        await count(client, stage_answers_key(project), LLM, len(rest))
    return [results[i] for i in range(len(tasks))]


# --- what /metrics shows ---------------------------------------------------------------------
class StageCollector:
    """Per project: tasks each stage answered, and each stage's accuracy on the held-out slice.
    Read from Redis at scrape time (workers answer too); ``conn`` is set by the backend."""

    conn: Any = None

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("prelabel_stage_answers", "Tasks answered per project and stage.",
                                  labels=LABELS)
        yield GaugeMetricFamily("prelabel_stage_accuracy", "Stage accuracy on the project's held-out labels.",
                                labels=LABELS)

    def collect(self) -> Iterator[Metric]:
        if self.conn is None:
            return
        try:
            shares = project_shares(self.conn)
            scores = {p: project_scores(self.conn, p) for p in shares}
        except RedisError:
            return
        answers = CounterMetricFamily("prelabel_stage_answers", "Tasks answered per project and stage.",
                                      labels=LABELS)
        accuracy = GaugeMetricFamily("prelabel_stage_accuracy", "Stage accuracy on the project's held-out labels.",
                                     labels=LABELS)
        for project, counts in sorted(shares.items()):
            for stage, n in sorted(counts.items()):
                answers.add_metric([str(project.id), project.tenant, stage], n)
            for stage, measured in sorted((scores.get(project) or {}).get("stages", {}).items()):
                if measured.get("accuracy") is not None:
                    accuracy.add_metric([str(project.id), project.tenant, stage], measured["accuracy"])
        yield answers
        yield accuracy


def project_shares(conn: Any) -> dict[ProjectRef, dict[str, int]]:
    """Project -> stage -> tasks answered (sync Redis)."""
    out = {}
    for key in conn.scan_iter(match=STAGE_ANSWERS_PATTERN):
        project = ProjectRef.parse(as_text(key).removeprefix(STAGE_ANSWERS_PATTERN[:-1]))
        if project is not None:  # a key of the format before tenancy (``prelabel migrate`` moves it)
            out[project] = {as_text(k): int(v) for k, v in conn.hgetall(key).items()}
    return out


def project_scores(conn: Any, project: ProjectRef) -> dict[str, Any] | None:
    raw = conn.get(stage_scores_key(project))
    return json.loads(raw) if raw else None


def learning_curve(conn: Any, project: ProjectRef) -> dict[str, list[tuple[int, float]]]:
    """Stage -> [(labels, held-out accuracy)], from every refresh of the worker so far."""
    out: dict[str, list[tuple[int, float]]] = {}
    for raw in conn.lrange(stage_curve_key(project), 0, -1):
        point = json.loads(raw)
        out.setdefault(point["stage"], []).append((int(point["labels"]), float(point["accuracy"])))
    return out


def stage_report(conn: Any) -> dict[str, dict[str, Any]]:
    """Per project: each stage's share of the answered tasks and its held-out accuracy, the routing
    (``prelabel status``)."""
    report: dict[str, dict[str, Any]] = {}
    for project, counts in sorted(project_shares(conn).items()):
        total = sum(counts.values()) or 1
        scores = project_scores(conn, project) or {}
        measured = scores.get("stages", {})
        stages: dict[str, dict[str, Any]] = {name: {"answered": n, "share": round(n / total, 4), "accuracy": {}}
                                             for name, n in counts.items()}
        for name, m in measured.items():
            key = SUPERVISED if name == SUPERVISED else LLM if name.startswith(LLM) else name
            entry = stages.setdefault(key, {"answered": 0, "share": 0.0, "accuracy": {}})
            entry["accuracy"][name] = m.get("accuracy")
        report[str(project)] = {"labels": scores.get("labels"), "routing": scores.get("routing"), "stages": stages}
    return report


def format_stage_report(report: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for project, entry in report.items():
        routing = entry.get("routing") or "not measured"
        lines.append(f"project {project}: {entry.get('labels') or 0} human labels; {routing}")
        for name, s in sorted(entry["stages"].items()):
            measured = ", ".join(f"{k} {v:.0%}" for k, v in (s.get("accuracy") or {}).items() if v is not None)
            lines.append(f"  {name}: answered {s['answered']} ({s['share']:.0%})"
                         + (f"; held-out accuracy {measured}" if measured else ""))
    return lines


STAGE_COLLECTOR = StageCollector()
REGISTRY.register(STAGE_COLLECTOR)
