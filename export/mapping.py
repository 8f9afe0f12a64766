"""From a labeling config and a verified human result to training records.

The task type follows from the config's controls: one single-choice ``Choices`` ->
classification (output = the bare label), one multi-choice -> multilabel (JSON list), one
``Rating``/``Number`` -> rating (the number), one ``Ranker`` -> ranking (preference pairs), anything
else (spans, slots, several controls) -> extraction (output = the JSON answer, exactly the format
the backend asks the LLM for, so a model trained on it can replace the pre-annotator).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from prelabel.label_config.schema import ConfigError, TaskDataError, required
from prelabel.ml_backend.predictor import Predictor, ProjectContext
from prelabel.settings import Settings

TASK_TYPES = ("classification", "multilabel", "rating", "ranking", "extraction")


class MappingError(ValueError):
    """The config cannot be mapped to training records (told before anything is written)."""


@dataclass
class Record:
    task_id: int
    input: str
    output: str
    label: str | list[str] | None = None  # the class (classification / multilabel), for stratification
    pairs: list[tuple[str, str]] | None = None  # (chosen, rejected) for rankings


class Mapper:
    def __init__(self, label_config: str, guideline: str | None = None) -> None:
        try:
            self.ctx: ProjectContext = Predictor(Settings(), llm=None, cache=None).context(  # type: ignore[arg-type]
                label_config, guideline)
        except ConfigError as exc:
            raise MappingError(f"this labeling config cannot be exported: {exc}") from None
        fields = self.ctx.schema.fields
        only = fields[0] if len(fields) == 1 else None
        if only is not None and only.tag == "Choices":
            self.task_type = "multilabel" if getattr(only, "multiple", False) else "classification"
        elif only is not None and only.tag in ("Rating", "Number"):
            self.task_type = "rating"
        elif only is not None and only.tag == "Ranker":
            self.task_type = "ranking"
        else:
            self.task_type = "extraction"
        self.control = only
        self.labels = list(only.label_values) if only is not None and only.tag == "Choices" else []
        self.system = self.ctx.guideline.role.strip()
        self.instruction = self._instruction()

    def _instruction(self) -> str:
        if self.task_type not in ("classification", "multilabel"):
            return self.ctx.prompt.system
        g = self.ctx.guideline
        lines = [g.task.strip(), "", "Labels:"]
        definitions = g.labels.get(self.control.name, {})
        for label in self.control.labels:
            definition = definitions.get(label.value)
            text = (definition.definition if definition else "") or label.hint or ""
            lines.append(f"- {label.value}: {text}" if text else f"- {label.value}")
        lines += [f"- rule: {rule}" for rule in g.rules]
        if g.when_unsure:
            lines.append(f"When unsure: {g.when_unsure}")
        if self.task_type == "multilabel":
            lines.append("Answer with a JSON list of labels.")
        else:
            lines.append("Answer with exactly one label and nothing else.")
        return "\n".join(lines)

    def record(self, task: dict[str, Any], result: list[dict[str, Any]]) -> Record | None:
        """The training record of one verified task; None when the human result is incomplete."""
        try:
            texts = self.ctx.schema.object_texts(task.get("data") or {})
        except TaskDataError:
            return None
        answer: dict[str, Any] = {}
        for control in self.ctx.schema.fields:
            value = control.from_regions([r for r in result if r.get("from_name") == control.name])
            if value is None:
                if required(control):
                    return None
                value = [] if control.tag == "Labels" else ""
            answer[control.name] = value
        body = "\n\n".join(f"## {n}\n{t}" for n, t in texts.items()) if len(texts) > 1 else next(iter(texts.values()))
        tid = int(task.get("id") or 0)
        value = answer[self.control.name] if self.control is not None else None
        if self.task_type == "classification":
            return Record(tid, body, str(value), label=str(value))
        if self.task_type == "multilabel":
            return Record(tid, body, json.dumps(value, ensure_ascii=False), label=sorted(value))
        if self.task_type == "rating":
            return Record(tid, body, str(value), label=str(value))
        if self.task_type == "ranking":
            raw = (task.get("data") or {}).get(self.ctx.schema.objects[self.control.object_name].value_key, [])
            items = {str(i.get("id")): " ".join(str(i.get("body") or i.get("title") or "").split()) for i in raw}
            order = [i for i in value if i in items]
            data = task.get("data") or {}
            prompt = next((str(data[o.value_key]) for name, o in self.ctx.schema.objects.items()
                           if name != self.control.object_name and o.tag in ("Text", "HyperText")
                           and o.value_key in data), body)
            return Record(tid, prompt, items[order[0]] if order else "", pairs=ranking_pairs(order, items))
        return Record(tid, body, json.dumps(answer, ensure_ascii=False, sort_keys=True))


def ranking_pairs(order: list[str], items: dict[str, str]) -> list[tuple[str, str]]:
    """All K*(K-1)/2 (chosen, rejected) pairs of a best-first ranking; identical texts skipped."""
    return [(items[a], items[b]) for a, b in combinations(order, 2) if items[a] != items[b]]
