"""Prompt = role + guideline (definitions, examples, boundary rules, when-unsure rule) + strict
output format + few-shot turns + the task's input.

Layout for prefix caching: everything a project's tasks share comes first (the system message,
then the few-shot turns in a fixed order), the task's own parts last (its input, and for a
shortlisted control its candidate labels). vLLM's prefix cache and hosted APIs' cached-input
pricing then apply to the shared part of every call.

Detail levels (``DETAIL``) make the label list shorter when a prompt does not fit the model's
context window: ``full`` (definitions and their examples), ``definitions`` (no per-label
examples), ``compact`` (label names only, once: in the output format's key lines). They are the
same instructions in fewer words, so the prompt version (which names the instructions) does not
change; the level used is recorded in each prediction's provenance and cache key.

The prompt version id is a hash of everything that shapes the model's instructions (templates,
guideline, answer schema), so every prediction can say exactly which instructions produced it
and a cache entry is never reused across instruction changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prelabel.label_config.controls import ControlField
from prelabel.label_config.guideline import Guideline
from prelabel.label_config.schema import OutputSchema

SYSTEM_TEMPLATE = """{role}

# Task
{task}
{labels}{rules}{unsure}
# Output format
Answer with a single JSON object and nothing else. Keys:
{keys}
JSON schema of the answer:
{schema}"""

# For a model fine-tuned on the project's labels (``prompt_style`` compact, not to be confused with
# the ``compact`` detail level, which only shortens the label list to fit a context): it learned the
# definitions from the labels, so the role, the task, the boundary rules, the written "when unsure"
# rule (seed A: "when unsure, choose other" is a rule the model is told, not a silent fallback)
# and the answer keys remain; label definitions and examples go. Short enough to make training on
# the backend's own prompt affordable on a CPU.
COMPACT_TEMPLATE = """{role}

