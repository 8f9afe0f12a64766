"""One handler per supported Label Studio control tag.

A handler knows three things about its control: the JSON schema the LLM must answer with, how
to turn a (validated) answer into Label Studio regions, and how to turn human regions back into
an answer (for few-shot examples taken from labeled tasks). Validation raises ``AnswerError`` with
a machine-readable reason; nothing is ever coerced into a default label.
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prelabel.contract import SpanOccurrence
from prelabel.errors import PrelabelError

# Bounds on numeric config attributes: past them a value is a typo or an attack, not a scale.
MAX_RATING = 1000
MAX_ATTR_INT = 10_000_000
MAX_ATTR_NUMBER = 1e15  # integers up to here are exact in a float

# Reasons are metric label values: keep the set small and stable.
REASONS = (
    "invalid_json",
    "schema",
    "label_not_in_set",
    "span_not_found",
    "span_ambiguous",
    "out_of_range",
    "constraint",
    "empty",
    "not_in_shortlist",  # the model chose "none of these" among a shortlist of candidate labels
    "too_many_regions",  # past max_regions_per_control / max_regions_per_task (label_config.answers)
)


class AnswerError(PrelabelError, ValueError):
    """An LLM answer (or part of it) that must not become a label."""

    def __init__(self, control: str | None, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.control = control
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        where = f"{self.control}: " if self.control else ""
        return f"{where}{self.message}"


@dataclass(frozen=True)
class LabelInfo:
    """A label value as stored in results, with the hint text the config may carry."""

    value: str
    hint: str | None = None


@dataclass
class ControlField(ABC):
    """Base of all handlers. ``to_name`` is the object the regions point at."""

    name: str
    to_name: str
    object_name: str
    attrs: dict[str, str] = field(default_factory=dict)
    labels: list[LabelInfo] = field(default_factory=list)

    tag: ClassVar[str]
    region_type: ClassVar[str]

    @property
    def label_values(self) -> list[str]:
        return [label.value for label in self.labels]

    @abstractmethod
    def json_schema(self) -> dict[str, Any]:
        """Schema of this control's value inside the LLM's JSON answer."""

    @abstractmethod
    def describe(self) -> str:
        """One prompt line telling the model what to put under this control's key."""

    @abstractmethod
    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        """Validate ``value`` and build LS regions; raise ``AnswerError`` when invalid."""

    @abstractmethod
    def from_regions(self, regions: list[dict[str, Any]]) -> Any:
        """The answer value a human's regions correspond to (``None`` when absent)."""

    def is_empty(self, value: Any) -> bool:
        """True when the answer leaves this control unset (allowed unless required): no value, or the
        empty value a human's annotation gives an optional control it left out (``answer_from_regions``)."""
        return value is None or value == ""

    def attr_problems(self) -> list[str]:
        """What is wrong with this control's attributes (checked once, when the config is parsed)."""
        return []

    def _region(self, value: dict[str, Any], region_id: str | None = None) -> dict[str, Any]:
        region: dict[str, Any] = {
            "from_name": self.name,
            "to_name": self.to_name,
            "type": self.region_type,
            "value": value,
        }
        if region_id:
            region["id"] = region_id
        return region

    def _own(self, regions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in regions if r.get("from_name") == self.name]


def _label_lines(labels: list[LabelInfo]) -> str:
    return ", ".join(f'"{label.value}"' for label in labels)


