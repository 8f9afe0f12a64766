"""Confidence of an answer from the token log-probabilities of the values the model chose.

The generated JSON is scanned to find where each value sits (a path -> character span map); the
tokens overlapping a value's span give its probability. Per control:

- Choices: probability of the chosen label's tokens (joint; under constrained decoding this is
  the label's probability among the allowed ones). Several choices: the least likely one.
- Rating / Number: joint probability of the value's tokens.
- Labels (spans): per span, the geometric mean token probability of its text and label; each
  region carries its own span's score (``span_confidences``), the control takes its least
  confident span (an empty list: the probability of writing ``[]``).
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
from prelabel.prediction.llm_client import TokenLogprob

FALLBACK_SCORE = 0.5
Path = tuple[object, ...]

_WS = re.compile(r"[ \t\r\n]*")


def _skip_ws(s: str, i: int) -> int:
    """The index of the first non-whitespace character at or after ``i``."""
    match = _WS.match(s, i)  # the pattern matches the empty string: never None
    return match.end() if match else i
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


def value_spans(text: str, offset: int = 0) -> dict[Path, tuple[int, int]]:
    """Map every value's path in a JSON document to its character span (strings: without quotes)."""
    spans: dict[Path, tuple[int, int]] = {}
    _scan(text, offset, (), spans)
    return spans


def _scan(s: str, i: int, path: Path, out: dict[Path, tuple[int, int]]) -> int:
    i = _skip_ws(s, i)
    start = i
    char = s[i]
    if char in "{[":
        closing = "}" if char == "{" else "]"
        i = _skip_ws(s, i + 1)
        index = 0
        while s[i] != closing:
            if char == "{":
                key, i = json.decoder.scanstring(s, i + 1)  # type: ignore[attr-defined]
                i = _skip_ws(s, i) + 1  # skip ':'
                i = _scan(s, i, path + (key,), out)
            else:
                i = _scan(s, i, path + (index,), out)
                index += 1
            i = _skip_ws(s, i)
            if s[i] == ",":
                i = _skip_ws(s, i + 1)
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
        return min(_span_scores(control, value, spans, tokens))
    if isinstance(control, ChoicesField) and isinstance(value, list):
        items = [spans[root + (i,)] for i in range(len(value)) if root + (i,) in spans]
        return min((_joint(tokens.logprobs(item)) for item in items), default=None)
    if isinstance(control, TextAreaField):
        return _geometric(tokens.logprobs(spans[root]))
    return _joint(tokens.logprobs(spans[root]))


def _span_scores(control: LabelsField, value: list, spans: dict[Path, tuple[int, int]], tokens: TokenMap
                 ) -> list[float]:
    """Per answered span: the geometric mean probability of its own text and label tokens."""
    per_span = []
    for index in range(len(value)):
        parts = [spans[p] for p in ((control.name, index, "text"), (control.name, index, "label")) if p in spans]
        per_span.append(_geometric(lp for part in parts for lp in tokens.logprobs(part)))
    return per_span


def span_confidences(
    content: str, json_start: int, tokens: list[TokenLogprob] | None, controls: list[ControlField],
    answer: dict[str, object],
) -> dict[str, dict[tuple[str, str], float]]:
    """Per ``Labels`` control, each answered span's own confidence by (text, label): a region gets
    the score of the tokens that wrote it, not its control's least confident span."""
    located = locate(content, json_start, tokens)
    if located is None:
        return {}
    token_map, spans = located
    found: dict[str, dict[tuple[str, str], float]] = {}
    for control in controls:
        value = answer.get(control.name)
        if not (isinstance(control, LabelsField) and isinstance(value, list) and value and (control.name,) in spans):
            continue
        scores: dict[tuple[str, str], float] = {}
        for item, score in zip(value, _span_scores(control, value, spans, token_map)):
            if isinstance(item, dict):
                key = (str(item.get("text")).strip(), str(item.get("label")))  # regions hold the stripped text
                scores[key] = round(min(1.0, max(0.0, min(score, scores.get(key, 1.0)))), 6)
        found[control.name] = scores
    return found


def locate(
    content: str, json_start: int, tokens: list[TokenLogprob] | None, root: Path = ()
) -> tuple[TokenMap, dict[Path, tuple[int, int]]] | None:
    """The content's tokens and the spans of the values under ``root``, or None when logprobs
    are missing, misaligned or the JSON cannot be scanned.

    ``root``: where the answer sits inside the generated JSON (``()``: it is the document; the
    reviewer's correction sits under ``("corrected",)``).
    """
    if not tokens:
        return None
    token_map = TokenMap(content, tokens)
    if not token_map.aligned:
        return None
    try:
        spans = value_spans(content, json_start)
    except (ValueError, IndexError):
        return None
    return token_map, {path[len(root):]: span for path, span in spans.items() if path[:len(root)] == root}


def answer_confidences(
    content: str, json_start: int, tokens: list[TokenLogprob] | None, controls: list[ControlField],
    answer: dict[str, object], root: Path = (),
) -> dict[str, float] | None:
    """Per-control confidences of an answer (under ``root``, see ``locate``), or None."""
    located = locate(content, json_start, tokens, root)
    if located is None:
        return None
    token_map, spans = located
    result: dict[str, float] = {}
    for control in controls:
        confidence = control_confidence(control, answer.get(control.name), spans, token_map)
        if confidence is not None:
            result[control.name] = round(min(1.0, max(0.0, confidence)), 6)
    return result
