"""Judge a guideline x model version on a project's own ground truth, before annotators see it.

The tasks are the project's human-verified ones, chosen by the export's rules
(``prelabel.export.verify``); each version labels them through the backend's own ``Predictor``
(same schema, prompt, few-shot pool with the project's human labels, validation and confidence),
so the numbers mean what pre-annotation will do. The cache is off: every answer is paid for and
timed. Per version: exact match, per-control accuracy / macro-F1 / per-class F1 and confusion
matrices (scikit-learn, through ``prelabel.train.report``), invalid-answer, ``needs_human`` and
error rates, expected calibration error of the score, tokens and seconds per task; across the
two versions, the tasks whose answer changed with both answers and the human one.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prelabel.contract import Prediction
from prelabel.export.verify import VerifyOptions, verified_label
from prelabel.label_config.answers import answer_from_regions
from prelabel.label_config.controls import (
    REASONS,
    ChoicesField,
    ControlField,
    LabelsField,
    RatingField,
    TextAreaField,
)
from prelabel.label_config.schema import OutputSchema, TaskDataError
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.predictor import Predictor, ProjectContext
from prelabel.prediction.prompt import Example
from prelabel.prediction.service import PreannotationService
from prelabel.quality.calibration_fit import ece
from prelabel.settings import Settings
from prelabel.train.evaluate import Item
from prelabel.train.report import plot_confusion, task_metrics

ECE_BINS = 10
CHANGED_SHOWN = 50


class EvalError(RuntimeError):
    """The evaluation cannot run (no verified tasks, a config nothing can be predicted for)."""


@dataclass(frozen=True)
class Version:
    """One candidate: a guideline (name, file path or mapping) and a model on its endpoints."""

    label: str
    guideline: str | dict | None
    model: str
    base_urls: list[str]


@dataclass
class Case:
    """A human-verified task: its data, texts and the human value of every control."""

    task_id: int
    data: dict[str, Any]
    texts: dict[str, str]
    human: dict[str, Any]
    result: list[dict[str, Any]]


@dataclass
class VersionRun:
    version: Version
    ctx: ProjectContext
    predictions: list[Prediction]
    wall_s: float

    @property
    def model_version(self) -> str:
        return f"{self.version.model}@{self.ctx.prompt.version}"


@dataclass
class Selection:
    cases: list[Case]
    skipped: Counter[str] = field(default_factory=Counter)
    total: int = 0


def verified_cases(tasks: Iterable[dict[str, Any]], schema: OutputSchema, options: VerifyOptions) -> Selection:
    """The tasks a human verified (export rules), with their human answers; the rest counted by reason."""
    selection = Selection([])
    for task in tasks:
        selection.total += 1
        verified, why = verified_label(task, options)
        if verified is None:
            selection.skipped[why] += 1
            continue
        try:
            texts = schema.object_texts(task.get("data") or {})
        except TaskDataError:
            selection.skipped["bad_task_data"] += 1
            continue
        human = {control.name: control.from_regions(verified.result) for control in schema.fields}
        selection.cases.append(Case(int(task["id"]), task.get("data") or {}, texts, human, verified.result))
    return selection


def sample(cases: list[Case], k: int | None, seed: int = 0) -> list[Case]:
    if not k or k >= len(cases):
        return cases
    return sorted(random.Random(seed).sample(cases, k), key=lambda case: case.task_id)


def human_examples(cases: list[Case], schema: OutputSchema) -> list[Example]:
    """The project's human labels as few-shot examples, as the backend loads them at /setup (a
    task's own label is never shown to it: the pool skips examples with the task's text)."""
    examples = []
    for case in cases:
        answer = answer_from_regions(schema, case.result)
        if answer is not None:
            examples.append(Example(case.texts, answer, source=f"task:{case.task_id}"))
    return examples


async def run_version(
    settings: Settings, version: Version, label_config: str, cases: list[Case],
    progress: Callable[[int], None] | None = None,
) -> VersionRun:
    """Every case through the backend's predictor with this version (no cache), in task order."""
    vsettings = settings.model_copy(update={"llm_model": version.model, "llm_base_urls": version.base_urls})
    llm = LLMClient(vsettings)
    try:
        async with PreannotationService.open(vsettings, predictor=Predictor(vsettings, llm, cache=None)) as service:
            batch = await service.prepare(None, label_config, version.guideline, allow_path=True, routed=False)
            ctx = batch.context
            batch.pool = ctx.pool_with(human_examples(cases, ctx.schema)) if settings.fewshot_k > 0 else None
            started = time.perf_counter()

            async def one(case: Case) -> Prediction:
                [prediction] = await service.predict(batch, [{"id": case.task_id, "data": case.data}])
                if progress:
                    progress(1)
                return prediction

            predictions = list(await asyncio.gather(*(one(case) for case in cases)))
            return VersionRun(version, ctx, predictions, time.perf_counter() - started)
    finally:
        await llm.aclose()