@dataclass
class ChoicesField(ControlField):
    tag: ClassVar[str] = "Choices"
    region_type: ClassVar[str] = "choices"
    multiple: bool = False

    def json_schema(self) -> dict[str, Any]:
        enum = {"type": "string", "enum": self.label_values}
        if self.multiple:
            return {"type": "array", "items": enum, "uniqueItems": True, "minItems": 1}
        return enum

    def describe(self) -> str:
        if self.multiple:
            return f'"{self.name}": a list of one or more of {_label_lines(self.labels)}'
        return f'"{self.name}": exactly one of {_label_lines(self.labels)}'

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        chosen = value if self.multiple else [value]
        if not isinstance(chosen, list) or not chosen:
            raise AnswerError(self.name, "schema", f"expected {self.describe()}, got {value!r}")
        for item in chosen:
            if not isinstance(item, str):
                raise AnswerError(self.name, "schema", f"choice must be a string, got {item!r}")
            if item not in self.label_values:
                raise AnswerError(
                    self.name,
                    "label_not_in_set",
                    f"{item!r} is not one of {self.label_values}",
                )
        if len(set(chosen)) != len(chosen):
            raise AnswerError(self.name, "schema", f"duplicate choices in {chosen!r}")
        return [self._region({"choices": list(chosen)})]

    def from_regions(self, regions: list[dict[str, Any]]) -> Any:
        for region in self._own(regions):
            choices = region.get("value", {}).get("choices") or []
            if choices:
                return list(choices) if self.multiple else choices[0]
        return None


def _unspaced(ch: str) -> bool:
    """A character of a script written without spaces between words (CJK, kana, Thai)."""
    return "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" \
        or "\u0e00" <= ch <= "\u0e7f"


def _joined(left: str, right: str) -> bool:
    """Two neighbouring characters inside one word (so no span may start or end between them)."""
    return all(ch.isalnum() and not _unspaced(ch) for ch in (left, right))


def _on_word_boundaries(text: str, start: int, end: int) -> bool:
    return (start == 0 or not _joined(text[start - 1], text[start])) and \
        (end == len(text) or not _joined(text[end - 1], text[end]))


def whole_word_starts(span: str, text: str) -> list[int]:
    """Where ``span`` occurs in ``text`` on word boundaries (overlapping matches included)."""
    return [m.start() for m in re.finditer(f"(?={re.escape(span)})", text)
            if _on_word_boundaries(text, m.start(), m.start() + len(span))]


@dataclass
class LabelsField(ControlField):
    """Named-entity spans on a Text object.

    The model returns the span *text* (models are bad at counting characters); offsets are
    computed here and always satisfy ``text[start:end] == span``. A span is placed on word
    boundaries only ("Paris" never inside "Parisian"; scripts written without spaces, such as
    Chinese, have a boundary between any two characters). When the model says which occurrence it
    means (``"occurrence": n``, the n-th whole-word match, or ``"context"``, a longer stretch of the
    text around it) that one gets the region; otherwise ``occurrence`` says which: the ``first``
    (the default), ``all`` of them (when the guideline asks for every mention), or only a ``unique``
    one (a repeated span is then an error for a human to resolve).
    """

    tag: ClassVar[str] = "Labels"
    region_type: ClassVar[str] = "labels"
    occurrence: SpanOccurrence = "first"

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 1},
                    "label": {"type": "string", "enum": self.label_values},
                    "occurrence": {"type": "integer", "minimum": 1},
                    "context": {"type": "string"},
                },
                "required": ["text", "label"],
            },
        }

    def describe(self) -> str:
        return (
            f'"{self.name}": a list of {{"text": <exact substring of the input>, "label": one of '
            f"{_label_lines(self.labels)}}} for every entity; [] when there is none. When the text occurs "
            f'more than once, add "occurrence": n (1 = the first) for the one you mean'
        )

    def is_empty(self, value: Any) -> bool:
        return value is None

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise AnswerError(self.name, "schema", f"expected a list of spans, got {value!r}")
        regions: list[dict[str, Any]] = []
        seen: set[tuple[int, int, str]] = set()
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise AnswerError(self.name, "schema", f"bad span item {item!r}")
            label = item.get("label")
            if label not in self.label_values:
                raise AnswerError(
                    self.name, "label_not_in_set", f"{label!r} is not one of {self.label_values}"
                )
            span = item["text"].strip()
            if not span:
                raise AnswerError(self.name, "empty", "empty span text")
            for start in self._occurrences(span, text, item):
                key = (start, start + len(span), label)
                if key in seen:
                    continue
                seen.add(key)
                value_dict = {"start": start, "end": start + len(span), "text": span, "labels": [label]}
                regions.append(self._region(value_dict, _region_id(self.name, *map(str, key))))
        return regions

    def _occurrences(self, span: str, text: str, item: dict[str, Any]) -> list[int]:
        starts = whole_word_starts(span, text)
        if not starts:
            where = " as a whole word" if span in text else ""
            raise AnswerError(self.name, "span_not_found", f"{span!r} does not occur in the text{where}")
        named = self._named(span, text, item, starts)
        if named is not None:
            return [named]
        if self.occurrence == "all":
            return starts
        if self.occurrence == "unique" and len(starts) > 1:
            raise AnswerError(
                self.name, "span_ambiguous", f"{span!r} occurs {len(starts)} times in the text"
            )
        return starts[:1]

    def _named(self, span: str, text: str, item: dict[str, Any], starts: list[int]) -> int | None:
        """The occurrence the model pointed at (its index or its context), None when it did not."""
        index, context = item.get("occurrence"), item.get("context")
        if isinstance(index, int) and not isinstance(index, bool):
            if not 1 <= index <= len(starts):
                raise AnswerError(self.name, "span_not_found",
                                  f"occurrence {index} of {span!r}: it occurs {len(starts)} time(s)")
            return starts[index - 1]
        if isinstance(context, str) and span in context:
            for found in re.finditer(f"(?={re.escape(context)})", text):
                inside = [s for s in starts if found.start() <= s and s + len(span) <= found.start() + len(context)]
                if inside:
                    return inside[0]
            raise AnswerError(self.name, "span_not_found", f"context {context!r} of {span!r} is not in the text")
        return None

    def from_regions(self, regions: list[dict[str, Any]]) -> Any:
        spans = []
        for region in self._own(regions):
            value = region.get("value", {})
            for label in value.get("labels") or []:
                if value.get("text"):
                    spans.append({"text": value["text"], "label": label})
        return spans


