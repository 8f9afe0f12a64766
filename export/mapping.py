"""From a labeling config and a verified human result to training records.

The task type follows from the config's controls: one single-choice ``Choices`` ->
classification, one multi-choice -> multilabel, one ``Rating``/``Number`` -> rating, one ``Ranker``
-> ranking (preference pairs), anything else (spans, slots, several controls) -> extraction.

One prompt: except for rankings, a record's prompt is the backend's own rendering
(``Prompt.messages`` with no few-shot turns: its system prompt and its user message) and its
output is the JSON answer the backend asks the LLM for (``render_answer``), e.g.
``{"intent": "navigational"}``. So a model trained on the export answers the backend's prompt in
the backend's format, and can replace the pre-annotator without a second code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from prelabel.label_config.schema import ConfigError, TaskDataError, required
from prelabel.ml_backend.predictor import Predictor, ProjectContext
from prelabel.ml_backend.prompt import render_answer
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
    texts: dict[str, str] | None = None  # the task's object texts by object name (the prompt's input)


class Mapper:
    def __init__(self, label_config: str, guideline: str | None = None, prompt_style: str = "compact") -> None:
        self.label_config = label_config
        self.prompt_style = prompt_style
        try:
            settings = Settings(prompt_style=prompt_style)  # type: ignore[call-arg]
            self.ctx: ProjectContext = Predictor(settings, llm=None, cache=None).context(  # type: ignore[arg-type]
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

    def answer_spec(self) -> dict[str, Any]:
        """What the manifest says about the answers: evaluation parses them as the backend does
        (``answer_format`` json, the value under ``answer_key`` for one-control tasks) and can
        re-run the backend on the test split (``label_config``, with the manifest's guideline)."""
        if self.task_type == "ranking":
            return {}
        return {"answer_format": "json", "answer_key": self.control.name if self.control is not None else None,
                "schema": self.ctx.schema.json_schema(), "label_config": self.label_config,
                "prompt_style": self.prompt_style}

    def messages(self, texts: dict[str, str]) -> list[dict[str, str]]:
        """The backend's prompt for these texts in this export's prompt style, without few-shot
        turns: what a model trained on the export is served with (``fewshot_k`` 0)."""
        return self.ctx.prompt.messages(texts, [])

    def task_data(self, texts: dict[str, str]) -> dict[str, str]:
        """``texts`` back as Label Studio task data (object name -> its ``$value`` key)."""
        return {self.ctx.schema.objects[name].value_key: text for name, text in texts.items()}

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
        if self.task_type in ("classification", "rating"):
            return Record(tid, body, render_answer(answer), label=str(value), texts=texts)
        if self.task_type == "multilabel":
            return Record(tid, body, render_answer(answer), label=sorted(value), texts=texts)
        if self.task_type == "ranking":
            raw = (task.get("data") or {}).get(self.ctx.schema.objects[self.control.object_name].value_key, [])
            items = {str(i.get("id")): " ".join(str(i.get("body") or i.get("title") or "").split()) for i in raw}
            order = [i for i in value if i in items]
            data = task.get("data") or {}
            prompt = next((str(data[o.value_key]) for name, o in self.ctx.schema.objects.items()
                           if name != self.control.object_name and o.tag in ("Text", "HyperText")
                           and o.value_key in data), body)
            return Record(tid, prompt, items[order[0]] if order else "", pairs=ranking_pairs(order, items))
        return Record(tid, body, render_answer(answer), texts=texts)


def ranking_pairs(order: list[str], items: dict[str, str]) -> list[tuple[str, str]]:
    """All K*(K-1)/2 (chosen, rejected) pairs of a best-first ranking; identical texts skipped."""
    return [(items[a], items[b]) for a, b in combinations(order, 2) if items[a] != items[b]]
