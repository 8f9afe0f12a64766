"""Domain rules a schema cannot express, checked on every answer.

A rule names answer fields by reference: ``control`` (the control's value) or ``control.Label``
(the texts of the spans a Labels control tagged with ``Label``). Two kinds cover the seed's slot
extraction rules and most others:

- ``distinct: [departure_city, arrival_city]``: the referenced values must differ
  (case-insensitive), e.g. a flight cannot depart from and arrive at the same city;
- ``pattern: {field: time, regex: '([01]\\d|2[0-3]):[0-5]\\d'}``: every non-empty value must fully
  match (an empty slot is the control's business: allowed unless it is ``required``).

Numeric ranges and label sets are already enforced by the controls themselves.

Patterns come from guidelines, and inline guidelines come from requests, so they run on RE2
(``google-re2``): matching is linear in the text, whatever the pattern (``(a+)+$`` included). A
pattern RE2 cannot run (backreferences, lookaround), one over ``MAX_PATTERN_CHARS`` or one whose
compiled program would exceed ``PATTERN_MEMORY`` is refused when the guideline is loaded:
``prelabel config check`` and ``/setup`` say so.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from prelabel.label_config.controls import AnswerError, ControlField


class PatternRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        compiled_pattern(value)
        return value

    def fullmatch(self, text: str) -> bool:
        return compiled_pattern(self.regex).fullmatch(text) is not None


MAX_PATTERN_CHARS = 1000
PATTERN_MEMORY = 1 << 20  # bytes RE2 may use for one compiled pattern


@lru_cache(maxsize=256)
def compiled_pattern(regex: str) -> Any:
    """``regex`` compiled by RE2 (linear-time matching); ``ValueError`` with a one-line reason when
    it is too long, too big or uses what RE2 cannot guarantee linear time for."""
    shown = regex if len(regex) <= 60 else regex[:60] + "..."
    if len(regex) > MAX_PATTERN_CHARS:
        raise ValueError(f"regex {shown!r} is longer than {MAX_PATTERN_CHARS} characters")
    options = re2.Options()
    options.max_mem = PATTERN_MEMORY
    options.log_errors = False  # RE2 would print the pattern to stderr: raw input in the log
    try:
        return re2.compile(regex, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"regex {shown!r} refused: RE2 (linear-time, no backreferences or lookaround) "
                         f"cannot compile it: {reason[:120]}") from None


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
            if value.strip() and not rule.fullmatch(value.strip()):
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
