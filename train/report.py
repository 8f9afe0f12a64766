"""Evaluation reports: metrics (scikit-learn), error analysis, latency; JSON + Markdown + PNG.

``report.json`` is what promotion compares: ``primary_metric`` / ``primary_value`` (accuracy for
classification and rating, field match for extraction, exact match otherwise), ``per_class``
(F1 per label, accuracy per extraction field) and ``dataset.test_sha256`` so two reports are only
compared when they were made on the same test split.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from prelabel.train.evaluate import INVALID, EvalRun, Item, write_predictions

EXAMPLES_PER_CONFUSION = 3
TOP_CONFUSIONS = 10
CASCADE_THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def build_report(run: EvalRun, *, model_label: str | None = None) -> dict[str, Any]:
    task = run.manifest.task_type
    items = run.items
    n = len(items)
    invalid = sum(not item.valid for item in items)
    report: dict[str, Any] = {
        "kind": "prelabel.eval",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model_label or run.engine.get("model"),
        "engine": run.engine,
        "dataset": {"test_path": str(run.test_path), "test_sha256": run.test_sha256,
                    "manifest_sha256": run.manifest.sha256, "task_type": task, "labels": run.manifest.labels,
                    "prompt_style": run.manifest.raw.get("prompt_style") or "full"},
        "n": n,
        "invalid": invalid,
        "invalid_rate": invalid / n if n else 0.0,
        "performance": _performance(run),
    }
    report.update(task_metrics(items, task, run.manifest.labels))
    report["confidence"] = confidence_table(items)
    return report


def task_metrics(items: list[Item], task_type: str, labels: list[str]) -> dict[str, Any]:
    """Primary metric, per-class scores and error analysis for scored items of one task type."""
    if task_type in ("classification", "rating") and labels:
        return _classification(items, labels)
    if task_type == "multilabel":
        return _multilabel(items, labels)
    if task_type == "extraction":
        return _extraction(items)
    return _exact(items)


def _accuracy(items: list[Item]) -> float:
    return float(np.mean([item.correct for item in items])) if items else 0.0


def _classification(items: list[Item], labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    y_true = [item.expected for item in items]
    y_pred = [item.predicted if item.valid else INVALID for item in items]
    columns = labels + ([INVALID] if INVALID in y_pred else [])
    per_label = classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=columns)
    return {
        "primary_metric": "accuracy",
        "primary_value": _accuracy(items),
        "accuracy": _accuracy(items),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "classification_report": per_label,
        "classification_report_text": classification_report(y_true, y_pred, labels=labels, zero_division=0),
        "per_class": {label: float(per_label[label]["f1-score"]) for label in labels},
        "per_class_metric": "f1",
        "confusion_matrix": {"labels": columns, "rows": labels, "matrix": matrix[: len(labels)].tolist()},
        "top_confusions": top_confusions(items),
    }


def _multilabel(items: list[Item], labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(classes=labels)
    y_true = binarizer.fit_transform([item.expected or [] for item in items])
    y_pred = binarizer.transform([item.predicted if item.valid else [] for item in items])
    per = f1_score(y_true, y_pred, average=None, zero_division=0)
    return {
        "primary_metric": "exact_match",
        "primary_value": _accuracy(items),
        "exact_match": _accuracy(items),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class": {label: float(score) for label, score in zip(labels, per)},
        "per_class_metric": "f1",
        "top_confusions": top_confusions(items),
    }


def _extraction(items: list[Item]) -> dict[str, Any]:
    per_field: dict[str, list[bool]] = {}
    for item in items:
        for name, ok in item.field_scores.items():
            per_field.setdefault(name, []).append(ok)
    field_match = [float(np.mean(list(item.field_scores.values()))) if item.field_scores else 0.0 for item in items]
    mismatches: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        for name, ok in item.field_scores.items():
            if not ok:
                mismatches[name] += 1
                bucket = examples.setdefault(name, [])
                if len(bucket) < EXAMPLES_PER_CONFUSION:
                    got = item.predicted.get(name) if item.valid and isinstance(item.predicted, dict) else INVALID
                    bucket.append({"input": item.input, "expected": (item.expected or {}).get(name), "predicted": got})
    return {
        "primary_metric": "field_match",
        "primary_value": float(np.mean(field_match)) if items else 0.0,
        "field_match": float(np.mean(field_match)) if items else 0.0,
        "exact_match": _accuracy(items),
        "per_class": {name: float(np.mean(oks)) for name, oks in sorted(per_field.items())},
        "per_class_metric": "field accuracy",
        "top_confusions": [{"field": name, "count": count, "examples": examples[name]}
                           for name, count in mismatches.most_common(TOP_CONFUSIONS)],
    }


def _exact(items: list[Item]) -> dict[str, Any]:
    return {"primary_metric": "exact_match", "primary_value": _accuracy(items), "exact_match": _accuracy(items),
            "per_class": {}, "per_class_metric": None, "top_confusions": top_confusions(items)}


def _key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def top_confusions(items: list[Item]) -> list[dict[str, Any]]:
    """Most frequent (true -> predicted) errors, each with a few example inputs and raw outputs."""
    pairs: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[dict[str, str]]] = {}
    for item in items:
        if item.correct:
            continue
        pair = (_key(item.expected), _key(item.predicted) if item.valid else INVALID)
        pairs[pair] += 1
        bucket = examples.setdefault(pair, [])
        if len(bucket) < EXAMPLES_PER_CONFUSION:
            bucket.append({"input": item.input, "output": item.output})
    return [{"true": true, "predicted": predicted, "count": count, "examples": examples[(true, predicted)]}
            for (true, predicted), count in pairs.most_common(TOP_CONFUSIONS)]


def _performance(run: EvalRun) -> dict[str, Any]:
    latencies = np.array([item.latency_s for item in run.items], dtype=float)
    completion = sum(item.completion_tokens or 0 for item in run.items)
    prompt = sum(item.prompt_tokens or 0 for item in run.items)
    return {
        "wall_s": round(run.wall_s, 3),
        "latency_mode": run.latency_mode,
        "latency_s": {
            "mean": float(latencies.mean()) if len(latencies) else 0.0,
            "p50": float(np.percentile(latencies, 50)) if len(latencies) else 0.0,
            "p95": float(np.percentile(latencies, 95)) if len(latencies) else 0.0,
            "max": float(latencies.max()) if len(latencies) else 0.0,
        },
        "items_per_s": len(run.items) / run.wall_s if run.wall_s else None,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "completion_tokens_per_s": completion / run.wall_s if run.wall_s else None,
    }


def confidence_table(items: list[Item]) -> dict[str, Any] | None:
    """Accuracy of the answers at or above each confidence threshold, and how many there are."""
    scored = [(item, item.confidence) for item in items if item.confidence is not None]
    if not scored:
        return None
    rows = []
    for threshold in CASCADE_THRESHOLDS:
        kept = [item for item, confidence in scored if confidence >= threshold]
        rows.append({"threshold": threshold, "coverage": len(kept) / len(scored),
                     "accuracy": _accuracy(kept) if kept else None})
    return {"scored": len(scored), "thresholds": rows}


def write_report(run: EvalRun, out_dir: Path, *, model_label: str | None = None) -> dict[str, Any]:
    """report.json, report.md, predictions.jsonl and (classification) confusion_matrix.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(run, model_label=model_label)
    write_predictions(run, out_dir / "predictions.jsonl")
    report["files"] = {"predictions": "predictions.jsonl", "markdown": "report.md"}
    if "confusion_matrix" in report:
        plot_confusion(report["confusion_matrix"], out_dir / "confusion_matrix.png", str(report["model"]))
        report["files"]["confusion_matrix"] = "confusion_matrix.png"
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "report.md").write_text(markdown(report), encoding="utf-8")
    return report


