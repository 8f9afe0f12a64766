"""Check an answer against a labeling config, control by control, failing closed.

Every control's value is checked by its handler (type, label set, span present in the text,
range), then the guideline's domain constraints run on the whole answer, and finally every
region is re-checked with label-studio-sdk's own validator. A control that fails any check gets
no region and an error; nothing is ever mapped to a default label. Used for LLM answers and for
the guideline's own few-shot examples alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prelabel.label_config.constraints import Constraint
from prelabel.label_config.controls import AnswerError
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


def check_answer(
    schema: OutputSchema, constraints: list[Constraint], answer: dict[str, Any], texts: dict[str, str]
) -> CheckedAnswer:
    checked = CheckedAnswer(answer)
    for control in schema.fields:
        value = answer.get(control.name)
        if control.is_empty(value):
            if required(control):
                checked.errors[control.name] = AnswerError(control.name, "empty", "no value given")
            continue
        try:
            regions = control.to_regions(value, texts[control.object_name])
        except AnswerError as exc:
            checked.errors[control.name] = exc
            continue
        problem = _sdk_problem(schema, regions)
        if problem:
            checked.errors[control.name] = AnswerError(control.name, "schema", problem)
            continue
        checked.regions[control.name] = regions
    apply_constraints(checked, constraints)
    return checked


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