@dataclass
class TextAreaField(ControlField):
    tag: ClassVar[str] = "TextArea"
    region_type: ClassVar[str] = "textarea"

    def _max_length(self) -> str | None:
        return self.attrs.get("maxLength") or self.attrs.get("maxlength")

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        max_length = self._max_length()
        if max_length:
            schema["maxLength"] = int(max_length)
        return schema

    def attr_problems(self) -> list[str]:
        max_length = self._max_length()
        if max_length and not _int_in(max_length, 1, MAX_ATTR_INT):
            return [f"maxLength={_shown(max_length)} must be an integer from 1 to {MAX_ATTR_INT}"]
        return []

    def describe(self) -> str:
        hint = self.attrs.get("placeholder")
        return f'"{self.name}": free text' + (f" ({hint})" if hint else "")

    def is_empty(self, value: Any) -> bool:
        return value is None or (isinstance(value, str) and not value.strip())

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        if not isinstance(value, str):
            raise AnswerError(self.name, "schema", f"expected a string, got {value!r}")
        if not value.strip():
            raise AnswerError(self.name, "empty", "empty text")
        return [self._region({"text": [value.strip()]})]

    def from_regions(self, regions: list[dict[str, Any]]) -> Any:
        for region in self._own(regions):
            texts = region.get("value", {}).get("text") or []
            if texts:
                return "\n".join(texts)
        return None


@dataclass
class RatingField(ControlField):
    tag: ClassVar[str] = "Rating"
    region_type: ClassVar[str] = "rating"

    @property
    def max_rating(self) -> int:
        return int(self.attrs.get("maxRating") or "5")

    def attr_problems(self) -> list[str]:
        raw = self.attrs.get("maxRating") or "5"
        if not _int_in(raw, 1, MAX_RATING):
            return [f"maxRating={_shown(raw)} must be an integer from 1 to {MAX_RATING}"]
        return []

    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": self.max_rating}

    def describe(self) -> str:
        return f'"{self.name}": an integer rating from 1 to {self.max_rating}'

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnswerError(self.name, "schema", f"expected an integer, got {value!r}")
        if not 1 <= value <= self.max_rating:
            raise AnswerError(self.name, "out_of_range", f"{value} is not in 1..{self.max_rating}")
        return [self._region({"rating": value})]

    def from_regions(self, regions: list[dict[str, Any]]) -> Any:
        for region in self._own(regions):
            if "rating" in region.get("value", {}):
                return region["value"]["rating"]
        return None