# --- scoring -----------------------------------------------------------------------------------
def predicted_values(schema: OutputSchema, prediction: Prediction) -> dict[str, Any]:
    """Each control's value in a prediction (None where it gave none: invalid or left for a human)."""
    result: list[Any] = prediction.get("result") or []
    return {control.name: control.from_regions(result) for control in schema.fields}


def same(control: ControlField, a: Any, b: Any) -> bool:
    """Equal answers for a control: texts up to whitespace, spans and multiple choices as sets."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(control, TextAreaField):
        return " ".join(str(a).split()) == " ".join(str(b).split())
    if isinstance(control, LabelsField) or (isinstance(control, ChoicesField) and control.multiple):
        return _as_set(a) == _as_set(b)
    return a == b


def _as_set(value: Any) -> set[str]:
    return {json.dumps(v, sort_keys=True) for v in value or []}


def _invalid(prediction: Prediction) -> bool:
    """The model's answer failed validation for some control (after the corrective retry)."""
    errors = (prediction.get("meta") or {}).get("errors") or {}
    return any(str(message).split(":", 1)[0].strip() in REASONS for name, message in errors.items() if name != "task")


def expected_calibration_error(confidences: list[float], correct: list[bool], bins: int = ECE_BINS) -> float | None:
    """ECE over equal-width bins (``quality.calibration_fit.ece``); None without any answer."""
    if not confidences:
        return None
    return ece(np.clip(np.asarray(confidences, dtype=float), 0.0, 1.0), np.asarray(correct, dtype=float), bins)


def _span_metrics(control: LabelsField, humans: list[Any], predicted: list[Any]) -> dict[str, Any]:
    """Span-level F1 per label ((text, label) pairs of each task), macro over the labels."""
    counts: dict[str, Counter[str]] = {label: Counter() for label in control.label_values}
    for human, guess in zip(humans, predicted):
        truth = {(s["text"], s["label"]) for s in human or []}
        found = {(s["text"], s["label"]) for s in guess or []}
        for text_label in truth | found:
            key = "tp" if text_label in truth and text_label in found else "fn" if text_label in truth else "fp"
            counts.setdefault(text_label[1], Counter())[key] += 1
    per_class = {}
    for label, c in counts.items():
        denominator = 2 * c["tp"] + c["fp"] + c["fn"]
        per_class[label] = 2 * c["tp"] / denominator if denominator else 0.0
    exact = [same(control, h, g) for h, g in zip(humans, predicted)]
    return {"kind": "spans", "accuracy": float(np.mean(exact)) if exact else 0.0,
            "macro_f1": float(np.mean(list(per_class.values()))) if per_class else 0.0, "per_class": per_class}


