"""Label Studio labeling config -> the JSON answer schema an LLM must fill.

Parsing is label-studio-sdk's ``LabelInterface``; this module decides which controls we can fill
from text, builds one handler per control (see ``controls``), and reports the rest once, clearly,
instead of guessing at them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from label_studio_sdk.label_interface import LabelInterface
from lxml import etree

from prelabel.errors import ConfigError, PrelabelError
from prelabel.label_config.controls import (
    FIELD_TYPES,
    ChoicesField,
    ControlField,
    LabelInfo,
    LabelsField,
    RankerField,
    SpanOccurrence,
)
from prelabel.lru import Once

log = logging.getLogger(__name__)

# Object tags whose data is text we can put in a prompt.
TEXT_OBJECTS = {"Text", "HyperText", "Paragraphs"}
# Controls that carry offsets need a plain Text object (HyperText spans need XPath ranges).
SPAN_OBJECTS = {"Text"}
LIST_OBJECTS = {"List"}
# A <TextArea> with this name is the annotator's instruction box for interactive pre-annotation
# (the convention of Label Studio's own LLM backend): input read from the labeling screen's
# context, never an answer the model fills.
PROMPT_CONTROL = "prompt"
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class TaskDataError(PrelabelError, ValueError):
    """A task lacks (or has unusable) data for an object of the config."""


@dataclass(frozen=True)
class Unsupported:
    name: str
    tag: str
    reason: str


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    tag: str
    value_key: str


@dataclass
class OutputSchema:
    config: str
    config_hash: str
    fields: list[ControlField]
    objects: dict[str, ObjectInfo]
    unsupported: list[Unsupported] = field(default_factory=list)
    interface: LabelInterface | None = field(default=None, repr=False)
    prompt_control: str | None = None  # the annotator's instruction TextArea (see PROMPT_CONTROL)

    def field(self, name: str) -> ControlField:
        for control in self.fields:
            if control.name == name:
                return control
        raise KeyError(name)

    def json_schema(self) -> dict[str, Any]:
        """The whole answer: one key per fillable control, all required."""
        return {
            "type": "object",
            "properties": {control.name: control.json_schema() for control in self.fields},
            "required": [control.name for control in self.fields],
            "additionalProperties": False,
        }

    def object_texts(self, data: Any) -> dict[str, str]:
        """The text of every object the fillable controls point at, from a task's data (anything
        else than an object is a ``TaskDataError``)."""
        if not isinstance(data, dict):
            raise TaskDataError("task 'data' must be an object")
        texts: dict[str, str] = {}
        for name in dict.fromkeys(control.object_name for control in self.fields):
            obj = self.objects[name]
            if obj.value_key not in data:
                raise TaskDataError(f"task data has no '{obj.value_key}' (needed by <{obj.tag} name=\"{name}\">)")
            texts[name] = _as_text(obj, data[obj.value_key])
        return texts


def _as_text(obj: ObjectInfo, raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if obj.tag == "Paragraphs" and isinstance(raw, list):
        lines = []
        for item in raw:
            if not isinstance(item, dict):
                raise TaskDataError(f"'{obj.value_key}' items must be objects")
            speaker = item.get("author") or item.get("speaker") or ""
            lines.append(f"{speaker}: {item.get('text', '')}" if speaker else str(item.get("text", "")))
        return "\n".join(lines)
    if obj.tag == "List" and isinstance(raw, list):
        return _list_text(obj, raw)
    raise TaskDataError(f"'{obj.value_key}' must be a string, got {type(raw).__name__}")


def _list_text(obj: ObjectInfo, items: list[Any]) -> str:
    """A List's items as ``[id] title: body`` lines (the ids a Ranker answer refers to)."""
    lines, seen = [], set()
    for item in items:
        if not isinstance(item, dict) or not str(item.get("id", "")).strip():
            raise TaskDataError(f"'{obj.value_key}' items must be objects with an 'id'")
        item_id = str(item["id"])
        if item_id in seen or "]" in item_id or "\n" in item_id:
            raise TaskDataError(f"'{obj.value_key}' item ids must be unique, without ']' or newlines: {item_id!r}")
        seen.add(item_id)
        title, body = (" ".join(str(item.get(key) or "").split()) for key in ("title", "body"))
        lines.append(f"[{item_id}] " + ": ".join(part for part in (title, body) if part))
    if len(lines) < 2:
        raise TaskDataError(f"'{obj.value_key}' needs at least two items to rank")
    return "\n".join(lines)


def config_hash(config: str) -> str:
    return hashlib.sha256(config.strip().encode()).hexdigest()[:16]


