"""Promotion: a candidate replaces the current pre-annotator only when it is measurably better.

Both models are evaluated on the same held-out test split (checked by its sha256). The candidate
is promoted when its primary metric beats the current one by ``margin`` and no class (field)
loses more than ``max_class_drop``. Every decision, promoted or not, is appended with both reports
to ``<data_dir>/train/decisions.jsonl`` and to the Redis list ``prelabel:train:decisions``.

Promotion writes the *active model record* that the backend reads to choose its model:

* ``prelabel:active_model:<tenant>:<project>`` (or ``prelabel:active_model`` without a project): JSON with
  ``model`` (the served model name; predictions' ``model_version`` becomes ``<model>@<prompt>``),
  ``base_url``, ``prompt_style`` and ``fewshot_k`` (how the backend prompts it: as it was evaluated,
  see ``served_prompt``), ``model_path``, ``report``, ``promoted_at``, ``decision_id``, ``previous``
  and ``cascade`` (``threshold``, ``fallback_model``, ``fallback_base_url``, ``fallback_prompt_style``,
  ``fallback_fewshot_k``) or null. Every serving mode writes it here (``train promote``, the
  flywheel with a remote ``serve.base_url`` or on the local stack), so none can forget a field.

Cost cascade: with ``cascade_threshold`` the candidate labels every task and the previous model
takes those under the threshold. The decision then judges that combination, simulated from both
models' per-item answers and confidences on the test split.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prelabel.contract import (
    TRAIN_DECISIONS_KEY,
    ActiveModel,
    CascadeFallback,
    ProjectRef,
    active_model_json,
    active_model_key,
    active_model_keys,
    as_active_model,
    parse_active_model,
)
from prelabel.train.config import PromotionPolicy
from prelabel.train.evaluate import Item, read_predictions
from prelabel.train.report import task_metrics

DECISIONS_KEPT = 1000


def active_model(client: Any, project: ProjectRef | None = None) -> ActiveModel | None:
    """The model the backend should use for ``project``: its own record, else the global one."""
    for key in active_model_keys(project):
        raw = client.get(key)
        if raw:
            return parse_active_model(raw)
    return None


def served_prompt(report: dict[str, Any]) -> dict[str, Any]:
    """``prompt_style`` and ``fewshot_k`` a model must be served with: those of its evaluation.

    Through the backend (engine ``backend``) the report names both. Any other engine answered the
    dataset's rendered prompts: the export's ``prompt_style`` (the one a fine-tuned model was trained
    on) with no few-shot turns. A prompt the model was neither trained nor judged on is never used.
    """
    engine = report.get("engine") or {}
    if engine.get("prompt_style"):
        return {"prompt_style": engine["prompt_style"], "fewshot_k": int(engine.get("fewshot_k") or 0)}
    dataset = report.get("dataset") or {}
    style = dataset.get("prompt_style")
    if style is None and dataset.get("test_path"):  # a report written before reports named it
        from prelabel.train.data import load_manifest

        try:
            style = load_manifest(Path(dataset["test_path"]).parent).raw.get("prompt_style")
        except (OSError, ValueError):
            style = None
    return {"prompt_style": style or "full", "fewshot_k": 0}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _predictions(report: dict[str, Any]) -> list[Item]:
    folder = Path(report["_path"]).parent
    return read_predictions(folder / report.get("files", {}).get("predictions", "predictions.jsonl"))


def cascade_items(small: list[Item], big: list[Item], threshold: float) -> list[Item]:
    """Per test item: the small model's answer when its confidence >= threshold, else the big one's."""
    if [i.index for i in small] != [i.index for i in big]:
        raise ValueError("the two prediction files do not cover the same test items")
    return [s if s.confidence is not None and s.confidence >= threshold
            else replace(b, latency_s=s.latency_s + b.latency_s) for s, b in zip(small, big)]


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("model", "primary_metric", "primary_value", "per_class", "invalid_rate", "n", "_path")
    return {key: report.get(key) for key in keys}


def decide(candidate: dict[str, Any], current: dict[str, Any], policy: PromotionPolicy) -> dict[str, Any]:
    """The promotion decision (``promote`` true/false with reasons); writes nothing."""
    reasons: list[str] = []
    judged = candidate
    cascade = None
    same_split = candidate["dataset"]["test_sha256"] == current["dataset"]["test_sha256"]
    if not same_split:
        reasons.append("the reports were made on different test splits (sha256 differs)")
    if candidate["dataset"]["task_type"] != current["dataset"]["task_type"]:
        reasons.append("the reports are for different task types")
    if not candidate.get("n"):
        reasons.append("the candidate was evaluated on no items")
    if not reasons and policy.cascade_threshold is not None:
        combined = cascade_items(_predictions(candidate), _predictions(current), policy.cascade_threshold)
        escalated = sum(1 for c in combined if c.confidence is None or c.confidence < policy.cascade_threshold)
        judged = {**task_metrics(combined, candidate["dataset"]["task_type"], candidate["dataset"]["labels"]),
                  "model": f"cascade({candidate['model']} -> {current['model']})"}
        cascade = {"threshold": policy.cascade_threshold, "escalated": escalated,
                   "escalated_share": escalated / len(combined) if combined else 0.0,
                   "primary_value": judged["primary_value"]}
    delta = judged["primary_value"] - current["primary_value"]
    class_deltas = {name: judged.get("per_class", {}).get(name, 0.0) - score
                    for name, score in (current.get("per_class") or {}).items()}
    if not reasons:
        metric = candidate["primary_metric"]
        if delta < policy.margin:
            reasons.append(f"{metric} {judged['primary_value']:.4f} does not beat the current "
                           f"{current['primary_value']:.4f} by the margin {policy.margin:g} (delta {delta:+.4f})")
        for name, change in sorted(class_deltas.items()):
            if -change > policy.max_class_drop:
                reasons.append(f"class '{name}' drops {-change:.4f} ({candidate.get('per_class_metric')}), "
                               f"more than max_class_drop {policy.max_class_drop:g}")
    return {
        "id": uuid.uuid4().hex[:12],
        "time": _now(),
        "promote": not reasons,
        "reasons": reasons or [f"{candidate['primary_metric']} improves by {delta:+.4f}"],
        "primary_metric": candidate["primary_metric"],
        "delta": delta,
        "class_deltas": class_deltas,
        "policy": policy.model_dump(),
        "cascade": cascade,
        "candidate": _summary(candidate),
        "current": _summary(current),
        "reports": {"candidate": _strip(candidate), "current": _strip(current)},
    }


def _strip(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key != "classification_report_text"}


def apply_decision(
    decision: dict[str, Any], *, client: Any, data_dir: Path, model: str, base_url: str,
    model_path: str | None = None, project: ProjectRef | None = None,
    current: ActiveModel | None = None, extra: dict[str, Any] | None = None,
) -> ActiveModel | None:
    """Log ``decision``; when it promotes, write the active model record (plus ``extra``, e.g. the
    GGUF that ``prelabel up`` serves). Returns the record."""
    record = None
    if decision["promote"]:
        previous = active_model(client, project) if current is None else current
        cascade: CascadeFallback | None = None
        if decision.get("cascade") and previous:
            cascade = {"threshold": decision["cascade"]["threshold"], "fallback_model": previous.get("model"),
                       "fallback_base_url": previous.get("base_url"),
                       "fallback_prompt_style": previous.get("prompt_style"),
                       "fallback_fewshot_k": previous.get("fewshot_k")}
        record = as_active_model({
            "model": model,
            "base_url": base_url,
            **served_prompt(decision["reports"]["candidate"]),
            "model_path": model_path,
            "project": str(project) if project else None,
            "report": decision["candidate"]["_path"],
            "primary_metric": decision["primary_metric"],
            "primary_value": decision["candidate"]["primary_value"],
            "test_sha256": decision["reports"]["candidate"]["dataset"]["test_sha256"],
            "promoted_at": _now(),
            "decision_id": decision["id"],
            "cascade": cascade,
            "previous": {k: v for k, v in (previous or {}).items() if k != "previous"} or None,
            **(extra or {}),
        })
        client.set(active_model_key(project), active_model_json(record))
    entry = {**decision, "project": str(project) if project else None, "active_record": record}
    line = json.dumps(entry, ensure_ascii=False)
    log_path = Path(data_dir) / "train" / "decisions.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    client.lpush(TRAIN_DECISIONS_KEY, line)
    client.ltrim(TRAIN_DECISIONS_KEY, 0, DECISIONS_KEPT - 1)
    return record


def current_model(client: Any, settings: Any, project: ProjectRef | None = None) -> ActiveModel:
    """What pre-annotates today: the active record, else the backend's configured LLM."""
    record = active_model(client, project)
    if record:
        return record
    return {"model": settings.llm_model, "base_url": settings.llm_base_urls[0]}
