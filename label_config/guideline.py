"""Labeling guidelines: what each label means, how to decide boundary cases, what to do when unsure.

A guideline is a YAML file (shipped ones live in ``templates/`` next to their XML config). It is
written for humans first and rendered into the LLM prompt verbatim, so the model and the
annotators follow the same rules, including the explicit "when unsure" rule.

```yaml
name: search-intent
task: Classify the intent behind a web search query.
labels:                 # per control name, per label value
  intent:
    navigational: {definition: "...", examples: ["facebook login"]}
rules: ["A brand name alone is navigational ..."]
when_unsure: 'Choose "other" when no definition clearly applies.'
instructions: {summary: "one sentence"}          # for free-text / numeric controls
examples: [{data: {text: "..."}, answer: {intent: "navigational"}}]
constraints: [{distinct: [departure_city, arrival_city]}]
list_items: {outputs: {min: 4, max: 9}}        # how many items a task's List must have
```
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prelabel.contract import SpanOccurrence
from prelabel.errors import UserError
from prelabel.label_config.constraints import Constraint
from prelabel.label_config.schema import OutputSchema

TEMPLATES_PACKAGE = "prelabel.label_config"


class GuidelineError(UserError, ValueError):
    """A guideline that cannot be loaded or does not fit its labeling config."""


class LabelDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    definition: str = ""
    examples: list[str] = Field(default_factory=list)


class FewShotExample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: dict[str, Any]
    answer: dict[str, Any]


class ItemCount(BaseModel):
    """Bounds on the number of items of a ``List`` object (e.g. InstructGPT ranks K = 4..9 outputs)."""

    model_config = ConfigDict(extra="forbid")
    min: int = Field(2, ge=1)
    max: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ItemCount:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self

    def describe(self) -> str:
        return f"{self.min} to {self.max}" if self.max is not None else f"at least {self.min}"


class Guideline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "default"
    role: str = (
        "You are a meticulous data annotator. You follow the labeling guideline exactly and "
        "answer only with the requested JSON."
    )
    task: str = "Label the input according to the labeling guideline."
    labels: dict[str, dict[str, LabelDefinition]] = Field(default_factory=dict)
    rules: list[str] = Field(default_factory=list)
    when_unsure: str | None = None
    instructions: dict[str, str] = Field(default_factory=dict)
    examples: list[FewShotExample] = Field(default_factory=list)
    constraints: list[Constraint] = Field(default_factory=list)
    list_items: dict[str, ItemCount] = Field(default_factory=dict)
    span_occurrence: SpanOccurrence | None = Field(
        None, description="all: every mention of a span gets a region (the guideline asks for all); "
                          "first / unique; unset: the backend's PRELABEL_SPAN_OCCURRENCE (first).")

    @property
    def hash(self) -> str:
        """Content hash: any change to the text a model or annotator reads changes it."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def check_against(self, schema: OutputSchema) -> tuple[list[str], list[str]]:
        """Return (errors, warnings) of this guideline against a config's schema."""
        errors: list[str] = []
        warnings: list[str] = []
        names = {control.name: control for control in schema.fields}
        for control_name, definitions in self.labels.items():
            control = names.get(control_name)
            if control is None:
                errors.append(f"labels for unknown control '{control_name}'")
                continue
            for label in definitions:
                if label not in control.label_values:
                    errors.append(f"'{control_name}': label '{label}' is not in the config")
        for control in schema.fields:
            missing = [v for v in control.label_values if v not in self.labels.get(control.name, {})]
            if missing and control.label_values:
                warnings.append(f"'{control.name}': no definition for {', '.join(missing)}")
        for constraint in self.constraints:
            errors.extend(constraint.check_refs(names))
        for object_name in self.list_items:
            obj = schema.objects.get(object_name)
            if obj is None or obj.tag != "List":
                errors.append(f"list_items for '{object_name}', which is not a <List> object of the config")
        for index, example in enumerate(self.examples):
            for problem in _example_problems(example, schema, self):
                errors.append(f"example {index}: {problem}")
        return errors, warnings

    def input_problem(self, data: Any, schema: OutputSchema) -> str | None:
        """Why a task's data breaks this guideline's input rules (``list_items``), or None.

        Checked before any LLM call and on export, so a task outside the practice (a ranking of
        three outputs where the guideline ranks 4 to 9) is left for a human, never labelled.
        """
        for object_name, bounds in self.list_items.items():
            obj = schema.objects.get(object_name)
            data_key = obj.value_key if obj is not None else None
            items = data.get(data_key) if data_key is not None and isinstance(data, dict) else None
            if not isinstance(items, list):
                continue
            if len(items) < bounds.min or (bounds.max is not None and len(items) > bounds.max):
                return f"'{data_key}' has {len(items)} items; this guideline needs {bounds.describe()}"
        return None