def control_metrics(control: ControlField, cases: list[Case], values: list[dict[str, Any]],
                    predictions: list[Prediction]) -> dict[str, Any]:
    """Accuracy / macro-F1 / per-class F1 (and the confusion matrix) of one control."""
    humans = [case.human.get(control.name) for case in cases]
    guesses = [value.get(control.name) for value in values]
    if isinstance(control, LabelsField):
        return _span_metrics(control, humans, guesses)
    if isinstance(control, ChoicesField | RatingField):
        multiple = isinstance(control, ChoicesField) and control.multiple
        labels = control.label_values if isinstance(control, ChoicesField) else [
            str(r) for r in range(1, control.max_rating + 1)]
        items = []
        for index, (case, human, guess, prediction) in enumerate(zip(cases, humans, guesses, predictions)):
            if human is None:
                continue  # the human left this control empty: nothing to score it against
            expected = human if multiple or human is None else str(human)
            got = guess if multiple or guess is None else str(guess)
            items.append(Item(index, json.dumps(case.texts, ensure_ascii=False)[:300], expected, "", got,
                              got is not None, same(control, human, guess), prediction.get("score"), 0.0, None, None))
        metrics = task_metrics(items, "multilabel" if multiple else "classification", labels)
        keep = ("accuracy", "exact_match", "macro_f1", "per_class", "confusion_matrix")
        return {"kind": "multilabel" if multiple else "classification", **{k: metrics[k] for k in keep if k in metrics}}
    exact = [same(control, h, g) for h, g in zip(humans, guesses)]
    return {"kind": "exact", "accuracy": float(np.mean(exact)) if exact else 0.0}


def version_report(run: VersionRun, cases: list[Case]) -> dict[str, Any]:
    schema = run.ctx.schema
    values = [predicted_values(schema, p) for p in run.predictions]
    n = len(cases)
    exact = [all(same(c, case.human.get(c.name), value.get(c.name)) for c in schema.fields)
             for case, value in zip(cases, values)]
    statuses = Counter((p.get("meta") or {}).get("status", "ok") for p in run.predictions)
    provenance = [(p.get("meta") or {}).get("provenance") or {} for p in run.predictions]
    usage = [pv.get("usage") or {} for pv in provenance]
    scored = [(p["score"], ok) for p, ok in zip(run.predictions, exact) if p.get("result")]
    controls = {control.name: control_metrics(control, cases, values, run.predictions) for control in schema.fields}
    with_f1 = [m["macro_f1"] for m in controls.values() if "macro_f1" in m]
    return {
        "label": run.version.label,
        "model": run.version.model,
        "guideline": run.ctx.guideline_name,
        "guideline_hash": run.ctx.guideline.hash,
        "prompt_version": run.ctx.prompt.version,
        "model_version": run.model_version,
        "n": n,
        "exact_match": float(np.mean(exact)) if n else 0.0,
        "macro_f1": float(np.mean(with_f1)) if with_f1 else None,
        "controls": controls,
        "invalid_rate": sum(map(_invalid, run.predictions)) / n if n else 0.0,
        "needs_human_rate": statuses["needs_human"] / n if n else 0.0,
        "error_rate": statuses["error"] / n if n else 0.0,
        "ece": expected_calibration_error([s for s, _ in scored], [ok for _, ok in scored]),
        "tokens_per_task": sum(u.get("total_tokens", 0) for u in usage) / n if n else 0.0,
        "prompt_tokens_per_task": sum(u.get("prompt_tokens", 0) for u in usage) / n if n else 0.0,
        "completion_tokens_per_task": sum(u.get("completion_tokens", 0) for u in usage) / n if n else 0.0,
        "seconds_per_task": run.wall_s / n if n else 0.0,
        "latency_s_mean": float(np.mean([pv.get("latency_ms", 0.0) for pv in provenance])) / 1000 if n else 0.0,
        "wall_s": round(run.wall_s, 3),
        "_exact": exact,
        "_values": values,
    }


def changed_tasks(cases: list[Case], current: dict[str, Any], candidate: dict[str, Any],
                  schema: OutputSchema) -> list[dict[str, Any]]:
    """Tasks where the two versions answered differently, with both answers and the human one."""
    changed = []
    for index, case in enumerate(cases):
        before, after = current["_values"][index], candidate["_values"][index]
        if all(same(c, before.get(c.name), after.get(c.name)) for c in schema.fields):
            continue
        changed.append({"task_id": case.task_id, "text": " | ".join(case.texts.values())[:200],
                        "human": case.human, "current": before, "candidate": after,
                        "current_correct": current["_exact"][index], "candidate_correct": candidate["_exact"][index]})
    return changed


