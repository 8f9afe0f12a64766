"""PII in one training record, field by field: free text is searched, structured answers are not.

Searched: the task's input texts, a demonstration's response and a ranking's outputs (free text a
person wrote). Never searched: the answer fields the labeling config defines (choices, ratings,
numbers, slots, spans), which are values, not prose: a date slot holding "2025-03-14" is the label.
A span or text slot that copies a string the input's search found gets the same placeholder, so
the redacted input still contains the span and the name does not leak through the answer.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from prelabel.export.mapping import Mapper, Record
from prelabel.export.pii import detect, redact_findings
from prelabel.prediction.prompt import render_answer

COPIED_TAGS = ("Labels", "TextArea")  # answer fields whose strings are quoted from the input


def _apply(text: str, swaps: dict[str, str]) -> str:
    for original in sorted(swaps, key=len, reverse=True):
        text = text.replace(original, swaps[original])
    return text


def _free(text: str, found: Counter[str], swaps: dict[str, str]) -> str:
    findings = detect(text)
    swaps.update({text[f.start:f.end]: f"[{f.kind}]" for f in findings})
    cleaned, kinds = redact_findings(text, findings)
    found.update(kinds)
    return cleaned


def _answer(mapper: Mapper, output: str, swaps: dict[str, str]) -> str:
    """The JSON answer with the input's replacements applied to quoted strings only."""
    answer: dict[str, Any] = json.loads(output)
    tags = {f.name: f.tag for f in mapper.ctx.schema.fields}
    for name, value in answer.items():
        if tags.get(name) == "TextArea" and isinstance(value, str):
            answer[name] = _apply(value, swaps)
        elif tags.get(name) == "Labels" and isinstance(value, list):
            answer[name] = [{**span, "text": _apply(str(span.get("text", "")), swaps)} if isinstance(span, dict)
                            else span for span in value]
    return render_answer(answer)


def clean_record(mapper: Mapper, record: Record) -> tuple[Record, Counter[str]]:
    """``record`` with its personal information replaced (in place) and what was found, by kind."""
    found: Counter[str] = Counter()
    swaps: dict[str, str] = {}
    if record.texts:
        record.texts = {name: _free(text, found, swaps) for name, text in record.texts.items()}
        record.input = _apply(record.input, swaps)
    else:
        record.input = _free(record.input, found, swaps)
    if mapper.task_type in ("generation", "ranking"):
        record.output = _free(record.output, found, swaps)
        if record.pairs:  # each output once, however many pairs it is in
            cleaned = {text: _free(text, found, swaps) for text in {t for pair in record.pairs for t in pair}}
            record.pairs = [(cleaned[c], cleaned[r]) for c, r in record.pairs]
    elif swaps:
        record.output = _answer(mapper, record.output, swaps)
    return record, found