def plot_confusion(confusion: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(confusion["matrix"])
    columns, rows = confusion["labels"], confusion["rows"]
    size = max(4.0, 0.7 * len(columns) + 2)
    fig, ax = plt.subplots(figsize=(size, max(3.5, 0.6 * len(rows) + 2)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title[-60:], fontsize=9)
    peak = matrix.max() if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center",
                color="white" if peak and value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _f(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def markdown(report: dict[str, Any]) -> str:
    perf = report["performance"]
    lines = [
        f"# Evaluation: {report['model']}",
        "",
        (f"Engine `{report['engine']['engine']}`, {report['n']} test items, task `{report['dataset']['task_type']}`, "
        f"test split sha256 `{report['dataset']['test_sha256'][:12]}`, {report['time']}."),
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("primary_value", "accuracy", "macro_f1", "weighted_f1", "micro_f1", "exact_match",
                "field_match", "invalid_rate"):
        if key in report:
            name = f"**{report['primary_metric']}** (primary)" if key == "primary_value" else key
            lines.append(f"| {name} | {_f(report[key])} |")
    lines += [
        (f"| latency mean / p50 / p95 ({perf['latency_mode']}) | {_f(perf['latency_s']['mean'])} / "
        f"{_f(perf['latency_s']['p50'])} / {_f(perf['latency_s']['p95'])} s |"),
        f"| completion tokens/s | {_f(perf['completion_tokens_per_s'])} |",
        f"| wall time | {_f(perf['wall_s'])} s |",
        "",
    ]
    if report.get("per_class"):
        lines += [f"## Per class ({report['per_class_metric']})", "", "| class | score |", "|---|---|"]
        lines += [f"| {name} | {_f(score)} |" for name, score in report["per_class"].items()]
        lines.append("")
    if report.get("classification_report_text"):
        lines += ["## scikit-learn classification report", "", "```", report["classification_report_text"].rstrip(),
                  "```", ""]
    if report.get("files", {}).get("confusion_matrix"):
        lines += ["## Confusion matrix", "", f"![confusion matrix]({report['files']['confusion_matrix']})", ""]
    if report.get("top_confusions"):
        lines += ["## Top confusions", ""]
        for entry in report["top_confusions"]:
            head = (f"`{entry['field']}` wrong" if "field" in entry
                    else f"`{entry['true']}` -> `{entry['predicted']}`")
            lines.append(f"- {head}: {entry['count']}")
            for example in entry["examples"]:
                shown = {k: v for k, v in example.items() if k != "input"}
                lines.append(f"  - {json.dumps(example['input'], ensure_ascii=False)[:160]} "
                             f"{json.dumps(shown, ensure_ascii=False)[:160]}")
        lines.append("")
    if report.get("confidence"):
        lines += ["## Confidence", "", "| threshold | coverage | accuracy |", "|---|---|---|"]
        lines += [f"| {row['threshold']} | {_f(row['coverage'])} | {_f(row['accuracy'])} |"
                  for row in report["confidence"]["thresholds"]]
        lines.append("")
    return "\n".join(lines)


def load_report(path: Path) -> dict[str, Any]:
    """A ``report.json`` (or the directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("kind") != "prelabel.eval":
        raise ValueError(f"{path} is not a prelabel evaluation report")
    report["_path"] = str(path.resolve())
    return report