def build_schema(config: str, occurrence: SpanOccurrence = "first") -> OutputSchema:
    """Parse ``config`` and build its answer schema; raise ``ConfigError`` when nothing is fillable."""
    if not isinstance(config, str) or not config.strip():
        raise ConfigError("empty labeling config")
    if _DTD.search(config):  # entity expansion, external entities: a labeling config never needs them
        raise ConfigError("a labeling config may not declare a DTD or entities (<!DOCTYPE>, <!ENTITY>)")
    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises assorted XML/validation errors
        raise ConfigError(f"invalid labeling config: {exc}") from exc

    objects: dict[str, ObjectInfo] = {}
    for obj in interface.objects:
        if obj.value_name:
            objects[obj.name] = ObjectInfo(obj.name, obj.tag, obj.value_name)

    fields: list[ControlField] = []
    unsupported: list[Unsupported] = []
    prompt_control = None
    for control in interface.controls:
        if control.tag == "TextArea" and control.name == PROMPT_CONTROL:
            prompt_control = control.name
            continue
        problem = _unsupported_reason(control, objects)
        if problem:
            unsupported.append(Unsupported(control.name, control.tag, problem))
            continue
        field_ = _make_field(control, objects[control.to_name[0]], occurrence, config)
        problems = field_.attr_problems()
        if problems:
            raise ConfigError(f"<{field_.tag} name={_shown(field_.name)}>: " + "; ".join(problems))
        fields.append(field_)

    if not fields:
        detail = "; ".join(f"<{u.tag} name=\"{u.name}\">: {u.reason}" for u in unsupported)
        raise ConfigError("no control in this config can be pre-annotated from text"
                          + (f" ({detail})" if detail else ""))
    schema = OutputSchema(config, config_hash(config), fields, objects, unsupported, interface,
                          prompt_control)
    try:  # what every LLM request will carry: it must be strict JSON, found out here, not per task
        json.dumps(schema.json_schema(), allow_nan=False)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the answer schema of this config is not valid JSON: {exc}") from None
    return schema


def _shown(name: str) -> str:
    return repr(name if len(name) <= 60 else name[:60] + "...")


def _unsupported_reason(control: Any, objects: dict[str, ObjectInfo]) -> str | None:
    if control.tag not in FIELD_TYPES:
        return f"control tag <{control.tag}> is not supported"
    to_names = control.to_name or []
    if len(to_names) != 1:
        return "controls pointing at several objects are not supported"
    obj = objects.get(to_names[0])
    if obj is None:
        return f"toName '{to_names[0]}' is not an object with a $value"
    allowed = SPAN_OBJECTS if control.tag == "Labels" else LIST_OBJECTS if control.tag == "Ranker" else TEXT_OBJECTS
    if obj.tag not in allowed:
        return f"<{control.tag}> on <{obj.tag}> is not supported (needs {'/'.join(sorted(allowed))})"
    if control.tag in ("Choices", "Labels") and not control.labels:
        return "no labels defined"
    return None


def _make_field(control: Any, obj: ObjectInfo, occurrence: SpanOccurrence, config: str) -> ControlField:
    label_tags = control.labels_attrs or {}
    labels = [
        LabelInfo(value, label_tags[value].attr.get("hint") if value in label_tags else None)
        for value in control.labels or []
    ]
    common = dict(name=control.name, to_name=obj.name, object_name=obj.name,
                  attrs=dict(control.attr), labels=labels)
    if control.tag == "Choices":
        return ChoicesField(**common, multiple=control.attr.get("choice") == "multiple")
    if control.tag == "Labels":
        return LabelsField(**common, occurrence=occurrence)
    if control.tag == "Ranker":
        return RankerField(**common, buckets=_ranker_buckets(config, control.name))
    return FIELD_TYPES[control.tag](**common)


def _ranker_buckets(config: str, name: str) -> list[str]:
    """The ``<Bucket name>`` children of the Ranker called ``name``, in config order (best first).

    label-studio-sdk does not expose them; the config was already parsed by it (with lxml), so it
    is XML. Entities are not expanded and nothing is fetched: configs come from requests.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    for element in etree.fromstring(config.encode("utf-8"), parser).iter("Ranker"):
        if element.get("name") == name:
            return [bucket.get("name", "") for bucket in element.iter("Bucket") if bucket.get("name")]
    return []


def required(control: ControlField) -> bool:
    """LS's own ``required`` attribute; an unrequired free-text control may stay empty."""
    if isinstance(control, ChoicesField):
        return True
    return str(control.attrs.get("required", "false")).lower() == "true"


# Label Studio 1.23's control tags (label-studio-sdk's tag map): metric label values come from
# this closed set, any other tag name counts as "other" (a config can invent any number of them).
LS_CONTROL_TAGS = {tag.lower(): tag for tag in (
    "Choices", "Labels", "Brush", "BrushLabels", "Bitmask", "BitmaskLabels", "MagicWand", "Ellipse",
    "EllipseLabels", "KeyPoint", "KeyPointLabels", "Vector", "VectorLabels", "OcrLabels", "Polygon",
    "PolygonLabels", "Rectangle", "RectangleLabels", "VideoRectangle", "VideoVector", "VideoVectorLabels",
    "Number", "DateTime", "HyperTextLabels", "Pairwise", "ParagraphLabels", "Ranker", "Rating", "Relations",
    "Taxonomy", "TextArea", "TimeSeriesLabels", "TimelineLabels", "ChatMessage", "ReactCode",
)}
_REPORTED = Once(1024)


def metric_tag(tag: str) -> str:
    """``tag`` as a metric label value: a Label Studio control tag, else ``other`` (logged once)."""
    known = LS_CONTROL_TAGS.get(tag.lower())
    if known is None and _REPORTED.first(("tag", tag)):
        log.warning("unknown control tag <%s> (counted as 'other')", tag[:60])
    return known or "other"


def unsupported_once(schema: OutputSchema) -> list[Unsupported]:
    """Log the skipped controls of a config once (per recent config); return them every time."""
    if schema.unsupported and _REPORTED.first(schema.config_hash):
        for item in schema.unsupported:
            log.warning("skipping control <%s name=%r>: %s", item.tag[:60], item.name[:60], item.reason[:200])
    return schema.unsupported


__all__ = [
    "ConfigError",
    "LabelsField",
    "ObjectInfo",
    "OutputSchema",
    "TaskDataError",
    "Unsupported",
    "build_schema",
    "config_hash",
    "metric_tag",
    "required",
    "unsupported_once",
]
