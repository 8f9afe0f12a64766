"""Domain rules a schema cannot express, checked on every answer.

A rule names answer fields by reference: ``control`` (the control's value) or ``control.Label``
(the texts of the spans a Labels control tagged with ``Label``). Two kinds cover the seed's slot
extraction rules and most others:

- ``distinct: [departure_city, arrival_city]``: the referenced values must differ
  (case-insensitive), e.g. a flight cannot depart from and arrive at the same city;
- ``pattern: {field: time, regex: '([01]\\d|2[0-3]):[0-5]\\d'}``: every non-empty value must fully
  match (an empty slot is the control's business: allowed unless it is ``required``).

Numeric ranges and label sets are already enforced by the controls themselves.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from prelabel.label_config.controls import AnswerError, ControlField


class PatternRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from exc
        return value


class Constraint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    distinct: list[str] | None = None
    pattern: PatternRule | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Constraint:
        if (self.distinct is None) == (self.pattern is None):
            raise ValueError("a constraint has exactly one of 'distinct' or 'pattern'")
        if self.distinct is not None and len(self.distinct) < 2:
            raise ValueError("'distinct' needs at least two fields")
        return self

    def refs(self) -> list[str]:
        return list(self.distinct) if self.distinct is not None else [self.pattern.field]  # type: ignore[union-attr]

    def check_refs(self, controls: dict[str, ControlField]) -> list[str]:
        """Errors for references to controls or labels the config does not have."""
        errors = []
        for ref in self.refs():
            control_name, _, label = ref.partition(".")
            control = controls.get(control_name)
            if control is None:
                errors.append(f"constraint refers to unknown control '{control_name}'")
            elif label and label not in control.label_values:
                errors.append(f"constraint refers to unknown label '{ref}'")
        return errors

    def violations(self, answer: dict[str, Any]) -> list[AnswerError]:
        """One error per involved control when the answer breaks this rule."""
        if self.distinct is not None:
            seen: dict[str, str] = {}
            for ref in self.distinct:
                for value in ref_values(answer, ref):
                    key = value.strip().casefold()
                    if key and key in seen and seen[key] != ref:
                        text = self.message or f"{seen[key]} and {ref} must differ (both {value!r})"
                        return self._errors([seen[key], ref], text)
                    seen.setdefault(key, ref)
            return []
        rule = self.pattern
        assert rule is not None
        for value in ref_values(answer, rule.field):
            if value.strip() and not re.fullmatch(rule.regex, value.strip()):
                text = self.message or f"{rule.field} {value!r} does not match {rule.regex}"
                return self._errors([rule.field], text)
        return []

    @staticmethod
    def _errors(refs: list[str], text: str) -> list[AnswerError]:
        controls = dict.fromkeys(ref.partition(".")[0] for ref in refs)
        return [AnswerError(control, "constraint", text) for control in controls]


def ref_values(answer: dict[str, Any], ref: str) -> list[str]:
    """The string values ``ref`` points at inside an answer (absent -> empty list)."""
    control_name, _, label = ref.partition(".")
    value = answer.get(control_name)
    if value is None:
        return []
    if isinstance(value, list):
        values = []
        for item in value:
            if isinstance(item, dict):
                if not label or item.get("label") == label:
                    values.append(str(item.get("text", "")))
            elif not label:
                values.append(str(item))
        return values
    return [] if label else [str(value)]
