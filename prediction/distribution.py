"""A probability for every label of a Choices control, from the answer's token alternatives.

The server returns, for each generated token, the ``top_logprobs`` alternatives the model
weighed. At the token where a chosen label begins, those alternatives say how much the model
wanted each *other* label there: an alternative whose text begins a label (or is the whole
label and its closing quote) gives that label its probability. This is what the model would
have chosen from under a decoder constrained to the label set, so the mass on alternatives that
begin no label (text the schema forbids) is dropped and the rest renormalised.

* Several labels beginning the same way share an alternative's mass evenly, except the chosen
  one, which keeps the probability of its own remaining tokens (``rest``); the other labels of
  that prefix share what is left.
* Labels no top alternative begins got less than the smallest alternative shown: they share the
  unseen mass (one minus the alternatives' total), each capped at that smallest probability.

Single choice: a distribution (sums to 1). Multiple choice: per label, the probability that the
model includes it (``1 - prod(1 - reach_i * q_i(label))`` over the list's positions ``i``, where
``q_i`` is the distribution of the label written at position ``i`` among labels not yet written,
``reach_i`` the probability that the list got that far, read from the ``,`` / ``]`` alternatives
after each item; one more position after the last item covers "it could have gone on"). These do
not sum to 1. ``kind`` in the region stamp says which one it is.

None when the tokens or their alternatives are not there: callers then fall back explicitly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from prelabel.label_config.controls import ChoicesField, ControlField
from prelabel.prediction.confidence import Path, TokenMap, locate
from prelabel.prediction.llm_client import TokenLogprob

SINGLE, INCLUSION = "distribution", "inclusion"


def _raw(label: str) -> str:
    """The label as it appears between the quotes of a JSON string."""
    return json.dumps(label, ensure_ascii=False)[1:-1]


def _byte(tokens: TokenMap, char_pos: int) -> int:
    return len(tokens.content[:char_pos].encode())


def _alternatives(tokens: TokenMap, byte_pos: int) -> tuple[int, str, dict[str, float]] | None:
    """(token index, the emitted text of that token from ``byte_pos`` on, {piece: probability})
    for the token covering ``byte_pos``; pieces are the alternatives' text from the same point."""
    index = next((i for i, (a, b) in enumerate(tokens.bounds) if a <= byte_pos < b), None)
    if index is None or not tokens.tokens[index].top:
        return None
    encoded = tokens.content.encode()
    start, end = tokens.bounds[index]
    lead = encoded[start:byte_pos].decode(errors="ignore")
    emitted = encoded[byte_pos:end].decode(errors="ignore")
    pieces: dict[str, float] = {}
    for text, logprob in tokens.tokens[index].top:
        if text.startswith(lead) and len(text) > len(lead):
            piece = text[len(lead):]
            pieces[piece] = max(pieces.get(piece, 0.0), math.exp(logprob))
    return index, emitted, pieces


def _consistent(piece: str, raw: str) -> bool:
    """Could the model go on to write label ``raw`` after writing ``piece``?"""
    return raw.startswith(piece) or piece.startswith(raw + '"')


def _rest(tokens: TokenMap, index: int, span: tuple[int, int]) -> float:
    """Probability of the chosen label's tokens after the one at ``index`` (1 when there are none)."""
    end = _byte(tokens, span[1])
    later = [t.logprob for t, (a, _) in zip(tokens.tokens[index + 1:], tokens.bounds[index + 1:]) if a < end]
    return math.exp(sum(later))


def position_distribution(
    labels: Sequence[str], chosen: str, span: tuple[int, int], tokens: TokenMap
) -> dict[str, float] | None:
    """Distribution over ``labels`` at the place where ``chosen`` was written (character ``span``
    of its text between the quotes); see the module docstring. None when ``chosen`` is not
    among ``labels`` (e.g. a multiple-choice answer that writes a label twice)."""
    if chosen not in labels:
        return None
    found = _alternatives(tokens, _byte(tokens, span[0]))
    if found is None:
        return None
    index, emitted, pieces = found
    raws = {label: _raw(label) for label in labels}
    emitted_piece = emitted
    if emitted not in pieces:
        # The server's alternatives do not include the token it produced (some list only the
        # others): it is there with its own probability.
        pieces[emitted] = math.exp(tokens.tokens[index].logprob)
    if not _consistent(emitted_piece, raws[chosen]):
        return None
    probs = dict.fromkeys(labels, 0.0)
    for piece, mass in pieces.items():
        group = [label for label in labels if _consistent(piece, raws[label])]
        if piece == emitted_piece:
            rest = _rest(tokens, index, span)
            others = [label for label in group if label != chosen]
            probs[chosen] += mass * (rest if others else 1.0)
            for label in others:
                probs[label] += mass * (1.0 - rest) / len(others)
        else:
            for label in group:
                probs[label] += mass / len(group)
    unseen = [label for label, p in probs.items() if p == 0.0]
    if unseen:
        floor = min(pieces.values())
        residual = max(0.0, 1.0 - sum(pieces.values()))
        for label in unseen:
            probs[label] = min(floor, residual / len(unseen))
    total = sum(probs.values())
    if total <= 0:
        return None
    return {label: p / total for label, p in probs.items()}


