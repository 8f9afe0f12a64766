"""Evaluate a model on a test split: run an engine, parse every answer (fail closed), score it.

An answer that does not parse into the task's format (a label outside the label set, text that
is not a JSON object) is *invalid*: it counts as wrong, is reported as ``<invalid>``, and is
never mapped to a default label.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prelabel.train.data import Manifest, Record, answer_value, json_answers, load_manifest, read_split, sha256_file
from prelabel.train.engine_types import AnswerFormat, Engine

INVALID = "<invalid>"


@dataclass
class Item:
    index: int
    input: str
    expected: Any
    output: str
    predicted: Any
    valid: bool
    correct: bool
    confidence: float | None
    latency_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    field_scores: dict[str, bool] = field(default_factory=dict)


@dataclass
class EvalRun:
    items: list[Item]
    manifest: Manifest
    test_path: Path
    test_sha256: str
    wall_s: float
    engine: dict[str, Any]
    latency_mode: str


def answer_format(manifest: Manifest) -> AnswerFormat | None:
    """The constraint a guided engine decodes to."""
    if json_answers(manifest) and isinstance(manifest.raw.get("schema"), dict):
        return AnswerFormat(json_schema=manifest.raw["schema"])
    if manifest.task_type in ("classification", "rating") and manifest.labels:
        return AnswerFormat(choices=tuple(manifest.labels))
    if manifest.task_type == "extraction":
        schema = manifest.raw.get("schema") if isinstance(manifest.raw.get("schema"), dict) else {"type": "object"}
        return AnswerFormat(json_schema=schema)
    return None


def parse(text: str, manifest: Manifest) -> tuple[Any, bool]:
    """(normalized answer, valid) for one model output or gold answer."""
    task = manifest.task_type
    stripped = text.strip()
    if json_answers(manifest):
        return _parse_json_answer(stripped, manifest)
    if task in ("classification", "rating") and manifest.labels:
        label = _match_label(stripped, manifest.labels)
        return (label, True) if label is not None else (None, False)
    if task == "multilabel":
        return _parse_multilabel(stripped, manifest.labels)
    if task == "extraction":
        try:
            value = json.loads(_unfence(stripped))
        except ValueError:
            return None, False
        return (value, True) if isinstance(value, dict) else (None, False)
    return (stripped, True) if stripped else (None, False)


def _parse_json_answer(text: str, manifest: Manifest) -> tuple[Any, bool]:
    """The backend's JSON answer: parsed as the backend parses it, then checked per task type."""
    value, problem = answer_value(text, manifest)
    if problem:
        return None, False
    task = manifest.task_type
    if task == "classification":
        return (value, True) if isinstance(value, str) and value in manifest.labels else (None, False)
    if task == "multilabel":
        ok = isinstance(value, list) and all(isinstance(v, str) and v in manifest.labels for v in value)
        return (sorted(set(value)), True) if ok else (None, False)
    if task == "rating":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return (str(value), True) if ok else (None, False)
    return (value, True) if isinstance(value, dict) else (None, False)


def _match_label(text: str, labels: list[str]) -> str | None:
    if text in labels:
        return text
    folded = [label for label in labels if label.casefold() == text.casefold()]
    return folded[0] if len(folded) == 1 else None


def _parse_multilabel(text: str, labels: list[str]) -> tuple[Any, bool]:
    try:
        raw = json.loads(text) if text.startswith("[") else [part.strip() for part in text.split(",")]
    except ValueError:
        return None, False
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        return None, False
    chosen = [_match_label(item.strip(), labels) for item in raw if item.strip()]
    if any(label is None for label in chosen):
        return None, False
    return sorted(set(chosen)), True


def _unfence(text: str) -> str:
    """``````json {...} `````` -> ``{...}``: a code fence around JSON is formatting, not content."""
    if text.startswith("```") and text.endswith("```"):
        body = text[3:-3]
        return body.split("\n", 1)[1] if "\n" in body else body
    return text


def field_scores(expected: dict[str, Any], predicted: dict[str, Any] | None) -> dict[str, bool]:
    """Per gold/predicted field: equal or not (missing or extra fields count as wrong)."""
    predicted = predicted or {}
    keys = sorted(set(expected) | set(predicted))
    return {key: key in expected and key in predicted and expected[key] == predicted[key] for key in keys}


def load_test(data: Path, manifest_path: Path | None = None) -> tuple[Manifest, Path, list[Record]]:
    """``data`` is a dataset directory (its test split) or a JSONL file next to manifest.json."""
    data = Path(data)
    if data.is_dir():
        manifest = load_manifest(data)
        entry = manifest.splits.get("test") or {}
        path = data / str(entry.get("path") or "test.jsonl")
    else:
        manifest = load_manifest((manifest_path or data.parent / "manifest.json").parent)
        path = data
    return manifest, path, read_split(path, manifest)


def run_eval(engine: Engine, data: Path, *, manifest_path: Path | None = None,
             max_samples: int | None = None) -> EvalRun:
    """Generate and score every test record."""
    manifest, path, records = load_test(data, manifest_path)
    records = records[:max_samples] if max_samples else records
    started = time.perf_counter()
    by_task = getattr(engine, "generate_records", None)  # the backend engine: task data, its own prompt
    generations = (by_task(records, manifest) if by_task else
                   engine.generate([r.messages() for r in records], answer_format(manifest)))
    wall = time.perf_counter() - started
    items = []
    for index, (record, generation) in enumerate(zip(records, generations, strict=True)):
        expected, _ = parse(record.output, manifest)
        predicted, valid = parse(generation.text, manifest)
        item = Item(index, record.input or record.instruction, expected, generation.text, predicted, valid,
                    valid and predicted == expected, generation.confidence, generation.latency_s,
                    generation.prompt_tokens, generation.completion_tokens)
        if manifest.task_type == "extraction":
            item.field_scores = field_scores(expected, predicted if valid else None)
        items.append(item)
    return EvalRun(items, manifest, path, sha256_file(path), wall, engine.describe(), engine.latency_mode)


def write_predictions(run: EvalRun, path: Path) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(asdict(item), ensure_ascii=False) + "\n" for item in run.items)


def read_predictions(path: Path) -> list[Item]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [Item(**json.loads(line)) for line in lines if line.strip()]

