"""Prompt = role + guideline (definitions, examples, boundary rules, when-unsure rule) + strict
output format + few-shot turns + the task's input.

The prompt version id is a hash of everything that shapes the model's instructions (templates,
guideline, answer schema), so every prediction can say exactly which instructions produced it
and a cache entry is never reused across instruction changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

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

# For a model fine-tuned on the project's labels (``prompt_style`` compact): it learned the
# definitions from the labels, so only the role, the task and the answer keys remain. About a fifth
# of the full prompt's tokens, which is what makes training on the backend's own prompt affordable
# on a CPU.
COMPACT_TEMPLATE = """{role}

# Task
{task}

# Output format
Answer with a single JSON object and nothing else. Keys:
{keys}"""

INPUT_TEMPLATE = "# Input\n{body}"


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
    compact: bool = False
    system: str = field(init=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        self.system = render_system(self.schema, self.guideline, compact=self.compact)
        digest = hashlib.sha256(
            "\x00".join(
                [SYSTEM_TEMPLATE, INPUT_TEMPLATE, self.system, self.guideline.hash]
            ).encode()
        )
        self.version = "p-" + digest.hexdigest()[:10]

    def render_input(self, texts: dict[str, str]) -> str:
        if len(texts) == 1:
            body = next(iter(texts.values()))
        else:
            body = "\n\n".join(f"## {name}\n{text}" for name, text in texts.items())
        return INPUT_TEMPLATE.format(body=body)

    def messages(self, texts: dict[str, str], examples: list[Example] = ()) -> list[dict[str, str]]:  # type: ignore[assignment]
        """Chat messages for one task, few-shot examples as prior user/assistant turns."""
        messages = [{"role": "system", "content": self.system}]
        for example in examples:
            messages.append({"role": "user", "content": self.render_input(example.texts)})
            messages.append({"role": "assistant", "content": render_answer(example.answer)})
        messages.append({"role": "user", "content": self.render_input(texts)})
        return messages


def render_answer(answer: dict[str, Any]) -> str:
    """An answer as the model is shown it (few-shot turns) and trained to give it (exported
    records): the JSON object, keys in the schema's order, which is also the order the
    llama.cpp grammar enforces."""
    return json.dumps(answer, ensure_ascii=False)


def render_system(schema: OutputSchema, guideline: Guideline, *, compact: bool = False) -> str:
    labels = ""
    for control in schema.fields:
        definitions = guideline.labels.get(control.name, {})
        if not control.labels:
            continue
        lines = [f'\n## Labels for "{control.name}"']
        for label in control.labels:
            definition = definitions.get(label.value)
            text = (definition.definition if definition else "") or label.hint or ""
            line = f"- {label.value}" + (f": {text}" if text else "")
            if definition and definition.examples:
                line += " Examples: " + "; ".join(json.dumps(e, ensure_ascii=False) for e in definition.examples)
            lines.append(line)
        labels += "\n".join(lines) + "\n"
    rules = ""
    if guideline.rules:
        rules = "\n## Boundary rules\n" + "\n".join(f"- {rule}" for rule in guideline.rules) + "\n"
    unsure = f"\n## When unsure\n{guideline.when_unsure}\n" if guideline.when_unsure else ""
    keys = []
    for control in schema.fields:
        line = f"- {control.describe()}"
        if control.name in guideline.instructions:
            line += f". {guideline.instructions[control.name]}"
        keys.append(line)
    constraint_lines = [c.message for c in guideline.constraints if c.message]
    if constraint_lines:
        keys.append("Rules the answer must satisfy: " + "; ".join(constraint_lines))
    if compact:
        return COMPACT_TEMPLATE.format(role=guideline.role.strip(), task=guideline.task.strip(), keys="\n".join(keys))
    return SYSTEM_TEMPLATE.format(
        role=guideline.role.strip(),
        task=guideline.task.strip(),
        labels=labels,
        rules=rules,
        unsure=unsure,
        keys="\n".join(keys),
        schema=json.dumps(schema.json_schema(), ensure_ascii=False),
    )
