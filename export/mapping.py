"""From a labeling config and a verified human result to training records.

The task type follows from the config's controls: one single-choice ``Choices`` ->
classification, one multi-choice -> multilabel, one ``Rating``/``Number`` -> rating, one ``Ranker``
-> ranking (preference pairs; tied outputs give none), one ``TextArea`` -> generation
(demonstrations: instruction = the prompt, output = the human's response as plain text), anything
else (spans, slots, several controls) -> extraction.

One prompt: except for rankings and demonstrations, a record's prompt is the backend's own
rendering (``Prompt.messages`` with no few-shot turns: its system prompt and its user message) and
its output is the JSON answer the backend asks the LLM for (``render_answer``), e.g.
``{"intent": "navigational"}``. So a model trained on the export answers the backend's prompt in
the backend's format, and can replace the pre-annotator without a second code path.

Every human answer is checked like an LLM answer (labels in the config's label set, spans in the
text, a ranking that ranks every item) and against the guideline's input rules; one that fails is
not exported (``Mapper.problem`` says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from prelabel.errors import UserError
from prelabel.label_config.answers import answer_from_regions, check_answer
from prelabel.label_config.controls import tie_groups
from prelabel.label_config.schema import ConfigError, TaskDataError
from prelabel.prediction.predictor import ContextBuilder, ProjectContext
from prelabel.prediction.prompt import render_answer
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
    texts: dict[str, str] | None = None  # the task's object texts by object name (the prompt's input)


class Mapper:
    def __init__(self, label_config: str, guideline: str | None = None, prompt_style: str = "compact") -> None:
        self.label_config = label_config
        self.prompt_style = prompt_style
        try:
            settings = Settings(prompt_style=prompt_style)
            self.ctx: ProjectContext = ContextBuilder(settings).context(label_config, guideline)
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

    def answer_spec(self) -> dict[str, Any]:
        """What the manifest says about the answers: evaluation parses them as the backend does
        (``answer_format`` json, the value under ``answer_key`` for one-control tasks) and can
        re-run the backend on the test split (``label_config``, with the manifest's guideline)."""
        if self.task_type in ("ranking", "generation"):
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

    def synthetic_record(self, task_id: int, text: str, label: str) -> Record:
        """A classification record for an augmented input (``export.augment``), in the same prompt
        and answer format as a human-verified one; classification has one control on one object."""
        control = self.control
        if control is None or self.task_type != "classification":  # _augment asks for classification only
            raise RuntimeError(f"synthetic examples are for classification (one Choices control), "
                               f"not {self.task_type} (a bug)")
        texts = {control.object_name: text}
        return Record(task_id, text, render_answer({control.name: label}), label=label, texts=texts)

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
        control = self.control
        if control is None:  # several controls (or none): extraction
            return Record(tid, body, render_answer(answer), texts=texts)
        value = answer[control.name]
        if self.task_type in ("classification", "rating"):
            return Record(tid, body, render_answer(answer), label=str(value), texts=texts)
        if self.task_type == "multilabel":
            return Record(tid, body, render_answer(answer), label=sorted(value), texts=texts)
        if self.task_type == "generation":
            return Record(tid, body, str(value).strip())
        if self.task_type == "ranking":
            raw = data.get(self.ctx.schema.objects[control.object_name].value_key, [])
            items = {str(i.get("id")): " ".join(str(i.get("body") or i.get("title") or "").split()) for i in raw}
            groups = tie_groups(value)
            prompt = next((str(data[o.value_key]) for name, o in self.ctx.schema.objects.items()
                           if name != control.object_name and o.tag in ("Text", "HyperText")
                           and o.value_key in data), body)
            return Record(tid, prompt, items[groups[0][0]], pairs=ranking_pairs(groups, items))
        return Record(tid, body, render_answer(answer), texts=texts)


def ranking_pairs(ranking: list[str] | list[list[str]], items: dict[str, str]) -> list[tuple[str, str]]:
    """(chosen, rejected) pairs of a best-first ranking: every two items of different ranks.

    A strict order of K items gives K*(K-1)/2 pairs; tied items (one group) give none, and
    identical texts are skipped, since neither says which output is better.
    """
    groups = tie_groups(ranking)
    return [(items[a], items[b]) for better, worse in combinations(groups, 2)
            for a in better for b in worse if items[a] != items[b]]