# Task
{task}
{rules}{unsure}
# Output format
Answer with a single JSON object and nothing else. Keys:
{keys}"""

INPUT_TEMPLATE = "# Input\n{body}"
CANDIDATES_TEMPLATE = '\n\n# Candidate labels for "{name}"\n{lines}'
NONE_OF_THESE = "none_of_these"
DETAIL = ("full", "definitions", "compact")


@dataclass(frozen=True)
class Example:
    """A solved input for few-shot prompting: the object texts and the expected answer."""

    texts: dict[str, str]
    answer: dict[str, Any]
    source: str = "guideline"


@dataclass
class Prompt:
    """The rendered instructions of one project, shared by all its tasks."""

    schema: OutputSchema
    guideline: Guideline
    shortlisted: frozenset[str] = frozenset()  # Choices controls whose labels come with each task
    style: str = "full"  # prompt_style: full, or compact (what fine-tuned models are trained on)
    system: str = field(init=False)
    version: str = field(init=False)
    _variants: dict[str, str] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.system = render_system(self.schema, self.guideline, shortlisted=self.shortlisted, style=self.style)
        digest = hashlib.sha256(
            "\x00".join(
                [SYSTEM_TEMPLATE, INPUT_TEMPLATE, self.system, self.guideline.hash]
            ).encode()
        )
        self.version = "p-" + digest.hexdigest()[:10]

    def system_at(self, detail: str) -> str:
        """The system message at a detail level (``DETAIL``), rendered once."""
        if detail == "full":
            return self.system
        if detail not in self._variants:
            self._variants[detail] = render_system(self.schema, self.guideline, detail, self.shortlisted, self.style)
        return self._variants[detail]

    def render_input(self, texts: dict[str, str], candidates: dict[str, list[str]] | None = None,
                     detail: str = "full") -> str:
        if len(texts) == 1:
            body = next(iter(texts.values()))
        else:
            body = "\n\n".join(f"## {name}\n{text}" for name, text in texts.items())
        rendered = INPUT_TEMPLATE.format(body=body)
        for name, labels in (candidates or {}).items():
            control = self.schema.field(name)
            lines = label_lines(control, self.guideline, detail, only=labels)
            lines.append(f"- {NONE_OF_THESE}: none of the candidates above fits the input")
            rendered += CANDIDATES_TEMPLATE.format(name=name, lines="\n".join(lines))
        return rendered

    def messages(
        self, texts: dict[str, str], examples: list[Example] = (),  # type: ignore[assignment]
        *, detail: str = "full", candidates: dict[str, list[str]] | None = None,
    ) -> list[dict[str, str]]:
        """Chat messages for one task, few-shot examples as prior user/assistant turns.

        Examples come in the order given (the caller keeps it stable across tasks, so tasks that
        get the same examples share the whole prefix up to their own input).
        """
        messages = [{"role": "system", "content": self.system_at(detail)}]
        for example in examples:
            messages.append({"role": "user", "content": self.render_input(example.texts)})
            messages.append({"role": "assistant", "content": render_answer(example.answer)})
        messages.append({"role": "user", "content": self.render_input(texts, candidates, detail)})
        return messages


def render_answer(answer: dict[str, Any]) -> str:
    """An answer as the model is shown it (few-shot turns) and trained to give it (exported
    records): the JSON object, keys in the schema's order, which is also the order the
    llama.cpp grammar enforces."""
    return json.dumps(answer, ensure_ascii=False)


def label_lines(
    control: ControlField, guideline: Guideline, detail: str = "full", only: list[str] | None = None
) -> list[str]:
    """One line per label: name, definition and examples, as much as ``detail`` allows."""
    definitions = guideline.labels.get(control.name, {})
    lines = []
    for label in control.labels:
        if only is not None and label.value not in only:
            continue
        definition = definitions.get(label.value)
        text = ((definition.definition if definition else "") or label.hint or "") if detail != "compact" else ""
        line = f"- {label.value}" + (f": {text}" if text else "")
        if detail == "full" and definition and definition.examples:
            line += " Examples: " + "; ".join(json.dumps(e, ensure_ascii=False) for e in definition.examples)
        lines.append(line)
    return lines


def render_system(
    schema: OutputSchema, guideline: Guideline, detail: str = "full", shortlisted: frozenset[str] = frozenset(),
    style: str = "full",
) -> str:
    """The system message; ``style`` compact (``COMPACT_TEMPLATE``) is the same at every detail level."""
    labels = ""
    for control in schema.fields:
        if not control.labels:
            continue
        if control.name in shortlisted:
            labels += (f'\n## Labels for "{control.name}"\nThere are {len(control.labels)} labels; the candidates '
                       f"that may fit are listed after each input. Choose among them, or {NONE_OF_THESE} when none "
                       "fits.\n")
            continue
        if detail == "compact":  # the output format below names the labels once
            continue
        labels += "\n".join([f'\n## Labels for "{control.name}"', *label_lines(control, guideline, detail)]) + "\n"
    rules = ""
    if guideline.rules:
        rules = "\n## Boundary rules\n" + "\n".join(f"- {rule}" for rule in guideline.rules) + "\n"
    unsure = f"\n## When unsure\n{guideline.when_unsure}\n" if guideline.when_unsure else ""
    keys = []
    for control in schema.fields:
        line = (f'- "{control.name}": one of the candidate labels listed after the input, or "{NONE_OF_THESE}"'
                if control.name in shortlisted else f"- {control.describe()}")
        if control.name in guideline.instructions:
            line += f". {guideline.instructions[control.name]}"
        keys.append(line)
    constraint_lines = [c.message for c in guideline.constraints if c.message]
    if constraint_lines:
        keys.append("Rules the answer must satisfy: " + "; ".join(constraint_lines))
    if style == "compact":
        return COMPACT_TEMPLATE.format(role=guideline.role.strip(), task=guideline.task.strip(), rules=rules,
                                       unsure=unsure, keys="\n".join(keys))
    return SYSTEM_TEMPLATE.format(
        role=guideline.role.strip(),
        task=guideline.task.strip(),
        labels=labels,
        rules=rules,
        unsure=unsure,
        keys="\n".join(keys),
        schema=json.dumps(_schema_text(schema, detail, shortlisted), ensure_ascii=False),
    )


def _schema_text(schema: OutputSchema, detail: str, shortlisted: frozenset[str]) -> dict[str, Any]:
    """The answer schema shown in the prompt; ``compact`` leaves out the label enums (the key lines
    list them already, and the server's grammar enforces them)."""
    shown = answer_schema(schema, {name: None for name in shortlisted})
    return _without_enums(shown) if detail == "compact" else shown


def _without_enums(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_enums(v) for k, v in node.items() if k != "enum"}
    if isinstance(node, list):
        return [_without_enums(v) for v in node]
    return node


def answer_schema(schema: OutputSchema, candidates: Mapping[str, list[str] | None] | None = None) -> dict[str, Any]:
    """The answer's JSON schema; a shortlisted control's enum is its candidates + ``NONE_OF_THESE``
    (``None``: any string, for the shared system message that names no candidates)."""
    result = schema.json_schema()
    for name, labels in (candidates or {}).items():
        control = schema.field(name)
        enum: dict[str, Any] = {"type": "string"}
        if labels is not None:
            enum["enum"] = [*labels, NONE_OF_THESE]
        multiple = getattr(control, "multiple", False)
        result["properties"][name] = {"type": "array", "items": enum, "uniqueItems": True, "minItems": 1} \
            if multiple else enum
    return result
