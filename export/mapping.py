"""From a labeling config and a verified human result to training records.

The task type follows from the config's controls: one single-choice ``Choices`` ->
classification (output = the bare label), one multi-choice -> multilabel (JSON list), one
``Rating``/``Number`` -> rating (the number), one ``Ranker`` -> ranking (preference pairs; tied
outputs give none), one ``TextArea`` -> generation (demonstrations: instruction = the prompt,
output = the human's response as plain text), anything else (spans, slots, several controls) ->
extraction (output = the JSON answer, exactly the format the backend asks the LLM for, so a model
trained on it can replace the pre-annotator).

Every human answer is checked like an LLM answer (labels in the config's label set, spans in the
text, a ranking that ranks every item) and against the guideline's input rules; one that fails is
not exported (``Mapper.problem`` says why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from prelabel.errors import UserError
from prelabel.label_config.answers import answer_from_regions, check_answer
from prelabel.label_config.controls import tie_groups
from prelabel.label_config.schema import ConfigError, TaskDataError
from prelabel.ml_backend.predictor import ContextBuilder, ProjectContext
from prelabel.settings import Settings

TASK_TYPES = ("classification", "multilabel", "rating", "ranking", "generation", "extraction")


class MappingError(UserError, ValueError):
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
            self.ctx: ProjectContext = ContextBuilder(Settings()).context(label_config, guideline)
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
        elif only is not None and only.tag == "TextArea":
            self.task_type = "generation"
        else:
            self.task_type = "extraction"
        self.control = only
        self.labels = list(only.label_values) if only is not None and only.tag == "Choices" else []
        # A demonstration trains the assistant itself: the annotator role is not its system prompt.
        self.system = "" if self.task_type == "generation" else self.ctx.guideline.role.strip()
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
        return self.checked_record(task, result)[0]

    def checked_record(self, task: dict[str, Any], result: list[dict[str, Any]]) -> tuple[Record | None, str]:
        """(the training record, "ok") or (None, why not): ``bad_task_data``, ``incomplete``,
        ``invalid_label`` (a value outside the config: an unknown label, a partial ranking, ...)."""
        data = task.get("data") or {}
        try:
            texts = self.ctx.schema.object_texts(data)
        except TaskDataError:
            return None, "bad_task_data"
        if self.ctx.guideline.input_problem(data, self.ctx.schema):
            return None, "bad_task_data"
        answer = answer_from_regions(self.ctx.schema, result)
        if answer is None:
            return None, "incomplete"
        if check_answer(self.ctx.schema, [], answer, texts).errors:
            return None, "invalid_label"
        return self._record(task, data, texts, answer), "ok"

    def _record(self, task: dict[str, Any], data: dict[str, Any], texts: dict[str, str],
                answer: dict[str, Any]) -> Record:
        body = "\n\n".join(f"## {n}\n{t}" for n, t in texts.items()) if len(texts) > 1 else next(iter(texts.values()))
        tid = int(task.get("id") or 0)
        value = answer[self.control.name] if self.control is not None else None
        if self.task_type == "classification":
            return Record(tid, body, str(value), label=str(value))
        if self.task_type == "multilabel":
            return Record(tid, body, json.dumps(value, ensure_ascii=False), label=sorted(value))
        if self.task_type == "rating":
            return Record(tid, body, str(value), label=str(value))
        if self.task_type == "generation":
            return Record(tid, body, str(value).strip())
        if self.task_type == "ranking":
            raw = data.get(self.ctx.schema.objects[self.control.object_name].value_key, [])
            items = {str(i.get("id")): " ".join(str(i.get("body") or i.get("title") or "").split()) for i in raw}
            groups = tie_groups(value)
            prompt = next((str(data[o.value_key]) for name, o in self.ctx.schema.objects.items()
                           if name != self.control.object_name and o.tag in ("Text", "HyperText")
                           and o.value_key in data), body)
            return Record(tid, prompt, items[groups[0][0]], pairs=ranking_pairs(groups, items))
        return Record(tid, body, json.dumps(answer, ensure_ascii=False, sort_keys=True))


def ranking_pairs(ranking: list[str] | list[list[str]], items: dict[str, str]) -> list[tuple[str, str]]:
    """(chosen, rejected) pairs of a best-first ranking: every two items of different ranks.

    A strict order of K items gives K*(K-1)/2 pairs; tied items (one group) give none, and
    identical texts are skipped, since neither says which output is better.
    """
    groups = tie_groups(ranking)
    return [(items[a], items[b]) for better, worse in combinations(groups, 2)
            for a in better for b in worse if items[a] != items[b]]
