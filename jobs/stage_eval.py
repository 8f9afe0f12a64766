"""Which stage serves a project, decided on its own labels (run by the worker on every refresh).

Per ``Choices`` control, the project's human labels are split by recency: the most recent ones
(``heldout_size``) are the held-out slice, the rest train the supervised stage. On the slice:

* the supervised stage (fitted on the older labels only) is scored, and ``calibrate_threshold``
  picks the lowest confidence above which it is at least as accurate as the best other stage
  (``settings.stage_min_accuracy`` while no other stage is measured);
* the LLM stages (zero/few-shot, a promoted LoRA model: every model that wrote pre-annotations)
  are scored from the pre-annotations already stored on the labeled tasks, no new LLM call:
  their answers were written before the human's label, so every labeled task is held out for them.

The served stage is then refitted on all labels with those thresholds and published (Redis) for
the backend and the workers; a stage no threshold supports is stored unrouted, so the LLM keeps
answering everything. Each run appends the measured accuracies to the project's learning curve.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from prelabel.contract import (
    ModelVersion,
    ProjectRef,
    as_text,
    is_own_preannotation,
    stage_curve_key,
    stage_scores_key,
    stamp_of,
    supervised_stage_key,
    train_status_key,
)
from prelabel.label_config.controls import ChoicesField
from prelabel.label_config.schema import OutputSchema, TaskDataError, build_schema
from prelabel.prediction.supervised import MIN_SUPPORT, ControlModel, SupervisedStage, calibrate_threshold
from prelabel.studio.client import plain

SUPERVISED = "supervised"
LLM_WINDOW = 200  # most recent labeled tasks an LLM stage is scored on
CURVE_POINTS = 500  # learning-curve points kept per project


def heldout_size(n: int) -> int:
    """A fifth of the labels, at least MIN_SUPPORT and at most 100: enough to measure, most to train."""
    return int(min(100, max(MIN_SUPPORT, round(0.2 * n))))


@dataclass
class Labeled:
    """One labeled task for one control: its text, the human's choices, the stored pre-annotation."""

    order: int  # the human annotation's id: larger is more recent
    text: str
    human: list[str]
    stage: str | None = None  # who wrote the stored pre-annotation ("llm:<model>", "supervised")
    predicted: list[str] | None = None


@dataclass
class StageRefresh:
    """What one refresh measured and published."""

    scores: dict[str, Any]
    stage: SupervisedStage | None = None
    ranking_control: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ranking_model(self) -> Callable[[Sequence[str]], np.ndarray] | None:
        """The stage's single-choice model of the control the ranking ranks by (one model, not two)."""
        if self.stage is None or self.ranking_control not in self.stage.models:
            return None
        model = self.stage.models[self.ranking_control]
        return None if model.multiple else model.proba


