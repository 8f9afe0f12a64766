"""Confidence of an answer from the token log-probabilities of the values the model chose.

The generated JSON is scanned to find where each value sits (a path -> character span map); the
tokens overlapping a value's span give its probability. Per control:

- Choices: probability of the chosen label's tokens (joint; under constrained decoding this is
  the label's probability among the allowed ones). Several choices: the least likely one.
- Rating / Number: joint probability of the value's tokens.
- Labels (spans): per span, the geometric mean token probability of its text and label; the
  control takes its least confident span (an empty list: the probability of writing ``[]``).
- TextArea: geometric mean token probability of the text.

The task's ``score`` is the minimum over its filled controls: a prediction is only as
trustworthy as its weakest part. Without logprobs (server does not return them) the score is
``FALLBACK_SCORE`` and the prediction says ``score_source: "none"``; rankings then rely on the
review and active-learning signals instead.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable

from prelabel.label_config.controls import (
    ChoicesField,
    ControlField,
    LabelsField,
    TextAreaField,
)
from prelabel.ml_backend.llm_client import TokenLogprob

FALLBACK_SCORE = 0.5
Path = tuple[object, ...]

_WS = re.compile(r"[ \t\r\n]*")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


def value_spans(text: str, offset: int = 0) -> dict[Path, tuple[int, int]]:
    """Map every value's path in a JSON document to its character span (strings: without quotes)."""
    spans: dict[Path, tuple[int, int]] = {}
    _scan(text, offset, (), spans)
    return spans


def _scan(s: str, i: int, path: Path, out: dict[Path, tuple[int, int]]) -> int:
    i = _WS.match(s, i).end()  # type: ignore[union-attr]
    start = i
    char = s[i]
    if char in "{[":
        closing = "}" if char == "{" else "]"
        i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]
        index = 0
        while s[i] != closing:
            if char == "{":
                key, i = json.decoder.scanstring(s, i + 1)  # type: ignore[attr-defined]
                i = _WS.match(s, i).end() + 1  # skip ':'  # type: ignore[union-attr]
                i = _scan(s, i, path + (key,), out)
            else:
                i = _scan(s, i, path + (index,), out)
                index += 1
            i = _WS.match(s, i).end()  # type: ignore[union-attr]
            if s[i] == ",":
                i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]
        out[path] = (start, i + 1)
        return i + 1
    if char == '"':
        _, end = json.decoder.scanstring(s, i + 1)  # type: ignore[attr-defined]
        out[path] = (i + 1, end - 1)
        return end
    match = _SCALAR.match(s, i)
    if not match:
        raise ValueError(f"unexpected character {char!r} at {i}")
    out[path] = (i, match.end())
    return match.end()


class TokenMap:
    """Token logprobs aligned to the byte offsets of the generated content."""

    def __init__(self, content: str, tokens: list[TokenLogprob]) -> None:
        self.content = content
        self.tokens = tokens
        self.bounds: list[tuple[int, int]] = []
        position = 0
        for token in tokens:
            self.bounds.append((position, position + token.nbytes))
            position += token.nbytes
        self.aligned = position == len(content.encode())

    def logprobs(self, span: tuple[int, int]) -> list[float]:
        """Logprobs of the tokens overlapping a character span (an empty span: the next token)."""
        start = len(self.content[: span[0]].encode())
        end = len(self.content[: span[1]].encode())
        if end == start:
            end = start + 1
        return [t.logprob for t, (a, b) in zip(self.tokens, self.bounds) if a < end and b > start]


def _joint(values: Iterable[float]) -> float:
    values = list(values)
    return math.exp(sum(values)) if values else 0.0


def _geometric(values: Iterable[float]) -> float:
    values = list(values)
    return math.exp(sum(values) / len(values)) if values else 0.0


