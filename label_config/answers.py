"""Check an answer against a labeling config, control by control, failing closed.

Every control's value is checked by its handler (type, label set, span present in the text,
range), then the guideline's domain constraints run on the whole answer, and finally every
region is re-checked with label-studio-sdk's own validator. A control that fails any check gets
no region and an error; nothing is ever mapped to a default label. Used for LLM answers and for
the guideline's own few-shot examples alike.

The other direction lives here too: ``answer_from_regions`` turns Label Studio regions (a human's
annotation, a pre-annotation under review) back into an answer, for few-shot examples, export,
agreement and the review. ``parse_answer`` reads an LLM's raw JSON and ``feedback`` tells it what
was wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from prelabel.label_config.constraints import Constraint
from prelabel.label_config.controls import AnswerError, whole_word_starts
from prelabel.label_config.schema import OutputSchema, required


@dataclass
class CheckedAnswer:
    """Regions of the controls that passed, errors of those that did not."""

    answer: dict[str, Any]
    regions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, AnswerError] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class RegionLimits:
    """How many regions one answer may place: a short answer naming a frequent span must not
    become megabytes of regions (and seconds of validation on the event loop)."""

    per_control: int = 200
    per_task: int = 1000


DEFAULT_LIMITS = RegionLimits()


def check_answer(
    schema: OutputSchema, constraints: list[Constraint], answer: dict[str, Any], texts: dict[str, str],
    limits: RegionLimits = DEFAULT_LIMITS,
) -> CheckedAnswer:
    checked = CheckedAnswer(answer)
    placed = 0
    for control in schema.fields:
        value = answer.get(control.name)
        if control.is_empty(value):
            if required(control):
                checked.errors[control.name] = AnswerError(control.name, "empty", "no value given")
            continue
        text = texts[control.object_name]
        try:
            _within(control, limits, placed, _regions_at_least(control, value, text))
            regions = control.to_regions(value, text)
            _within(control, limits, placed, len(regions))
        except AnswerError as exc:
            checked.errors[control.name] = exc
            continue
        placed += len(regions)
        problem = _sdk_problem(schema, regions)
        if problem:
            checked.errors[control.name] = AnswerError(control.name, "schema", problem)
            continue
        checked.regions[control.name] = regions
    apply_constraints(checked, constraints)
    return checked


def _regions_at_least(control: Any, value: Any, text: str) -> int:
    """The regions ``value`` asks for, known before any is built: one per list item, and for spans
    placed at every occurrence, each span's whole-word matches (positions only, no region yet)."""
    if not isinstance(value, list):
        return 1
    if getattr(control, "occurrence", None) != "all":
        return len(value)
    spans = [item["text"].strip() for item in value if isinstance(item, dict) and isinstance(item.get("text"), str)]
    return max(len(value), sum(len(whole_word_starts(span, text)) for span in spans if span))


def _within(control: Any, limits: RegionLimits, placed: int, count: int) -> None:
    if count > limits.per_control:
        raise AnswerError(control.name, "too_many_regions",
                          f"{count} regions > max_regions_per_control={limits.per_control}")
    if placed + count > limits.per_task:
        raise AnswerError(control.name, "too_many_regions",
                          f"{placed + count} regions in the task > max_regions_per_task={limits.per_task}")


def apply_constraints(checked: CheckedAnswer, constraints: list[Constraint]) -> None:
    """Drop the regions of controls involved in a broken domain rule."""
    for constraint in constraints:
        for error in constraint.violations(checked.answer):
            assert error.control is not None, "a constraint names the controls it involves"
            if error.control in checked.regions or error.control not in checked.errors:
                checked.regions.pop(error.control, None)
                checked.errors[error.control] = error


def _sdk_problem(schema: OutputSchema, regions: list[dict[str, Any]]) -> str | None:
    if schema.interface is None:
        return None
    for region in regions:
        errors = schema.interface.validate_region(region, return_errors=True)
        if errors:
            return "; ".join(errors) if isinstance(errors, list) else "rejected by label-studio-sdk"
    return None


def answer_from_regions(
    schema: OutputSchema, regions: list[dict[str, Any]], *, complete: bool = True
) -> dict[str, Any] | None:
    """The answer a list of Label Studio regions stands for, control by control (``from_regions``).

    ``complete`` (a human's annotation: few-shot examples, export, agreement): a required control
    without a value makes the whole answer None, an optional one gets its empty value (``[]`` for
    spans, ``""`` otherwise). Not ``complete`` (a pre-annotation shown to the reviewer): controls
    without a value are left out.
    """
    answer: dict[str, Any] = {}
    for control in schema.fields:
        value = control.from_regions(regions)
        if value is None:
            if not complete:
                continue
            if required(control):
                return None
            value = [] if control.tag == "Labels" else ""
        answer[control.name] = value
    return answer


_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


def parse_answer(content: str) -> tuple[dict[str, Any], int]:
    """The JSON object in ``content`` and where it starts; ``AnswerError`` when there is none.

    Tolerates what chat models wrap around JSON (whitespace, a Markdown fence) and raw control
    characters inside strings (a newline or tab the grammar let through: the text means the same,
    and every value is checked against its control afterwards), but not truncation or extra
    objects: the object must parse whole.
    """
    start = content.find("{")
    if start == -1:
        raise AnswerError(None, "invalid_json", f"no JSON object in the answer: {content[:80]!r}")
    try:
        answer, end = json.JSONDecoder(strict=False).raw_decode(content, start)
    except json.JSONDecodeError as exc:
        raise AnswerError(None, "invalid_json", f"answer is not valid JSON: {exc.msg} at char {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit integer, arrays nested 100,000 deep
        raise AnswerError(None, "invalid_json", f"answer cannot be read: {type(exc).__name__}") from None
    trailing = _FENCE.sub("", content[end:]).strip()
    if trailing:
        raise AnswerError(None, "invalid_json", f"unexpected text after the JSON object: {trailing[:40]!r}")
    if not isinstance(answer, dict):
        raise AnswerError(None, "invalid_json", "answer must be a JSON object")
    try:  # what cannot be encoded again (a lone surrogate "\ud800", an integer past 64 bits) is refused now,
        orjson.dumps(answer)  # not when the reply or a stored record is written
    except TypeError as exc:
        raise AnswerError(None, "invalid_json", f"answer cannot be encoded: {exc}") from None
    return answer, start


def feedback(errors: dict[str, AnswerError] | list[AnswerError]) -> str:
    """The corrective message sent back to the model with its invalid answer."""
    items = errors.values() if isinstance(errors, dict) else errors
    lines = "\n".join(f"- {error}" for error in items)
    return (
        "Your answer was invalid:\n"
        f"{lines}\n"
        "Answer again with one corrected JSON object that follows the output format exactly."
    )