@dataclass
class NumberField(ControlField):
    tag: ClassVar[str] = "Number"
    region_type: ClassVar[str] = "number"

    def _bound(self, key: str) -> float | None:
        """A numeric attribute (``min``, ``max``, ``step``); ``attr_problems`` vetted it."""
        raw = self.attrs.get(key)
        return float(raw) if raw not in (None, "") else None

    def attr_problems(self) -> list[str]:
        problems = []
        for key in ("min", "max", "step"):
            raw = self.attrs.get(key)
            if raw in (None, ""):
                continue
            try:
                value = float(raw)
            except (TypeError, ValueError):
                problems.append(f"{key}={_shown(raw)} is not a number")
                continue
            if not math.isfinite(value) or abs(value) > MAX_ATTR_NUMBER:
                problems.append(f"{key}={_shown(raw)} must be a finite number within +-{MAX_ATTR_NUMBER:g}")
            elif key == "step" and value <= 0:
                problems.append(f"step={_shown(raw)} must be greater than 0")
        if not problems:
            low, high = self._bound("min"), self._bound("max")
            if low is not None and high is not None and low > high:
                problems.append(f"min={_fmt(low)} is greater than max={_fmt(high)}")
            elif low is not None and high is not None and self.integer and math.ceil(low) > math.floor(high):
                problems.append(f"no integer lies between min={_fmt(low)} and max={_fmt(high)}")
        return problems

    @property
    def integer(self) -> bool:
        step = self._bound("step")
        return step is None or float(step).is_integer()

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer" if self.integer else "number"}
        low, high = self._bound("min"), self._bound("max")
        if low is not None:
            schema["minimum"] = math.ceil(low) if self.integer else low
        if high is not None:
            schema["maximum"] = math.floor(high) if self.integer else high
        return schema

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low, high = self._bound("min"), self._bound("max")
        bounds = ""
        if low is not None or high is not None:
            bounds = f" between {'-inf' if low is None else _fmt(low)} and {'inf' if high is None else _fmt(high)}"
        return f'"{self.name}": {kind}{bounds}'

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AnswerError(self.name, "schema", f"expected a number, got {value!r}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # a JSON integer too large for a float
            raise AnswerError(self.name, "out_of_range", f"{value} is far outside any range") from None
        if not finite:
            raise AnswerError(self.name, "schema", f"expected a finite number, got {value!r}")
        if self.integer and not float(value).is_integer():
            raise AnswerError(self.name, "schema", f"expected an integer, got {value!r}")
        low, high = self._bound("min"), self._bound("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise AnswerError(self.name, "out_of_range", f"{value} is outside [{low}, {high}]")
        return [self._region({"number": int(value) if self.integer else value})]

    def from_regions(self, regions: list[dict[str, Any]]) -> Any:
        for region in self._own(regions):
            if "number" in region.get("value", {}):
                return region["value"]["number"]
        return None


LIST_ITEM = re.compile(r"^\[([^\]\n]+)\] ", re.MULTILINE)


@dataclass
class RankerField(ControlField):
    """Ranking of the items of a ``List`` (e.g. K model outputs), best first.

    The List object is rendered for the prompt as one ``[id] title: body`` line per item, so the
    model answers with item ids. Two shapes, as in Label Studio:

    * a plain ``<Ranker>``: a strict order, a permutation of all the ids, stored as
      ``{"ranker": {<this control's name>: [ids in order]}}`` (checked in the labeling UI: keyed
      by the List's name instead, nothing renders);
    * a ``<Ranker>`` with ``<Bucket>`` children (``buckets``, best first): ties are allowed. The
      answer is a list of groups of ids, best group first, ids in one group tied; group *i* is
      stored in bucket *i*: ``{"ranker": {"rank_1": ["o2"], "rank_2": ["o1", "o3"]}}``.
    """

    tag: ClassVar[str] = "Ranker"
    region_type: ClassVar[str] = "ranker"
    buckets: list[str] = field(default_factory=list)

    def json_schema(self) -> dict[str, Any]:
        if not self.buckets:
            return {"type": "array", "items": {"type": "string"}, "minItems": 2}
        group = {"type": "array", "items": {"type": "string"}, "minItems": 1}
        return {"type": "array", "items": group, "minItems": 1, "maxItems": len(self.buckets)}

    def describe(self) -> str:
        if not self.buckets:
            return (f'"{self.name}": the ids of all the listed items (the [id] before each), best first, '
                    "each exactly once")
        return (
            f'"{self.name}": groups of the ids of all the listed items (the [id] before each), best group first, '
            f'e.g. [["b"], ["a", "c"], ["d"]]; ids in one group are tied (equally good); every id exactly once; '
            f"at most {len(self.buckets)} groups"
        )

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        ids = LIST_ITEM.findall(text)
        groups = self._groups(value)
        ranked = [item for group in groups for item in group]
        unknown = [item for item in ranked if item not in ids]
        if unknown:
            raise AnswerError(self.name, "label_not_in_set", f"unknown item ids {unknown}; the ids are {ids}")
        if len(ranked) != len(set(ranked)) or set(ranked) != set(ids):
            raise AnswerError(self.name, "schema", f"must rank every item exactly once: {ids}, got {value}")
        if not self.buckets:
            return [self._region({"ranker": {self.name: ranked}})]
        return [self._region({"ranker": {bucket: list(group) for bucket, group in zip(self.buckets, groups)}})]

    def _groups(self, value: Any) -> list[list[str]]:
        """The answer as tie groups (a plain ranking: one id per group); ``AnswerError`` on a bad shape."""
        if not self.buckets:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise AnswerError(self.name, "schema", f"expected a list of item ids, got {value!r}")
            return [[item] for item in value]
        if (not isinstance(value, list) or not value
                or not all(isinstance(g, list) and g and all(isinstance(i, str) for i in g) for g in value)):
            raise AnswerError(self.name, "schema", f"expected a list of groups of item ids, got {value!r}")
        if len(value) > len(self.buckets):
            raise AnswerError(self.name, "schema", f"{len(value)} groups, but the config has {len(self.buckets)} ranks")
        return value

    def from_regions(self, regions: list[dict[str, Any]]) -> Any:
        """A plain ranking's order, or a bucketed ranking's non-empty groups in bucket order.

        Items a human left in the List (Label Studio's ``_`` column) are in no group: the answer
        then fails ``to_regions`` ("must rank every item"), so an incomplete ranking is never
        taken for a complete one.
        """
        for region in self._own(regions):
            ranker = (region.get("value") or {}).get("ranker")
            if not isinstance(ranker, dict):
                continue
            if not self.buckets:
                order = ranker.get(self.name)
                if isinstance(order, list):
                    return order
                continue
            groups = [list(ranker[b]) for b in self.buckets if isinstance(ranker.get(b), list) and ranker[b]]
            if groups:
                return groups
        return None


def tie_groups(value: Any) -> list[list[str]]:
    """A ranking answer (plain order or bucket groups) as tie groups, best first."""
    if isinstance(value, list) and value and all(isinstance(g, list) for g in value):
        return [[str(i) for i in g] for g in value]
    return [[str(i)] for i in value or []]


def _int_in(raw: str, low: int, high: int) -> bool:
    text = str(raw).strip()
    return text.isdecimal() and len(text) <= 12 and low <= int(text) <= high


def _shown(raw: Any) -> str:
    text = str(raw)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _region_id(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


FIELD_TYPES: dict[str, type[ControlField]] = {
    cls.tag: cls for cls in (ChoicesField, LabelsField, TextAreaField, RatingField, NumberField, RankerField)
}