def control_confidence(
    control: ControlField, value: object, spans: dict[Path, tuple[int, int]], tokens: TokenMap
) -> float | None:
    """Confidence of one control's value, or None when its tokens cannot be located."""
    root: Path = (control.name,)
    if root not in spans:
        return None
    if isinstance(control, LabelsField) and isinstance(value, list):
        if not value:
            return _joint(tokens.logprobs(spans[root]))
        per_span = []
        for index in range(len(value)):
            parts = [spans[p] for p in ((control.name, index, "text"), (control.name, index, "label")) if p in spans]
            per_span.append(_geometric(lp for part in parts for lp in tokens.logprobs(part)))
        return min(per_span)
    if isinstance(control, ChoicesField) and isinstance(value, list):
        items = [spans[root + (i,)] for i in range(len(value)) if root + (i,) in spans]
        return min((_joint(tokens.logprobs(item)) for item in items), default=None)
    if isinstance(control, TextAreaField):
        return _geometric(tokens.logprobs(spans[root]))
    return _joint(tokens.logprobs(spans[root]))


def label_distribution(
    control: ControlField, value: object, spans: dict[Path, tuple[int, int]], tokens: TokenMap
) -> dict[str, float] | None:
    """The model's distribution over a single-choice control's labels, from the alternatives
    (top logprobs) of the first token of the chosen label.

    Each alternative token is matched to the labels it begins; its probability goes to them
    (split evenly when several labels begin the same way, except that the chosen label keeps
    the probability of its own remaining tokens). Mass on tokens that begin no label (text the
    schema would not allow) is dropped and the rest renormalised: the distribution a constrained
    decoder chooses from. None when the first token or its alternatives are not there.
    """
    if not isinstance(control, ChoicesField) or control.multiple or not isinstance(value, str):
        return None
    span = spans.get((control.name,))
    if span is None or span[0] == span[1]:
        return None
    encoded = tokens.content.encode()
    start = len(tokens.content[: span[0]].encode())
    index = next((i for i, (a, b) in enumerate(tokens.bounds) if a <= start < b), None)
    if index is None or not tokens.tokens[index].top:
        return None
    lead = encoded[tokens.bounds[index][0]:start].decode(errors="ignore")
    pieces: dict[str, float] = {}
    for text, logprob in tokens.tokens[index].top:
        if text.startswith(lead) and len(text) > len(lead):
            piece = text[len(lead):]
            pieces[piece] = max(pieces.get(piece, 0.0), math.exp(logprob))
    groups: dict[str, list[str]] = {}
    for label in control.label_values:
        matches = [piece for piece in pieces if label.startswith(piece)]
        if matches:
            groups.setdefault(max(matches, key=len), []).append(label)
    if not any(value in labels for labels in groups.values()):
        return None
    rest = _joint(tokens.logprobs((span[0], span[1]))[1:])  # the chosen label after its first token
    probs: dict[str, float] = {}
    for piece, labels in groups.items():
        mass = pieces[piece]
        if value in labels:
            probs[value] = mass * rest
            others = [label for label in labels if label != value]
            for label in others:
                probs[label] = mass * (1 - rest) / len(others)
        else:
            for label in labels:
                probs[label] = mass / len(labels)
    total = sum(probs.values())
    if total <= 0:
        return None
    return {label: round(probs.get(label, 0.0) / total, 6) for label in control.label_values}


def answer_label_probs(
    content: str, json_start: int, tokens: list[TokenLogprob] | None, controls: list[ControlField],
    answer: dict[str, object],
) -> dict[str, dict[str, float]]:
    """Label distributions of the answer's single-choice controls (see ``label_distribution``)."""
    if not tokens:
        return {}
    token_map = TokenMap(content, tokens)
    if not token_map.aligned:
        return {}
    try:
        spans = value_spans(content, json_start)
    except (ValueError, IndexError):
        return {}
    out = {}
    for control in controls:
        probs = label_distribution(control, answer.get(control.name), spans, token_map)
        if probs is not None:
            out[control.name] = probs
    return out


def answer_confidences(
    content: str, json_start: int, tokens: list[TokenLogprob] | None, controls: list[ControlField],
    answer: dict[str, object],
) -> dict[str, float] | None:
    """Per-control confidences of an answer, or None when logprobs are missing or misaligned."""
    if not tokens:
        return None
    token_map = TokenMap(content, tokens)
    if not token_map.aligned:
        return None
    try:
        spans = value_spans(content, json_start)
    except (ValueError, IndexError):
        return None
    result: dict[str, float] = {}
    for control in controls:
        confidence = control_confidence(control, answer.get(control.name), spans, token_map)
        if confidence is not None:
            result[control.name] = round(min(1.0, max(0.0, confidence)), 6)
    return result