def compare(runs: list[VersionRun], cases: list[Case], meta: dict[str, Any]) -> dict[str, Any]:
    """The whole report: both versions, their differences, the changed tasks."""
    current, candidate = (version_report(run, cases) for run in runs)
    changed = changed_tasks(cases, current, candidate, runs[0].ctx.schema)
    for report in (current, candidate):
        report.pop("_exact")
        report.pop("_values")
    return {"kind": "prelabel.prompts.eval", **meta, "tasks": [case.task_id for case in cases],
            "current": current, "candidate": candidate, "changed": changed,
            "changed_count": len(changed),
            "improved": sum(1 for c in changed if c["candidate_correct"] and not c["current_correct"]),
            "worsened": sum(1 for c in changed if c["current_correct"] and not c["candidate_correct"])}


HEADLINE = (("exact_match", "exact match"), ("macro_f1", "macro-F1"), ("invalid_rate", "invalid answers"),
            ("needs_human_rate", "needs_human"), ("error_rate", "LLM errors"), ("ece", "ECE (score)"),
            ("tokens_per_task", "tokens / task"), ("seconds_per_task", "seconds / task"))


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_outputs(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """report.json, report.md and one confusion PNG per classification control and version."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for side in ("current", "candidate"):
        for name, metrics in report[side]["controls"].items():
            if "confusion_matrix" in metrics:
                path = out / f"confusion-{side}-{name}.png"
                plot_confusion(metrics["confusion_matrix"], path, f"{side} {report[side]['prompt_version']}: {name}")
                metrics["confusion_png"] = path.name
                files[f"{side}:{name}"] = path
    files["json"] = out / "report.json"
    files["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(markdown(report), encoding="utf-8")
    return files


def markdown(report: dict[str, Any]) -> str:
    cur, cand = report["current"], report["candidate"]
    lines = [f"# Prompt evaluation: project {report['project']}", "",
             f"{cur['n']} human-verified tasks ({report['verification']}), {report['time']}.", "",
             f"* current: `{cur['model_version']}` (guideline `{cur['guideline']}` {cur['guideline_hash']})",
             f"* candidate: `{cand['model_version']}` (guideline `{cand['guideline']}` {cand['guideline_hash']})", "",
             "| metric | current | candidate |", "|---|---|---|"]
    lines += [f"| {title} | {fmt(cur[key])} | {fmt(cand[key])} |" for key, title in HEADLINE]
    for name, metrics in cur["controls"].items():
        other = cand["controls"][name]
        lines.append(f"| `{name}` accuracy | {fmt(metrics.get('accuracy'))} | {fmt(other.get('accuracy'))} |")
        for label, score in (metrics.get("per_class") or {}).items():
            lines.append(f"| `{name}` F1 {label} | {fmt(score)} | {fmt(other['per_class'].get(label))} |")
    summary = (f"{report['changed_count']} tasks changed: {report['improved']} now right, "
               f"{report['worsened']} now wrong.")
    lines += ["", summary, ""]
    if report["changed"]:
        lines += ["| task | text | human | current | candidate |", "|---|---|---|---|---|"]
        for row in report["changed"][:CHANGED_SHOWN]:
            lines.append(f"| {row['task_id']} | {row['text'][:80]} | {_cell(row['human'])} | {_cell(row['current'])}"
                         f"{' ✓' if row['current_correct'] else ''} | {_cell(row['candidate'])}"
                         f"{' ✓' if row['candidate_correct'] else ''} |")
        lines.append("")
    for side in ("current", "candidate"):
        for name, metrics in report[side]["controls"].items():
            if metrics.get("confusion_png"):
                lines += [f"![{side} {name}]({metrics['confusion_png']})", ""]
    return "\n".join(lines)


def _cell(values: dict[str, Any]) -> str:
    shown = json.dumps(values, ensure_ascii=False)
    return (shown if len(shown) <= 80 else shown[:77] + "...").replace("|", "\\|")


__all__ = ["Case", "EvalError", "Version", "VersionRun", "compare", "expected_calibration_error",
           "run_version", "sample", "verified_cases", "write_outputs"]