def _example_problems(example: FewShotExample, schema: OutputSchema, guideline: Guideline) -> list[str]:
    from prelabel.label_config.answers import check_answer  # local: answers imports schema too

    try:
        texts = schema.object_texts(example.data)
    except ValueError as exc:
        return [str(exc)]
    problem = guideline.input_problem(example.data, schema)
    checked = check_answer(schema, guideline.constraints, example.answer, texts)
    return ([problem] if problem else []) + [str(error) for error in checked.errors.values()]


def shipped_templates() -> list[str]:
    """Names of the guideline templates shipped in ``label_config/templates``."""
    folder = resources.files(TEMPLATES_PACKAGE) / "templates"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def template_path(name: str, suffix: str) -> Path:
    path = Path(str(resources.files(TEMPLATES_PACKAGE) / "templates" / f"{name}{suffix}"))
    if not path.exists():
        raise GuidelineError(f"no shipped template '{name}' (have: {', '.join(shipped_templates())})")
    return path


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # a file name on every filesystem
MAX_INLINE_DEPTH = 16  # the deepest real guideline: labels -> control -> label -> examples -> item


def guideline_ref(raw: Any) -> str | dict | None:
    """A guideline reference from a request, checked before anything uses it.

    A name must be a plain name (see ``named_guideline_path``); an inline guideline a mapping no
    deeper than ``MAX_INLINE_DEPTH`` (hashing, storing or validating a 1,000-deep one would
    overflow the stack). Anything else is a ``GuidelineError``.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None  # Label Studio's "Extra params" left empty
    if isinstance(raw, str):
        _check_name(raw)
        return raw
    if not isinstance(raw, dict):
        raise GuidelineError(f"guideline must be a name or a mapping, not {type(raw).__name__}")
    if _depth_exceeds(raw, MAX_INLINE_DEPTH):
        raise GuidelineError(f"inline guideline is nested deeper than {MAX_INLINE_DEPTH} levels")
    return raw


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when containers nest deeper than ``limit`` (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise GuidelineError(f"guideline name {shown!r} is not a plain name (letters, digits, _ . -; at most 100)")


def named_guideline_path(name: str, guidelines_dir: Path | None = None) -> Path:
    """Path of a guideline known by name: ``<guidelines_dir>/<name>.yaml``, else a shipped one.

    Names are what requests (``/setup`` extra params, ``/predict`` params) may use: they can
    never point outside those folders.
    """
    if not isinstance(name, str):
        raise GuidelineError(f"guideline name must be a string, not {type(name).__name__}")
    _check_name(name)
    if guidelines_dir is not None and (Path(guidelines_dir) / f"{name}.yaml").is_file():
        return Path(guidelines_dir) / f"{name}.yaml"
    return template_path(name, ".yaml")


def load_guideline(ref: str | Path) -> Guideline:
    """Load a guideline by shipped template name or file path (trusted callers: CLI, settings)."""
    path = Path(ref)
    if not path.suffix and not path.exists():
        path = template_path(str(ref), ".yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GuidelineError(f"guideline file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise GuidelineError(f"guideline {path} is not valid YAML: {exc}") from exc
    return parse_guideline(raw, source=str(path))


def parse_guideline(raw: Any, source: str = "<inline>") -> Guideline:
    if not isinstance(raw, dict):
        raise GuidelineError(f"guideline {source} must be a mapping")
    try:
        return Guideline.model_validate(raw)
    except ValidationError as exc:
        raise GuidelineError(f"guideline {source} is invalid: {exc}") from exc


def default_guideline(schema: OutputSchema) -> Guideline:
    """A guideline built from the config alone (label names and their ``hint`` attributes)."""
    labels = {
        control.name: {label.value: LabelDefinition(definition=label.hint or "") for label in control.labels}
        for control in schema.fields
        if control.labels
    }
    return Guideline(labels=labels)