def _latest(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(items, key=lambda item: item.get("id") or 0) if items else None


def _choices(result: list[dict[str, Any]] | None, control: str) -> list[str] | None:
    for region in result or []:
        if region.get("from_name") == control:
            chosen = (region.get("value") or {}).get("choices") or []
            if chosen:
                return [str(c) for c in chosen]
    return None


def labeled_tasks(tasks: list[dict[str, Any]], schema: OutputSchema, control: ChoicesField) -> list[Labeled]:
    """The control's labeled tasks, oldest label first."""
    out = []
    for task in tasks:
        human = _latest([a for a in task.get("annotations") or [] if not a.get("was_cancelled")])
        chosen = _choices(human.get("result"), control.name) if human else None
        if human is None or not chosen:
            continue
        try:
            text = schema.object_texts(task.get("data") or {})[control.object_name]
        except TaskDataError:
            continue
        item = Labeled(int(human.get("id") or 0), text, chosen)
        pre = _latest([p for p in task.get("predictions") or [] if is_own_preannotation(p.get("model_version"))])
        if pre is not None:
            regions = [r for r in pre.get("result") or [] if r.get("from_name") == control.name]
            stamp = stamp_of(regions[0]) if regions else {}
            if stamp.get("stage") == SUPERVISED:
                item.stage = SUPERVISED
            else:
                model = stamp.get("model") or ModelVersion.parse(pre.get("model_version")).model
                item.stage = f"llm:{model}"
            item.predicted = _choices(pre.get("result"), control.name)
        out.append(item)
    return sorted(out, key=lambda item: item.order)


def score_stored(items: list[Labeled]) -> dict[str, dict[str, Any]]:
    """Accuracy of each LLM stage's stored pre-annotations on its most recent labeled tasks
    (a pre-annotation without an answer for the control counts as wrong: it served nothing)."""
    by_stage: dict[str, list[bool]] = {}
    for item in reversed(items):
        if item.stage and item.stage != SUPERVISED and len(by_stage.get(item.stage, [])) < LLM_WINDOW:
            by_stage.setdefault(item.stage, []).append(sorted(item.predicted or []) == sorted(item.human))
    return {stage: {"accuracy": round(float(np.mean(hits)), 4), "n": len(hits)} for stage, hits in by_stage.items()}


def target_accuracy(others: dict[str, dict[str, Any]], floor: float) -> float:
    """What the supervised stage must reach to answer: the best measured other stage's accuracy
    (the stage answers a task when it beats the stage that would answer it otherwise), or
    ``floor`` while no other stage has been measured on enough labels."""
    supported = [s["accuracy"] for s in others.values() if s["n"] >= MIN_SUPPORT]
    return max(supported) if supported else floor


def evaluate_control(control: ChoicesField, items: list[Labeled], target: float
                     ) -> tuple[ControlModel | None, dict[str, Any]]:
    """(the control's model fitted on all labels or None, what the held-out slice measured)."""
    report: dict[str, Any] = {"labels": len(items), "stages": score_stored(items), "target": target}
    h = heldout_size(len(items))
    train, heldout = items[:-h], items[-h:]
    labels = list(control.label_values)
    model = ControlModel.fit(control.name, labels, control.multiple, [i.text for i in train], [i.human for i in train])
    if model is None or len(heldout) < MIN_SUPPORT:
        report["threshold"] = None
        return None, report
    answers = model.answers([i.text for i in heldout])
    correct = [sorted(chosen) == sorted(i.human) for (chosen, _), i in zip(answers, heldout)]
    confidence = [conf for _, conf in answers]
    threshold = calibrate_threshold(confidence, correct, target)
    above = [ok for ok, conf in zip(correct, confidence) if threshold is not None and conf >= threshold]
    report["stages"][SUPERVISED] = {
        "accuracy": round(float(np.mean(correct)), 4), "n": len(heldout), "trained_on": len(train),
        "threshold": threshold, "coverage": round(len(above) / len(heldout), 4),
        "accuracy_above_threshold": round(float(np.mean(above)), 4) if above else None,
    }
    report["threshold"] = threshold
    final = ControlModel.fit(control.name, labels, control.multiple, [i.text for i in items], [i.human for i in items])
    return final, report


def refresh_stages(client: Any, project: ProjectRef, conn: redis.Redis, floor: float) -> StageRefresh:
    """Measure every stage on the project's labels and publish the supervised stage (see module doc)."""
    config = plain(client.projects.get(id=project.id))["label_config"]
    tasks = [plain(t) for t in client.tasks.list(project=project.id, fields="all")]
    return refresh_from_tasks(config, tasks, project, conn, floor)


def refresh_from_tasks(config: str, tasks: list[dict[str, Any]], project: ProjectRef, conn: redis.Redis,
                       floor: float) -> StageRefresh:
    schema = build_schema(config)
    controls = [f for f in schema.fields if isinstance(f, ChoicesField)]
    models: dict[str, ControlModel] = {}
    thresholds: dict[str, float | None] = {}
    reports: dict[str, Any] = {}
    n_labels = 0
    for control in controls:
        items = labeled_tasks(tasks, schema, control)
        n_labels = max(n_labels, len(items))
        model, report = evaluate_control(control, items, target_accuracy(score_stored(items), floor))
        reports[control.name] = report
        if model is not None:
            models[control.name] = model
            thresholds[control.name] = report["threshold"]
    stage = SupervisedStage(models, thresholds, n_labels, reports) if models else None
    routed = stage is not None and stage.routed and all(thresholds.get(f.name) is not None for f in schema.fields)
    scores = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "labels": n_labels,
              "stages": _summary(reports), "controls": reports,
              "routing": (f"{SUPERVISED} above its held-out threshold, then the LLM" if routed
                          else "LLM only (no supervised threshold reaches the target on held-out labels)"),
              "version": stage.version if stage is not None else None}
    _publish(conn, project, stage, scores)
    first = controls[0].name if controls else None
    return StageRefresh(scores, stage, first, {"labels": n_labels, "routing": scores["routing"]})


def _summary(reports: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per stage over all controls: the worst control's accuracy (a task needs every control right)."""
    out: dict[str, dict[str, Any]] = {}
    for report in reports.values():
        for stage, measured in report["stages"].items():
            best = out.get(stage)
            if best is None or measured["accuracy"] < best["accuracy"]:
                out[stage] = dict(measured)
    return out


def _publish(conn: redis.Redis, project: ProjectRef, stage: SupervisedStage | None, scores: dict[str, Any]) -> None:
    key = supervised_stage_key(project)
    if stage is None:
        conn.delete(key)
    else:  # blob first, version last: a reader never pairs a new version with an old blob
        conn.hset(key, "blob", stage.dumps())
        conn.hset(key, "version", stage.version)
    conn.set(stage_scores_key(project), json.dumps(scores))
    points = [json.dumps({"labels": scores["labels"], "stage": name, "accuracy": measured["accuracy"],
                          "time": scores["time"]}) for name, measured in scores["stages"].items()]
    if points:
        conn.rpush(stage_curve_key(project), *points)
        conn.ltrim(stage_curve_key(project), -CURVE_POINTS, -1)


FLYWHEEL_CEILING = 0.98  # a best stage this accurate on held-out labels leaves a fine-tune little to gain


def flywheel_plausible(conn: redis.Redis, project: ProjectRef, growth: float) -> tuple[bool, str]:
    """Whether a fine-tuning run can plausibly beat the project's best stage now: its labels grew
    by ``growth`` since the last run, and the best stage is not already at the ceiling."""
    raw = conn.get(stage_scores_key(project))
    if not raw:
        return True, "no stage measured yet"
    scores = json.loads(raw)
    labels = int(scores.get("labels") or 0)
    best = max((s["accuracy"] for s in scores.get("stages", {}).values() if s.get("n", 0) >= MIN_SUPPORT),
               default=0.0)
    last = int(as_text(conn.hget(train_status_key(project), "labels") or b"0"))
    if best >= FLYWHEEL_CEILING:
        return False, f"best stage already {best:.0%} on held-out labels"
    if last and labels < growth * last:
        return False, f"{labels} labels, fewer than {growth:g} x {last} at the last run"
    conn.hset(train_status_key(project), "labels", labels)
    return True, f"{labels} labels (last run {last or 'none'}), best stage {best:.0%}"