def _continue_probability(tokens: TokenMap, after_item: int) -> float | None:
    """P(the list goes on) at the first ``,`` or ``]`` after character ``after_item``."""
    content = tokens.content
    pos = after_item
    while pos < len(content) and content[pos] in ' \t\r\n"':
        pos += 1
    if pos >= len(content) or content[pos] not in ",]":
        return None
    found = _alternatives(tokens, _byte(tokens, pos))
    if found is None:
        return None
    _, _, pieces = found
    go_on = sum(p for piece, p in pieces.items() if piece.lstrip(" \t\r\n").startswith(","))
    stop = sum(p for piece, p in pieces.items() if piece.lstrip(" \t\r\n").startswith("]"))
    return go_on / (go_on + stop) if go_on + stop > 0 else None


def inclusion_probabilities(
    labels: Sequence[str], chosen: Sequence[str], item_spans: Sequence[tuple[int, int]], tokens: TokenMap
) -> dict[str, float] | None:
    """Per label, the probability that a multiple-choice answer includes it (module docstring)."""
    if not chosen or len(chosen) != len(item_spans):
        return None
    never = dict.fromkeys(labels, 1.0)  # P(label not included so far)
    reach = 1.0
    observed: list[dict[str, float]] = []
    written: list[str] = []
    for label, span in zip(chosen, item_spans):
        left = [x for x in labels if x not in written]
        q = position_distribution(left, label, span, tokens)
        go_on = _continue_probability(tokens, span[1])
        if q is None or go_on is None:
            return None
        for other, p in q.items():
            never[other] *= 1.0 - reach * p
        observed.append(q)
        written.append(label)
        reach *= go_on
    left = [x for x in labels if x not in written]
    if left and reach > 0:
        guess = {x: sum(q.get(x, 0.0) for q in observed) for x in left}
        total = sum(guess.values())
        for x in left:
            share = guess[x] / total if total > 0 else 1.0 / len(left)
            never[x] *= 1.0 - reach * share
    return {label: 1.0 - never[label] for label in labels}


def label_distribution(
    control: ControlField, value: object, spans: dict[Path, tuple[int, int]], tokens: TokenMap
) -> dict[str, float] | None:
    """``label_probs`` of one Choices control's value, or None (not a choice, no alternatives)."""
    if not isinstance(control, ChoicesField):
        return None
    labels = list(control.label_values)
    root: Path = (control.name,)
    if control.multiple:
        if not isinstance(value, list) or not all(isinstance(v, str) and v in labels for v in value):
            return None
        items = [spans.get(root + (i,)) for i in range(len(value))]
        if any(item is None or item[0] == item[1] for item in items):
            return None
        return inclusion_probabilities(labels, value, items, tokens)  # type: ignore[arg-type]
    span = spans.get(root)
    if not isinstance(value, str) or value not in labels or span is None or span[0] == span[1]:
        return None
    return position_distribution(labels, value, span, tokens)


def answer_label_probs(
    content: str, json_start: int, tokens: list[TokenLogprob] | None, controls: list[ControlField],
    answer: dict[str, object], root: Path = (),
) -> dict[str, dict[str, float]]:
    """``label_probs`` of every Choices control in an answer under ``root`` (rounded to 6
    places); see ``confidence.locate``."""
    located = locate(content, json_start, tokens, root)
    if located is None:
        return {}
    token_map, spans = located
    out = {}
    for control in controls:
        probs = label_distribution(control, answer.get(control.name), spans, token_map)
        if probs is not None:
            out[control.name] = {label: round(p, 6) for label, p in probs.items()}
    return out


def kind_of(control: ControlField) -> str:
    return INCLUSION if isinstance(control, ChoicesField) and control.multiple else SINGLE


def distribution_score(control: ControlField, value: object, probs: dict[str, float]) -> float | None:
    """The control's score from its ``label_probs``: the chosen label's probability (single
    choice); for multiple choice the least likely of "each chosen label is in, each other label is
    out": the answer is only as trustworthy as its shakiest decision."""
    if not isinstance(control, ChoicesField):
        return None
    if not control.multiple:
        return probs.get(value) if isinstance(value, str) else None
    if not isinstance(value, list) or not value:
        return None
    decisions = [probs.get(label, 0.0) if label in value else 1.0 - probs.get(label, 0.0) for label in probs]
    return min(decisions)
